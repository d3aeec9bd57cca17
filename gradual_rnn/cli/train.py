"""`python -m gradual_rnn train` (also `python ptb_word_lm.py`): trains the PTB word language model of
Zaremba et al. or of Gradual Learning (Aharoni et al. 2017).

    python ptb_word_lm.py --model=large --gradual
    python ptb_word_lm.py --model=deep_gl_lad --data_path=/data/ptb --save_path=runs/deep
    python ptb_word_lm.py --model=small --set=num_layers=3 --set=keep_output=0.5
    python ptb_word_lm.py --model=gl --set=hidden_size=64 --layer_epochs=1 --max_epochs=1 --smoke_test

Running the same command again with the same --save_path resumes from the last checkpoint.
Exit codes: 0 done, 1 an error (one line on stderr), 3 interrupted by SIGTERM/SIGINT after saving a
checkpoint (run the same command again to resume). Flags, the config and the data are checked
before TensorFlow loads.
"""
import dataclasses
import json
import os

from absl import flags, logging

from gradual_rnn import configs
from gradual_rnn.cli import common
from gradual_rnn.data import ptb, sources

SMOKE_TEST_TOKENS = {"train": 20000, "valid": 4000, "test": 2000}


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    define = dict(flag_values=values)
    flags.DEFINE_string("model", "small", f"Config name: one of {', '.join(configs.CONFIGS)}.", **define)
    flags.DEFINE_enum("dataset", "ptb", list(sources.DATASETS), "The corpus a run without --data_path or "
                      "--train_file reads: from $PTB_DATA_DIR (ptb), the cache, or a download.", **define)
    flags.DEFINE_string("data_path", None, "A corpus folder: ptb.{train,valid,test}.txt, "
                        "wiki.{train,valid,test}.tokens or {train,valid,test}.txt (else --dataset's "
                        "variable, cache or download).", **define)
    for split in ("train", "valid", "test"):
        flags.DEFINE_string(f"{split}_file", None, f"The {split} split as one text file (give all "
                            f"three instead of --data_path).", **define)
    flags.DEFINE_string("save_path", None, "The run folder: checkpoints, TensorBoard logs, the log and "
                        "the results (default: runs/<model>[_gradual]). The same path resumes a run.", **define)
    flags.DEFINE_boolean("gradual", None, "Gradual learning: one phase per layer. --nogradual turns it "
                         "off for the paper configs. Default: the config's own choice.", **define)
    flags.DEFINE_enum("rnn_mode", None, list(configs.RNN_MODES), "LSTM kernel: auto (cuDNN-eligible "
                      "keras.layers.LSTM on a GPU when no state mask), cudnn, basic, or block (the "
                      "tutorial's name for the same math as basic).", **define)
    flags.DEFINE_integer("seed", None, "Seed of initialisation and dropout (default: the config's).", **define)
    flags.DEFINE_integer("max_epochs", None, "Epochs of the last phase (the whole run without --gradual).",
                         **define)
    flags.DEFINE_integer("layer_epochs", None, "Epochs of every earlier gradual phase.", **define)
    flags.DEFINE_boolean("jit", False, "Compile the train and eval steps with XLA.", **define)
    flags.DEFINE_boolean("use_fp16", False, "Mixed precision with float16 products and dynamic loss "
                         "scaling (for GPUs; slow on CPUs without float16 units). Same as "
                         "--set=precision=mixed_float16.", **define)
    flags.DEFINE_boolean("use_bf16", False, "Mixed precision with bfloat16 products (fast on CPUs with "
                         "AVX512_BF16 or AMX, and on recent GPUs). Same as --set=precision=mixed_bfloat16.",
                         **define)
    flags.DEFINE_integer("num_gpus", 0, "Train on this many GPUs of this host with MirroredStrategy "
                         "(> 1). Several hosts: set TF_CONFIG on each (MultiWorkerMirroredStrategy).", **define)
    flags.DEFINE_multi_string("set", [], "Override a config field: --set=name=value (repeatable). "
                              "Keep tables take JSON rows or one number for every entry.", **define)
    flags.DEFINE_boolean("map_unknown_to_unk", False, "Map valid/test words missing from the vocabulary "
                         "to <unk> (default: drop them, as the references do, and log the count).", **define)
    flags.DEFINE_boolean("download", True, "Download PTB when no local copy is found.", **define)
    flags.DEFINE_integer("checkpoint_every_windows", 500, "Also checkpoint every N training windows "
                         "(0: only at epoch ends).", **define)
    flags.DEFINE_boolean("describe_data", False, "Print the corpus statistics and stop.", **define)
    flags.DEFINE_boolean("restart_from_scratch", False, "When --save_path holds checkpoints and none "
                         "can be used, start the run over (they are kept in checkpoints/unreadable/) "
                         "instead of stopping.", **define)
    flags.DEFINE_boolean("smoke_test", False, "Read only the first 20,000 training, 4,000 validation "
                         "and 2,000 test tokens: a run of seconds that exercises every part (marked in "
                         "the log and the results; its numbers are not comparable with full runs).", **define)
    flags.DEFINE_float("progress_every_seconds", 30.0, "Log a progress line (windows, elapsed, ETAs, "
                       "perplexity, speed) this often.", **define)
    flags.DEFINE_integer("summary_every_windows", 100, "Write per-window TensorBoard scalars (cost, "
                         "gradient norm, learning rate, words/sec) every N windows.", **define)
    flags.DEFINE_integer("windows_per_call", 0, "Training windows per compiled call: 0 chooses (about "
                         "0.3 s of work a call), 1 runs one window a call. Every value gives the same "
                         "numbers.", **define)
    flags.DEFINE_integer("collective_timeout_seconds", 1800, "Several workers (TF_CONFIG): a collective "
                         "that waits longer than this for a lost peer fails the run instead of hanging.",
                         **define)
    flags.DEFINE_boolean("force_precision", False, "Run --use_bf16/--use_fp16 even on hardware without "
                         "native support for that type (several times slower than float32).", **define)
    flags.DEFINE_boolean("deterministic", False, "Bit-identical reruns on CPU with the same seed "
                         "(deterministic TensorFlow kernels; somewhat slower).", **define)
    return values


def build_config(values: flags.FlagValues, corpus_vocab_size=None) -> configs.Config:
    """The config named by --model with every command-line override applied; the vocabulary size
    comes from the corpus unless --set gives it."""
    assignments = common.assignments(values.set)
    for name in ("gradual", "rnn_mode", "seed", "max_epochs", "layer_epochs"):
        if values[name].value is not None:
            assignments[name] = str(values[name].value)
    if values.use_fp16 and values.use_bf16:
        raise configs.ConfigError("--use_fp16 and --use_bf16 exclude each other; pick one precision.")
    for flag, precision in (("use_fp16", "mixed_float16"), ("use_bf16", "mixed_bfloat16")):
        if values[flag].value:
            if assignments.get("precision", precision) != precision:
                raise configs.ConfigError(f"--{flag} asks for precision={precision} but --set asks for "
                                          f"precision={assignments['precision']}.")
            assignments["precision"] = precision
    if corpus_vocab_size is not None and "vocab_size" not in assignments:
        assignments["vocab_size"] = str(corpus_vocab_size)
    return configs.override(configs.get_config(values.model), assignments)


def default_save_path(config: configs.Config, smoke_test: bool) -> str:
    suffix = ("_gradual" if config.gradual else "") + ("_smoke_test" if smoke_test else "")
    return os.path.join("runs", config.name + suffix)


def check_flags(values: flags.FlagValues) -> None:
    """Range checks of the flags that have a meaningful range."""
    checks = [("num_gpus", values.num_gpus >= 0, "0 or more"),
              ("progress_every_seconds", values.progress_every_seconds > 0, "positive"),
              ("summary_every_windows", values.summary_every_windows >= 1, "at least 1"),
              ("collective_timeout_seconds", values.collective_timeout_seconds >= 1, "at least 1"),
              ("windows_per_call", values.windows_per_call >= 0, "0 (choose) or more"),
              ("checkpoint_every_windows", values.checkpoint_every_windows >= 0, "0 (epoch ends only) or more")]
    for name, holds, expected in checks:
        if not holds:
            raise configs.ConfigError(f"--{name} must be {expected}, got {values[name].value}.")


def _smoke_test(corpus: ptb.Corpus) -> ptb.Corpus:
    limits = SMOKE_TEST_TOKENS
    return dataclasses.replace(corpus, train=corpus.train[:limits["train"]], valid=corpus.valid[:limits["valid"]],
                               test=corpus.test[:limits["test"]])


def _check_devices(values: flags.FlagValues, config: configs.Config) -> None:
    """Refuses --num_gpus beyond the GPUs present, and low precision without native support."""
    import tensorflow as tf
    from gradual_rnn import hardware

    found = len(tf.config.list_physical_devices("GPU"))
    if values.num_gpus > found:
        raise configs.ConfigError(f"--num_gpus={values.num_gpus} but TensorFlow finds {found} GPU(s) on "
                                  f"this host; pass --num_gpus={found} or less (0: no distribution).")
    warning = hardware.check_precision(config.precision, values.force_precision)
    if warning:
        logging.warning("%s", warning)


def main(arguments, values: flags.FlagValues) -> None:
    common.no_positional_arguments(arguments)
    check_flags(values)
    config = build_config(values)  # the flags and the config are checked before the data is read
    save_path = values.save_path or default_save_path(config, values.smoke_test)
    if os.path.exists(save_path) and not os.path.isdir(save_path):
        raise configs.ConfigError(f"--save_path {os.path.abspath(save_path)} exists and is not a directory.")
    files = sources.resolve_corpus_files(values.data_path, values.dataset, download=values.download,
                                         train_file=values.train_file, valid_file=values.valid_file,
                                         test_file=values.test_file)
    corpus = ptb.load_corpus_files(files, map_unknown_to_unk=values.map_unknown_to_unk)
    data_dir = files.directory or os.path.dirname(files.paths["train"])
    logging.info("Corpus from %s: %s", files.describe(), ptb.describe(corpus))
    if values.describe_data:
        print(ptb.describe(corpus))
        return
    config = build_config(values, corpus.vocab_size)
    if values.smoke_test:
        corpus = _smoke_test(corpus)
    _check_devices(values, config)
    from gradual_rnn.train import context, distribute, loop  # TensorFlow loads here

    logging.get_absl_handler().addFilter(loop.OwnLines())
    # Created before any other TensorFlow op runs (MultiWorkerMirroredStrategy needs that).
    strategy = distribute.make_strategy(values.num_gpus, timeout_seconds=values.collective_timeout_seconds)
    options = context.RunOptions(
        data_dir=data_dir, save_path=save_path, jit_compile=values.jit,
        checkpoint_every_windows=values.checkpoint_every_windows,
        progress_every_seconds=values.progress_every_seconds, summary_every_windows=values.summary_every_windows,
        windows_per_call=values.windows_per_call, deterministic=values.deterministic,
        restart_from_scratch=values.restart_from_scratch, map_unknown_to_unk=values.map_unknown_to_unk,
        smoke_test=SMOKE_TEST_TOKENS if values.smoke_test else None)
    logging.info("Config %s:\n%s", config.name, config.to_json())
    results = loop.train(config, options, corpus, strategy)
    print(json.dumps({key: value for key, value in results.items() if key != "rows"}, indent=2))


class PeerLost(RuntimeError):
    """A collective of several workers waited too long for a lost peer."""


def expected_errors():
    from gradual_rnn.train.run_folder import RunFolderError

    errors = [ptb.DataError, RunFolderError]
    if common.loaded("gradual_rnn.train.context"):
        from gradual_rnn.train import context

        errors += [context.TrainingDiverged, context.Interrupted, PeerLost, MemoryError]
    errors.append(OSError)  # e.g. a full disk: the message names the file
    return tuple(errors)


def _translated(main_function):
    """Turns TensorFlow's lost-peer and out-of-memory errors into errors with one readable line."""

    def run(arguments, values):
        try:
            main_function(arguments, values)
        except Exception as error:  # noqa: BLE001 (only TensorFlow's errors are translated)
            if not common.loaded("tensorflow"):
                raise
            import tensorflow as tf

            if isinstance(error, (tf.errors.DeadlineExceededError, tf.errors.UnavailableError)):
                raise PeerLost(f"a collective waited more than --collective_timeout_seconds="
                               f"{values.collective_timeout_seconds} for another worker, or lost it "
                               f"({common.first_line(error)}); run the same command on every worker to "
                               f"resume from the newest common checkpoint.") from None
            if isinstance(error, tf.errors.ResourceExhaustedError):
                raise MemoryError(f"the model does not fit in memory ({common.first_line(error)}); "
                                  f"use a smaller batch_size, hidden_size or num_steps.") from None
            raise

    return run


def run_main(argv=None) -> None:
    common.run_command(_translated(main), define_flags, expected_errors, argv)
