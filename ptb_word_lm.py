"""Trains the PTB word language model of Zaremba et al. or of Gradual Learning (Aharoni et al. 2017).

    python ptb_word_lm.py --model=large --gradual
    python ptb_word_lm.py --model=deep_gl_lad --data_path=/data/ptb --save_path=runs/deep
    python ptb_word_lm.py --model=small --set=num_layers=3 --set=keep_output=0.5

Running the same command again with the same --save_path resumes from the last checkpoint.
Exit codes: 0 done, 1 an error (one line on stderr), 3 interrupted by SIGTERM/SIGINT after saving a
checkpoint (run the same command again to resume).

    python ptb_word_lm.py --model=gl --set=hidden_size=64 --layer_epochs=1 --max_epochs=1 --smoke_test
"""
import dataclasses
import json
import os
import sys

from absl import app, flags, logging

# Only TensorFlow-free modules here: flags and the config are checked before TensorFlow loads.
from gradual_rnn import command_line, configs
from gradual_rnn.data import ptb, sources

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "small", f"Config name: one of {', '.join(configs.CONFIGS)}.")
flags.DEFINE_string("data_path", None, "Folder with ptb.{train,valid,test}.txt "
                    "(else $PTB_DATA_DIR, the cache, or a download).")
flags.DEFINE_string("save_path", None, "Folder for checkpoints, TensorBoard logs and results.json "
                    "(default: runs/<model>[_gradual]). The same path resumes a run.")
flags.DEFINE_boolean("gradual", None, "Gradual learning: one phase per layer. --nogradual turns it off "
                     "for the paper configs. Default: the config's own choice.")
flags.DEFINE_enum("rnn_mode", None, list(configs.RNN_MODES), "LSTM kernel: auto (cuDNN-eligible "
                  "keras.layers.LSTM when no state mask), cudnn, or basic.")
flags.DEFINE_integer("seed", None, "Seed of initialisation and dropout (default: the config's).")
flags.DEFINE_integer("max_epochs", None, "Epochs of the last phase (the whole run without --gradual).")
flags.DEFINE_integer("layer_epochs", None, "Epochs of every earlier gradual phase.")
flags.DEFINE_boolean("jit", False, "Compile the train and eval steps with XLA.")
flags.DEFINE_boolean("use_fp16", False, "Mixed precision with float16 products and dynamic loss "
                     "scaling (for GPUs; slow on CPUs without float16 units). Same as "
                     "--set=precision=mixed_float16.")
flags.DEFINE_boolean("use_bf16", False, "Mixed precision with bfloat16 products (fast on CPUs with "
                     "AVX512_BF16 or AMX, and on recent GPUs). Same as --set=precision=mixed_bfloat16.")
flags.DEFINE_integer("num_gpus", 0, "Train on this many GPUs of this host with MirroredStrategy "
                     "(> 1). Several hosts: set TF_CONFIG on each (MultiWorkerMirroredStrategy).")
flags.DEFINE_multi_string("set", [], "Override a config field: --set=name=value (repeatable). "
                          "Keep tables take JSON rows or one number for every entry.")
flags.DEFINE_boolean("map_unknown_to_unk", False, "Map valid/test words missing from the vocabulary "
                     "to <unk> (default: drop them, as the references do, and log the count).")
flags.DEFINE_boolean("download", True, "Download PTB when no local copy is found.")
flags.DEFINE_integer("checkpoint_every_windows", 500, "Also checkpoint every N training windows "
                     "(0: only at epoch ends).")
flags.DEFINE_boolean("describe_data", False, "Print the corpus statistics and stop.")
flags.DEFINE_boolean("restart_from_scratch", False, "When --save_path holds checkpoints and none "
                     "can be read, start the run over (they are kept in checkpoints/unreadable/) "
                     "instead of stopping.")
flags.DEFINE_boolean("smoke_test", False, "Read only the first 20,000 training, 4,000 validation and "
                     "2,000 test tokens: a run of seconds that exercises every part (marked in the log "
                     "and in results.json; its numbers are not comparable with full runs).")
flags.DEFINE_float("progress_every_seconds", 30.0, "Log a progress line (windows, elapsed, ETAs, "
                   "perplexity, speed) this often.")
flags.DEFINE_integer("summary_every_windows", 100, "Write per-window TensorBoard scalars (cost, gradient "
                     "norm, learning rate, words/sec) every N windows.")
flags.DEFINE_integer("windows_per_call", 0, "Training windows per compiled call: 0 chooses (about 0.3 s "
                     "of work a call), 1 runs one window a call. Every value gives the same numbers.")
flags.DEFINE_integer("collective_timeout_seconds", 1800, "Several workers (TF_CONFIG): a collective that "
                     "waits longer than this for a lost peer fails the run instead of hanging.")
flags.DEFINE_boolean("force_precision", False, "Run --use_bf16/--use_fp16 even on hardware without "
                     "native support for that type (several times slower than float32).")
flags.DEFINE_boolean("deterministic", False, "Bit-identical reruns on CPU with the same seed "
                     "(deterministic TensorFlow kernels; somewhat slower).")


def build_config() -> configs.Config:
    """The config named by --model with every command-line override applied."""
    config = configs.get_config(FLAGS.model)
    assignments = command_line.assignments(FLAGS.set)
    for name in ("gradual", "rnn_mode", "seed", "max_epochs", "layer_epochs"):
        value = getattr(FLAGS, name)
        if value is not None:
            assignments[name] = str(value)
    if FLAGS.use_fp16 and FLAGS.use_bf16:
        raise configs.ConfigError("--use_fp16 and --use_bf16 exclude each other; pick one precision.")
    for flag, precision in (("use_fp16", "mixed_float16"), ("use_bf16", "mixed_bfloat16")):
        if getattr(FLAGS, flag):
            if assignments.get("precision", precision) != precision:
                raise configs.ConfigError(f"--{flag} asks for precision={precision} but --set asks for "
                                          f"precision={assignments['precision']}.")
            assignments["precision"] = precision
    config = configs.override(config, assignments)
    return config


def default_save_path(config: configs.Config) -> str:
    suffix = ("_gradual" if config.gradual else "") + ("_smoke_test" if FLAGS.smoke_test else "")
    return os.path.join("runs", config.name + suffix)


SMOKE_TEST_TOKENS = {"train": 20000, "valid": 4000, "test": 2000}
INTERRUPTED_EXIT_CODE = 3


def _expected_error(error: BaseException):
    """(message, exit code) of a failure that deserves one line, not a traceback; else None."""
    expected = [configs.ConfigError, ptb.DataError]
    if "gradual_rnn.train.session" in sys.modules:  # loaded once the run has started
        import tensorflow as tf
        from gradual_rnn.train import checkpoint, session
        if isinstance(error, session.Interrupted):
            return f"Interrupted: {error}", INTERRUPTED_EXIT_CODE
        if isinstance(error, (tf.errors.DeadlineExceededError, tf.errors.UnavailableError)):
            first_line = (error.message or "").strip().splitlines()[0] if error.message else type(error).__name__
            return (f"PeerLost: a collective waited more than --collective_timeout_seconds="
                    f"{FLAGS.collective_timeout_seconds} for another worker, or lost it ({first_line}); run the "
                    f"same command on every worker to resume from the newest common checkpoint."), 1
        expected += [checkpoint.CheckpointError, session.TrainingDiverged]
    if isinstance(error, tuple(expected)):
        return f"{type(error).__name__}: {error}", 1
    return None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments {argv[1:]}; every setting is a --flag=value.")
    try:
        run()
    except Exception as error:  # noqa: BLE001 (sorted into expected and unexpected just below)
        expected = _expected_error(error)
        if expected is None:
            raise
        message, code = expected
        print(message, file=sys.stderr)
        sys.exit(code)


def _smoke_test(corpus: ptb.Corpus) -> ptb.Corpus:
    limits = SMOKE_TEST_TOKENS
    return ptb.Corpus(corpus.train[:limits["train"]], corpus.valid[:limits["valid"]],
                      corpus.test[:limits["test"]], corpus.vocabulary, corpus.unknown_counts)


def _check_devices(config: configs.Config) -> None:
    """Refuses --num_gpus beyond the GPUs present, and low precision without native support."""
    import tensorflow as tf
    from gradual_rnn.nn import precision

    found = len(tf.config.list_physical_devices("GPU"))
    if FLAGS.num_gpus > found:
        raise configs.ConfigError(f"--num_gpus={FLAGS.num_gpus} but TensorFlow finds {found} GPU(s) on "
                                  f"this host; pass --num_gpus={found} or less (0: no distribution).")
    warning = precision.check_precision(config.precision, FLAGS.force_precision)
    if warning:
        logging.warning("%s", warning)


def run():
    if FLAGS.num_gpus < 0:
        raise configs.ConfigError(f"--num_gpus must be 0 or more, got {FLAGS.num_gpus}.")
    if not FLAGS.progress_every_seconds > 0:
        raise configs.ConfigError(f"--progress_every_seconds must be positive, got {FLAGS.progress_every_seconds}.")
    if FLAGS.summary_every_windows < 1 or FLAGS.collective_timeout_seconds < 1:
        raise configs.ConfigError("--summary_every_windows and --collective_timeout_seconds must be at least 1.")
    if FLAGS.windows_per_call < 0:
        raise configs.ConfigError(f"--windows_per_call must be 0 (choose) or more, got {FLAGS.windows_per_call}.")
    config = build_config()
    save_path = FLAGS.save_path or default_save_path(config)
    if os.path.exists(save_path) and not os.path.isdir(save_path):
        raise configs.ConfigError(f"--save_path {os.path.abspath(save_path)} exists and is not a directory.")
    data_dir = sources.resolve_data_dir(FLAGS.data_path, download=FLAGS.download)
    corpus = ptb.load_corpus(data_dir, map_unknown_to_unk=FLAGS.map_unknown_to_unk)
    logging.info("PTB from %s: %s", data_dir, ptb.describe(corpus))
    if FLAGS.describe_data:
        print(ptb.describe(corpus))
        return
    if corpus.vocab_size != config.vocab_size and "vocab_size" not in " ".join(FLAGS.set):
        config = dataclasses.replace(config, vocab_size=corpus.vocab_size)
        logging.info("vocab_size set to the corpus's %d.", corpus.vocab_size)
    if FLAGS.smoke_test:
        corpus = _smoke_test(corpus)
    _check_devices(config)
    from gradual_rnn.train import distribute, loop  # TensorFlow loads here

    logging.get_absl_handler().addFilter(loop.OwnLines())

    # Created before any other TensorFlow op runs (MultiWorkerMirroredStrategy needs that).
    strategy = distribute.make_strategy(FLAGS.num_gpus, timeout_seconds=FLAGS.collective_timeout_seconds)
    options = loop.RunOptions(data_dir=data_dir, save_path=save_path,
                              jit_compile=FLAGS.jit, checkpoint_every_windows=FLAGS.checkpoint_every_windows,
                              progress_every_seconds=FLAGS.progress_every_seconds,
                              summary_every_windows=FLAGS.summary_every_windows,
                              windows_per_call=FLAGS.windows_per_call,
                              deterministic=FLAGS.deterministic, restart_from_scratch=FLAGS.restart_from_scratch,
                              smoke_test=SMOKE_TEST_TOKENS if FLAGS.smoke_test else None)
    logging.info("Config %s:\n%s", config.name, config.to_json())
    results = loop.train(config, options, corpus, strategy)
    print(json.dumps({key: value for key, value in results.items() if key != "rows"}, indent=2))


def run_main():
    app.run(main)


if __name__ == "__main__":
    run_main()
