"""Times the package's real training step (and eval step) and prints one JSON line, like the PyTorch
peer, benchmarks/torch_peer.py (same configs, batches, loss, clipping and optimizer), so the two can
run in interleaved rounds (benchmarks/run_interleaved.sh):

    python benchmarks/ptb_benchmark.py --config small --steps 50 --warmup 5 [--rnn_mode basic] [--jit]
    python benchmarks/ptb_benchmark.py --config test --steps 1000 --warmup 100  # overhead-bound
    python benchmarks/ptb_benchmark.py --config gl8 --steps 100 --warmup 10    # = --config gl --set hidden_size=8
    python benchmarks/ptb_benchmark.py --config test --steps 1024 --warmup 128 --windows_per_call 64
    python benchmarks/ptb_benchmark.py --config test --steps 2000 --warmup 200 --windows_per_call 0

The timed loop calls the step the way the trainer (`train/epoch.py`) does: the windows are slices of
the run's `[windows, batch, steps]` NumPy arrays, the variational masks are drawn when due, and
`--windows_per_call` K decides the call. With K = 1 the step is called as
`step(inputs, targets, (state, masks), key)` and its cost and gradient norm are read back as floats.
With K > 1, `step.many(inputs[K], targets[K], state, keys[K], masks)` trains K consecutive windows in
one graph loop and the K costs and norms are read back once. The trainer falls back to K = 1 where
the step has no `many` (the sampling rule) or masks are drawn for every window, and so does this
loop. A window's time is its call's time divided by K; the steps and warm-up are rounded up to
multiples of K, so every timed call has the same K and the compiled loop is traced once.

`--windows_per_call 0` picks K by the trainer's rule (`train/epoch.py`): the first call takes
FIRST_WINDOWS_PER_CALL windows and compiles; after each later call K becomes the number of windows
that fill CALL_SECONDS at the speed just measured, at most MAX_WINDOWS_PER_CALL. Here only during
the warm-up, which does not adapt on the first call of each new K (the call that traces it) and goes
on, past --warmup if need be, until a call has run at the K it ended with; that K is then fixed
for the timed windows and reported as `windows_per_call`, and the JSON line's `warmup` is the
number of windows the warm-up took.

The CPU model and its vector extensions (from /proc/cpuinfo) go to stderr and into the JSON line:
GEMM and 16-bit speed depend on them (see docs/performance.md).
"""
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.data import sources
from gradual_rnn import hardware as precision_lib
from gradual_rnn.nn import language_model as lm
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import epoch as epoch_lib
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train import steps
from gradual_rnn.train.models import build_model

# Named variants that are not registered configs: the 8-unit GL model (overhead-bound, like `test`).
VARIANTS = {"gl8": ("gl", {"hidden_size": "8"})}
FLAGS = flags.FLAGS
flags.DEFINE_enum("config", "small", [*configs.CONFIGS, *VARIANTS],
                  "Config to time: small, medium, large (the peers'), the tutorial's 1x2-unit `test`, "
                  "gl8 (the GL model with 8 units; `test` and gl8 are bound by per-window overhead), or "
                  "any registered config.")
flags.DEFINE_multi_string("set", [], "Override a config field: --set=name=value (repeatable), as in "
                          "ptb_word_lm.py, e.g. --config=small --set=hidden_size=8.")
flags.DEFINE_integer("steps", 30, "Timed training windows.")
flags.DEFINE_integer("warmup", 5, "Untimed windows first (tracing and compilation).")
flags.DEFINE_integer("windows_per_call", 1, "Training windows per compiled call, as the trainer's "
                     "--windows_per_call: K, or 0 to choose K by the trainer's rule during the warm-up "
                     "and keep it for the timed windows.")
flags.DEFINE_enum("rnn_mode", "auto", list(configs.RNN_MODES), "LSTM path.")
flags.DEFINE_boolean("jit", False, "XLA-compile the step.")
flags.DEFINE_boolean("variational", False, "Variational dropout with a state mask (the GL path) "
                     "at the config's keep probability instead of Zaremba dropout.")
flags.DEFINE_enum("precision", "float32", list(configs.PRECISIONS), "Matrix-product precision.")
flags.DEFINE_enum("data", "ptb", ["ptb", "random"], "PTB windows (PTB_DATA_DIR) or random ids.")
flags.DEFINE_string("data_dir", None, "PTB folder (default: PTB_DATA_DIR or the cache).")
flags.DEFINE_integer("eval_windows", 0, "Also time this many test-style windows (batch 1, one step "
                     "each) of the PTB test split (random ids with --data=random).")
flags.DEFINE_boolean("eval_only", False, "Time only the test-style evaluation (needs --eval_windows).")


def overrides():
    """The --set assignments, as a dict (checked like the CLI's)."""
    assignments = {}
    for item in FLAGS.set:
        name, separator, value = item.partition("=")
        if not separator:
            raise app.UsageError(f"--set expects name=value, got {item!r}.")
        assignments[name.strip()] = value.strip()
    return assignments


def benchmark_config() -> configs.Config:
    name, assignments = VARIANTS.get(FLAGS.config, (FLAGS.config, {}))
    assignments = dict(assignments, rnn_mode=FLAGS.rnn_mode, precision=FLAGS.precision, **overrides())
    config = configs.override(configs.get_config(name), assignments)
    configs.validate(config)
    if not FLAGS.variational:
        return config
    keep = config.keep_output[-1][-1]
    table = configs.uniform_table(config.num_layers, keep)
    return configs.override(config, {"dropout_style": "variational", "keep_output": json.dumps(table),
                                     "keep_state": json.dumps(table)})


def training_windows(config: configs.Config, count: int):
    """The first `count` training windows as the trainer lays them out (`ptb.window_arrays`):
    inputs and targets, `<int32>[count, batch, num_steps]` NumPy arrays."""
    if FLAGS.data == "random":
        ids = np.random.RandomState(0).randint(0, config.vocab_size,
                                               config.batch_size * (count * config.num_steps + 1))
    else:
        ids = ptb.load_corpus(sources.resolve_data_dir(FLAGS.data_dir, download=False)).train
    inputs, targets = ptb.window_arrays(ids.astype(np.int32), config.batch_size, config.num_steps)
    if len(inputs) < count:
        raise app.UsageError(f"--warmup + --steps = {count} windows, but the data has {len(inputs)}.")
    return inputs[:count], targets[:count]


def with_masks(config: configs.Config, plan, carried, window: int):
    """The carried pair with the variational masks due at `window`, as the trainer draws them: at the
    first window, and at every window with mask_refresh='batch'."""
    state, masks = carried
    if masks is None or (config.mask_refresh == "batch" and window > 0):
        masks = steps.sample_masks(config, plan, (1, 0, window), config.batch_size)
    return state, masks


def windows_per_call(config: configs.Config, step) -> int:
    """K for every call: the flag (0: chosen during the warm-up), or 1 where the trainer runs one
    window per call."""
    per_window_masks = config.mask_refresh == "batch" and config.dropout_style == "variational"
    if FLAGS.windows_per_call < 0:
        raise app.UsageError(f"--windows_per_call must be 0 (automatic) or more, got "
                             f"{FLAGS.windows_per_call}.")
    return 1 if step.many is None or per_window_masks else FLAGS.windows_per_call


def windows_needed(per_call: int) -> int:
    """Training windows the run may use: warm-up and timed windows rounded up to K, or with an
    automatic K, room for the warm-up's last two calls and the rounding of the timed windows."""
    if per_call:
        return sum(-(-count // per_call) * per_call for count in (FLAGS.warmup, FLAGS.steps))
    return FLAGS.warmup + FLAGS.steps + 3 * epoch_lib.MAX_WINDOWS_PER_CALL


def call_windows(step, config, plan, inputs, targets, carried, window: int, count: int):
    """Trains windows window .. window + count - 1 in one call, as `train/epoch.py` does ->
    (costs, carried)."""
    carried = with_masks(config, plan, carried, window)
    if count == 1:
        key = tf.constant([1, 0, window], tf.int64)
        state, masks = carried
        cost, state, gradient_norm = step.one(inputs[window], targets[window], state, key, masks)
        float(gradient_norm)
        return [float(cost)], (state, masks)
    keys = tf.constant([[1, 0, index] for index in range(window, window + count)], tf.int64)
    state, masks = carried
    costs, state, norms = step.many(inputs[window:window + count], targets[window:window + count], state,
                                    keys, masks)
    norms.numpy().tolist()
    return costs.numpy().tolist(), (state, masks)


def run_calls(step, config, plan, inputs, targets, carried, first_window: int, count: int, per_call: int):
    """Trains `count` windows from `first_window` in calls of `per_call` -> (seconds of each window,
    its call's time divided by per_call; the last call's costs; carried)."""
    times, costs = [], []
    for window in range(first_window, first_window + count, per_call):
        started = time.perf_counter()
        costs, carried = call_windows(step, config, plan, inputs, targets, carried, window, per_call)
        times.extend([(time.perf_counter() - started) / per_call] * per_call)
    return times, costs, carried


def automatic_warmup(step, config, plan, inputs, targets, carried):
    """The warm-up with K chosen by the trainer's rule -> (windows run, K, seconds, carried).

    Starts at the trainer's first K. A call's time sets the next K, except on the first call at
    each K (it traces); K stops changing once --warmup windows are done, and one more call runs if
    the last K has not been called yet, so the timed calls trace nothing."""
    per_call, traced, window, seconds = epoch_lib.FIRST_WINDOWS_PER_CALL, set(), 0, 0.0
    while window < FLAGS.warmup or per_call not in traced:
        count = per_call
        started = time.perf_counter()
        _, carried = call_windows(step, config, plan, inputs, targets, carried, window, count)
        elapsed = time.perf_counter() - started
        window, seconds = window + count, seconds + elapsed
        if count in traced and window < FLAGS.warmup:
            per_call = epoch_lib.chosen_windows_per_call(elapsed / count)
        traced.add(count)
    return window, per_call, seconds, carried


def time_training(config: configs.Config):
    model = build_model(config)
    optimizer = steps.make_optimizer(config)
    plan = DropoutPlan.for_depth(config, config.num_layers)
    step = steps.make_train_step(model, optimizer, config, plan, config.num_layers, FLAGS.jit)
    per_call = windows_per_call(config, step)
    inputs, targets = training_windows(config, windows_needed(per_call))
    carried = (model.initial_state(config.batch_size), None)
    if per_call:
        warmup = -(-FLAGS.warmup // per_call) * per_call
        warmup_times, _, carried = run_calls(step, config, plan, inputs, targets, carried, 0, warmup,
                                             per_call)
        warmup_seconds = sum(warmup_times)
    else:
        warmup, per_call, warmup_seconds, carried = automatic_warmup(step, config, plan, inputs, targets,
                                                                     carried)
    timed_windows = -(-FLAGS.steps // per_call) * per_call
    timed, costs, _ = run_calls(step, config, plan, inputs, targets, carried, warmup, timed_windows, per_call)
    words = config.batch_size * config.num_steps
    median = float(np.median(timed))
    return model, dict(wps=words * len(timed) / sum(timed), wps_median_step=words / median,
                       step_ms_median=1e3 * median, warmup_s=warmup_seconds,
                       last_loss=costs[-1] / config.num_steps), per_call, timed_windows, warmup


def time_evaluation(model, count: int):
    """The references' test pass (batch 1, one step per window, state carried) over `count` windows:
    the first run includes tracing, the second is timed."""
    if FLAGS.data == "random":
        ids = np.random.RandomState(1).randint(0, model.vocab_size, size=count + 1).astype(np.int32)
    else:
        ids = ptb.load_corpus(sources.resolve_data_dir(FLAGS.data_dir, download=False)).test[:count + 1]
    inputs, targets = ptb.window_arrays(ids, 1, 1)
    evaluate = evaluation.make_eval_step(model, model.num_layers)
    arguments = (tf.constant(inputs), tf.constant(targets), tf.ones(inputs.shape), model.initial_state(1))
    started = time.perf_counter()
    evaluate(*arguments)
    first = time.perf_counter() - started
    started = time.perf_counter()
    nll, tokens, _ = evaluate(*arguments)
    elapsed = time.perf_counter() - started
    return dict(eval_b1_wps=float(tokens) / elapsed, eval_s=elapsed, eval_first_call_s=first,
                eval_windows=int(tokens), nll_per_token=float(nll) / float(tokens))


def cpu_report():
    """(model, vector extensions) of this CPU, also printed to stderr."""
    info = precision_lib.read_cpuinfo()
    extensions = " ".join(precision_lib.vector_extensions(info.flags)) or "unknown"
    print(f"cpu: {info.model}, {os.cpu_count()} logical cores; vector extensions: {extensions}",
          file=sys.stderr, flush=True)
    return info.model, extensions


def precision_native(config: configs.Config):
    """Whether this machine computes the config's precision natively (a warning to stderr if not)."""
    support = precision_lib.hardware_support(config.precision)
    if not support.native:
        print(f"warning: {config.precision} on {support.device}: {support.reason}", file=sys.stderr,
              flush=True)
    return support.native if support.known else None


def call_suffix(per_call: int) -> str:
    """The implementation name's K: none for one window per call, `_k<K>` for a K given by the flag,
    `_kauto` for the trainer's rule (whatever K it picked: rounds stay comparable by name)."""
    if not FLAGS.windows_per_call:
        return "_kauto"
    return "" if per_call == 1 else f"_k{per_call}"


def main(argv):
    del argv
    config = benchmark_config()
    cpu_model, cpu_extensions = cpu_report()
    native = precision_native(config)
    if FLAGS.eval_only:
        if not FLAGS.eval_windows:
            raise app.UsageError("--eval_only needs --eval_windows (e.g. 82429, the PTB test split).")
        model, result, per_call, timed_windows, warmup = build_model(config), {}, 1, 0, 0
    else:
        model, result, per_call, timed_windows, warmup = time_training(config)
    if FLAGS.eval_windows:
        result.update(time_evaluation(model, FLAGS.eval_windows))
    name = "gradual_rnn" + ("_variational" if FLAGS.variational else "") + (
        "" if FLAGS.rnn_mode == "auto" else f"_{FLAGS.rnn_mode}") + ("_xla" if FLAGS.jit else "") + (
        "" if FLAGS.precision == "float32" else "_" + FLAGS.precision.replace("mixed_", "")) + call_suffix(
        per_call) + ("_eval" if FLAGS.eval_only else "")
    output = dict(impl=name, config=FLAGS.config, steps=timed_windows, warmup=warmup, data=FLAGS.data,
                  **({"set": overrides()} if FLAGS.set else {}),
                  words_per_step=config.batch_size * config.num_steps, windows_per_call=per_call,
                  windows_per_call_rule="trainer" if not FLAGS.windows_per_call else "flag",
                  precision_native=native,
                  cudnn_eligible_layers=sum(lm.cudnn_eligible(model, steps.sample_masks(
                      config, DropoutPlan.for_depth(config, config.num_layers), (1, 0, 0), 1))),
                  **{key: round(value, 3) for key, value in result.items()},
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                  host=platform.node(), ncpu=os.cpu_count(), cpu_model=cpu_model,
                  cpu_extensions=cpu_extensions, framework=f"tf {tf.__version__}")
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    app.run(main)
