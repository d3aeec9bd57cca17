"""Where the time of one training step goes, and how much memory the package adds above TensorFlow.

    PTB_DATA_DIR=/path/to/ptb python benchmarks/profile_step.py             # small: 2x200, batch 20, 20 steps
    PTB_DATA_DIR=/path/to/ptb ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/profile_step.py   # as on an AVX2 CPU
    PTB_DATA_DIR=/path/to/ptb python benchmarks/profile_step.py --memory    # peak RSS, fresh processes

Prints markdown (read in docs/performance.md), in this order:

1. **Trace**: the TensorFlow profiler (`tf.profiler.experimental.start/stop`, every kernel recorded)
   over `--trace_windows` windows of the real step, right after 3 warm-up windows; the `.xplane.pb`
   it writes is read back and its kernels summed per kind: kernels per window, op time (summed over
   both compute threads, profiler overhead included), microseconds per kernel, and the share of
   each window's wall time during which neither the executor nor a kernel ran (the host's share).
2. **Parts**: each part of the step compiled alone (`tf.function`) on the step's real shapes and
   weights, forward and backward, timed in interleaved rounds (median per call, the time of an empty
   compiled call taken off): the embedding gather, the input projections `x W + b`, the recurrence
   (`nn.lstm.lstm_recurrence`, its hand-written backward pass included), the fused softmax cost
   (`nn.heads.summed_softmax_cost`), and the gradient norm + clipped SGD update
   (`train.steps.apply_clipped_sgd`). "host" is one window of the trainer's loop around an empty
   compiled step (slice the window's arrays, key, call, reading cost and norm back). The
   full step is timed the way the trainer runs it; what the parts do not explain is "rest".
3. **Matrix products**: each product shape of the step alone, run back to back inside one compiled
   loop: microseconds per product, GFLOP/s, and the products' share of a window at that speed.
4. **Softmax kernels**: the kernel the fused cost runs against TensorFlow's other softmax kernels on
   the same `[tokens x vocab]` logits.

ONEDNN_MAX_CPU_ISA=AVX2 limits oneDNN (TensorFlow's matrix-product library on x86) to the kernels it
would pick on an AVX2-only CPU; TensorFlow's own kernels (elementwise, softmax, copies) are compiled
for plain AVX in the pip wheel and run the same instructions either way.
"""
import collections
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "small", "Config to profile (a registered name).")
flags.DEFINE_integer("steps", 20, "Windows timed per round for the full step and the host loop.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds of every timing; medians are reported.")
flags.DEFINE_integer("calls", 20, "Calls per part per round.")
flags.DEFINE_integer("trace_windows", 20, "Windows of the real step under the profiler.")
flags.DEFINE_list("sections", ["trace", "parts", "products", "softmax"], "Which tables to print "
                  "(products and softmax use the full step's time from parts, when it runs, for their %).")
flags.DEFINE_string("trace_dir", None, "Profiler log folder (default: a temporary one).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Matrix-product precision of the model and of the product table.")
flags.DEFINE_enum("data", "ptb", ["ptb", "random"], "PTB windows (PTB_DATA_DIR) or random ids.")
flags.DEFINE_boolean("memory", False, "Measure peak RSS instead (fresh processes): `import "
                     "tensorflow` alone, the package's stages, and the benchmark at this config.")
flags.DEFINE_boolean("memory_stages", False, "Internal: run the memory stages in this process.")


# ---------------------------------------------------------------------------------------------
# Shared setup

def cpu_line():
    from gradual_rnn import hardware as precision

    info = precision.read_cpuinfo()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "not set (oneDNN uses the best the CPU has)")
    return (f"cpu: {info.model}, {os.cpu_count()} logical cores; vector extensions: "
            f"{' '.join(precision.vector_extensions(info.flags)) or 'unknown'}; ONEDNN_MAX_CPU_ISA: {isa}")


def load_ids(vocab_size: int):
    if FLAGS.data == "random":
        return np.random.RandomState(0).randint(0, vocab_size, 200_000).astype(np.int32)
    from gradual_rnn.data import ptb, sources

    return ptb.load_corpus(sources.resolve_data_dir(None, download=False)).train.astype(np.int32)


def build(config):
    """(model, optimizer, trainer-style step, dropout plan) of `config`, at full depth."""
    from gradual_rnn.phases import DropoutPlan
    from gradual_rnn.train import steps
    from gradual_rnn.train.models import build_model

    model = build_model(config)
    optimizer = steps.make_optimizer(config)
    plan = DropoutPlan.for_depth(config, config.num_layers)
    step = steps.make_train_step(model, optimizer, config, plan, config.num_layers)
    return model, optimizer, step, plan


class Windows:
    """The trainer's loop body at one window per call (`train/epoch.py`): slice the next window of
    the run's NumPy arrays, draw masks when due, call `step.one(inputs, targets, state, key, masks)`,
    read cost and norm back as floats."""

    def __init__(self, config, ids, step, plan, model):
        from gradual_rnn.data import ptb

        self.config, self.step, self.plan, self.index = config, step, plan, 0
        self.inputs, self.targets = ptb.window_arrays(ids, config.batch_size, config.num_steps)
        self.carried = (model.initial_state(config.batch_size), None)

    def window(self, index: int):
        """(inputs, targets) of window `index`, cycling through the split."""
        index %= len(self.inputs)
        return self.inputs[index], self.targets[index]

    def run(self, count: int) -> float:
        """Runs `count` windows; seconds per window."""
        import tensorflow as tf
        from gradual_rnn.train import steps

        started = time.perf_counter()
        for _ in range(count):
            inputs, targets = self.window(self.index)
            state, masks = self.carried
            if masks is None and self.plan.style == "variational":
                masks = steps.sample_masks(self.config, self.plan, (1, 0, self.index),
                                           self.config.batch_size)
            key = tf.constant([1, 0, self.index], tf.int64)
            cost, state, norm = self.step.one(inputs, targets, state, key, masks)
            self.carried = (state, masks)
            float(cost), float(norm)
            self.index += 1
        return (time.perf_counter() - started) / count


def timed_calls(function, arguments, calls: int) -> float:
    """Seconds per call of `function(*arguments)`, its outputs read back as NumPy each time."""
    import tensorflow as tf

    started = time.perf_counter()
    for _ in range(calls):
        tf.nest.map_structure(lambda tensor: tensor.numpy() if hasattr(tensor, "numpy") else tensor,
                              function(*arguments))
    return (time.perf_counter() - started) / calls


# ---------------------------------------------------------------------------------------------
# Parts of the step

def part_functions(config, model, inputs, targets):
    """{name: (compiled function, arguments, times per step)} for the parts of one window."""
    import tensorflow as tf
    from gradual_rnn.nn import lstm
    from gradual_rnn.nn.heads import summed_softmax_cost
    from gradual_rnn.train import steps

    batch, units = config.batch_size, config.hidden_size
    layer = model.lstm_layers[0]
    product_dtype = layer.product_dtype
    embedded = model.embedding(inputs)
    projected, _ = layer._projected(embedded)
    zeros = tf.zeros([batch, units])
    outputs = tf.cast(tf.random.uniform([batch, config.num_steps, units], -0.5, 0.5), product_dtype)

    @tf.function
    def empty(*arguments):
        return tf.constant(0.0)

    @tf.function
    def gather(ids):
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model.embedding(ids))
        return total, tape.gradient(total, model.embedding.embeddings).values

    @tf.function
    def projection(embedded):
        with tf.GradientTape() as tape:
            tape.watch(embedded)
            values, _ = layer._projected(embedded)
            total = tf.reduce_sum(tf.cast(values, tf.float32))
        return tape.gradient(total, [embedded, layer.kernel, layer.bias])

    @tf.function
    def recurrence(projected, cell, hidden):
        with tf.GradientTape() as tape:
            tape.watch([projected, cell, hidden])
            recurrent_kernel = tf.cast(tf.convert_to_tensor(layer.recurrent_kernel), product_dtype)
            values, (last_cell, _) = lstm.lstm_recurrence(projected, cell, hidden, recurrent_kernel)
            total = tf.reduce_sum(tf.cast(values, tf.float32)) + tf.reduce_sum(last_cell)
        return tape.gradient(total, [projected, cell, hidden, layer.recurrent_kernel])

    head = model.head
    softmax_weights = ((model.embedding.embeddings, head.output_bias, True) if config.tied_weights
                       else (head.softmax_w, head.softmax_b, False))

    @tf.function
    def softmax(outputs, targets):
        kernel, bias, transposed = softmax_weights
        with tf.GradientTape() as tape:
            tape.watch(outputs)
            cost = summed_softmax_cost(outputs, tf.cast(tf.convert_to_tensor(kernel), product_dtype),
                                       tf.convert_to_tensor(bias), targets, transposed)
        return cost, tape.gradient(cost, [outputs, kernel, bias])

    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        cost, _ = model.summed_cost(inputs, targets, model.initial_state(batch))
    gradients = tape.gradient(cost, variables)
    still = steps.make_optimizer(config)  # learning rate 0: the same work, the weights stay put
    still.learning_rate.assign(0.0)
    still.build(variables)

    @tf.function
    def update(gradients):
        return steps.apply_clipped_sgd(still, gradients, variables, config.max_grad_norm)

    return {"empty": (empty, (inputs, targets, zeros, zeros), 0),
            "embedding gather": (gather, (inputs,), 1),
            "input projections x W + b": (projection, (embedded,), config.num_layers),
            "recurrence (lstm_recurrence)": (recurrence, (projected, zeros, zeros), config.num_layers),
            "fused softmax cost": (softmax, (outputs, targets), 1),
            "gradient norm + clipped SGD update": (update, (gradients,), 1)}


def profile_parts(config, model, windows, ids):
    import tensorflow as tf

    inputs, targets = (tf.constant(array) for array in windows.window(0))
    functions = part_functions(config, model, inputs, targets)
    host = Windows(config, ids, empty_step(), windows.plan, model)
    for function, arguments, _ in functions.values():
        timed_calls(function, arguments, 2)  # traces
    windows.run(3)
    host.run(3)
    samples = collections.defaultdict(list)
    for _ in range(FLAGS.rounds):
        samples["full step"].append(windows.run(FLAGS.steps))
        samples["host"].append(host.run(FLAGS.steps))
        for name, (function, arguments, _) in functions.items():
            samples[name].append(timed_calls(function, arguments, FLAGS.calls))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    bests = {name: min(values) for name, values in samples.items()}
    empty, best_empty = medians.pop("empty"), bests.pop("empty")
    full, best_full = medians.pop("full step"), bests.pop("full step")
    rows = [("host: slice + empty compiled call + read-back", medians.pop("host"), bests.pop("host"), 1)]
    for name, (_, _, per_step) in functions.items():
        if name != "empty":
            rows.append((name, max(medians[name] - empty, 0.0), max(bests[name] - best_empty, 0.0), per_step))
    explained = sum(seconds * per_step for _, seconds, _, per_step in rows)
    best_explained = sum(best * per_step for _, _, best, per_step in rows)
    print(f"\n## Parts of one window ({config.name}: {config.num_layers}x{config.hidden_size}, batch "
          f"{config.batch_size}, {config.num_steps} steps, {config.precision}; medians of "
          f"{FLAGS.rounds} rounds; an empty compiled call, {1e3 * empty:.3f} ms, taken off each part)\n")
    print("| part | ms per call | calls per window | ms per window | % of the step | best round, ms per window |")
    print("|---|---|---|---|---|---|")
    for name, seconds, best, per_step in rows:
        print(f"| {name} | {1e3 * seconds:.3f} | {per_step} | {1e3 * seconds * per_step:.2f} | "
              f"{100 * seconds * per_step / full:.1f} | {1e3 * best * per_step:.2f} |")
    print(f"| rest: glue the parts leave out (casts, transposes, gradient sums, scheduling) less the "
          f"overlap of parts that run at once in the step | | | "
          f"{1e3 * (full - explained):.2f} | {100 * (full - explained) / full:.1f} | "
          f"{1e3 * (best_full - best_explained):.2f} |")
    print(f"| **full step, as the trainer runs it** | | | **{1e3 * full:.2f}** | 100 | {1e3 * best_full:.2f} |")
    words = config.batch_size * config.num_steps
    print(f"\nfull step: {words / full:,.0f} words/s (spread of the rounds: "
          f"{1e3 * min(samples['full step']):.2f}-{1e3 * max(samples['full step']):.2f} ms)")
    return full


def empty_step():
    """A trainer-interface step whose compiled part does nothing: the host floor of a window."""
    import tensorflow as tf
    from gradual_rnn.train import steps

    def compiled(inputs, targets, state, key, masks):
        return tf.constant(0.0), state, tf.constant(0.0)

    return steps.TrainStep(tf.function(compiled))


# ---------------------------------------------------------------------------------------------
# Matrix products alone

def product_shapes(config):
    """(what, m, k, n, transpose_b, count per window) of every matrix product in one training window."""
    batch, units, steps, vocab = config.batch_size, config.hidden_size, config.num_steps, config.vocab_size
    tokens, layers, gates = batch * steps, config.num_layers, 4 * config.hidden_size
    return [("recurrence forward: h R", batch, units, gates, False, layers * steps),
            ("recurrence backward: dgates R^T", batch, gates, units, True, layers * steps),
            ("recurrent weight gradient (all steps)", units, tokens, gates, False, layers),
            ("input projection x W", tokens, units, gates, False, layers),
            ("input projection backward: dgates W^T", tokens, gates, units, True, layers),
            ("input weight gradient", units, tokens, gates, False, layers),
            ("softmax logits", tokens, units, vocab, False, 1),
            ("softmax backward: d outputs", tokens, vocab, units, True, 1),
            ("softmax weight gradient", units, tokens, vocab, False, 1)]


def product_seconds(m, k, n, transpose_b, dtype, repeats):
    """Seconds per `[m x k] x [k x n]` product, `repeats` of them back to back in one compiled loop."""
    import tensorflow as tf

    left = tf.cast(tf.random.uniform([m, k], -0.1, 0.1), dtype)
    right = tf.cast(tf.random.uniform([n, k] if transpose_b else [k, n], -0.1, 0.1), dtype)

    @tf.function
    def loop(left, right):
        def body(index, total):
            product = tf.matmul(left, right, transpose_b=transpose_b)
            return index + 1, total + tf.cast(product[0, 0], tf.float32)

        return tf.while_loop(lambda index, _: index < repeats, body, (tf.constant(0), tf.constant(0.0)),
                             parallel_iterations=1)[1]

    loop(left, right).numpy()
    best = []
    for _ in range(FLAGS.rounds):
        started = time.perf_counter()
        loop(left, right).numpy()
        best.append(time.perf_counter() - started)
    return statistics.median(best) / repeats


def profile_products(config, full_step):
    from gradual_rnn.nn.base import compute_dtype

    dtype = compute_dtype(config.precision)
    print(f"\n## Matrix products of one window, each alone ({dtype.name}; back to back in one compiled "
          f"loop; median of {FLAGS.rounds} runs)\n")
    print("| product | shape | per window | us each | GFLOP/s | ms per window |")
    print("|---|---|---|---|---|---|")
    total = 0.0
    for what, m, k, n, transpose_b, count in product_shapes(config):
        repeats = max(4, min(400, int(2e8 / (2 * m * k * n))))
        seconds = product_seconds(m, k, n, transpose_b, dtype, repeats)
        total += seconds * count
        shape = f"[{m}x{k}] x [{k}x{n}]" + (" (B transposed)" if transpose_b else "")
        print(f"| {what} | {shape} | {count} | {1e6 * seconds:.1f} | {2 * m * k * n / seconds / 1e9:.1f} | "
              f"{1e3 * seconds * count:.2f} |")
    print(f"\nall products at these speeds: {1e3 * total:.2f} ms per window = "
          f"{100 * total / full_step:.0f}% of the full step ({1e3 * full_step:.2f} ms)")


def kernel_seconds(function, argument, repeats):
    """Seconds per `function(argument)`, `repeats` of them back to back in one compiled loop (each
    made to depend on the last, so they cannot overlap)."""
    import tensorflow as tf

    @tf.function
    def loop(argument):
        def body(index, total):
            value = tf.nest.flatten(function(argument + total))[0]
            return index + 1, total + 0.0 * tf.reshape(value, [-1])[0]

        return tf.while_loop(lambda index, _: index < repeats, body, (tf.constant(0), tf.constant(0.0)),
                             parallel_iterations=1)[1]

    loop(argument).numpy()
    times = []
    for _ in range(FLAGS.rounds):
        started = time.perf_counter()
        loop(argument).numpy()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / repeats


def profile_softmax(config, full_step):
    """The softmax kernel the fused cost uses against TensorFlow's other softmax kernels, on the
    step's `[tokens x vocab]` float32 logits."""
    import tensorflow as tf

    tokens = config.batch_size * config.num_steps
    logits = tf.random.normal([tokens, config.vocab_size])
    labels = tf.constant(np.random.RandomState(0).randint(0, config.vocab_size, tokens), tf.int32)
    kernels = [
        ("SparseSoftmaxCrossEntropyWithLogits (Eigen; what the fused cost runs)",
         lambda x: tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=x, labels=labels)),
        ("tf.nn.softmax (oneDNN's softmax after TensorFlow's rewrite)", tf.nn.softmax),
        ("tf.nn.log_softmax", tf.nn.log_softmax),
        ("tf.reduce_logsumexp over the vocabulary", lambda x: tf.reduce_logsumexp(x, axis=-1)),
        ("one elementwise pass (x + 0), the floor of any kernel here", lambda x: x)]
    print(f"\n## Softmax kernels on the step's logits, alone ([{tokens}x{config.vocab_size}] float32; "
          f"median of {FLAGS.rounds} runs; each includes one elementwise pass of the timing loop)\n")
    print("| kernel | ms | % of the full step |")
    print("|---|---|---|")
    repeats = max(3, min(200, int(2e7 / logits.shape.num_elements())))
    for name, function in kernels:
        seconds = kernel_seconds(function, logits, repeats)
        print(f"| {name} | {1e3 * seconds:.2f} | {100 * seconds / full_step:.1f} |")


# ---------------------------------------------------------------------------------------------
# The profiler's trace of the real step

_KINDS = [("matrix products", ("MatMul", "Einsum")),
          ("softmax + cross-entropy kernel", ("SparseSoftmaxCrossEntropyWithLogits",)),
          ("gather / scatter", ("Gather", "Scatter", "SegmentSum")),
          ("SGD update", ("ApplyGradientDescent",)),
          ("reductions (norms, sums)", ("Sum", "L2Loss", "Max", "Mean", "Prod")),
          ("elementwise (gates, their derivatives, casts)",
           ("Sigmoid", "Tanh", "Mul", "Add", "Sub", "Square", "Div", "Select", "Neg", "Cast",
            "Maximum", "Minimum", "Sqrt", "Rsqrt", "IsFinite", "ZerosLike", "OnesLike", "Fill")),
          ("copies and layout (stack, slice, concat, transpose, tensor lists)",
           ("Pack", "Unpack", "Concat", "Split", "Slice", "Transpose", "TensorList", "Reshape",
            "Squeeze", "ExpandDims", "Tile", "Identity")),
          ]


def op_kind(op_type: str) -> str:
    for kind, markers in _KINDS:
        if any(marker in op_type for marker in markers):
            return kind
    return "loop control and the rest"


def read_trace(trace_dir: str):
    """(op events `(line, type, start_ps, duration_ps)`, window events `(start_ps, duration_ps)`) of
    the host plane of the newest `.xplane.pb` under `trace_dir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as handle:
        space.ParseFromString(handle.read())
    plane = next(plane for plane in space.planes if plane.name == "/host:CPU")
    ops, windows, executor = [], [], []
    for line in plane.lines:
        for event in line.events:
            metadata = plane.event_metadata[event.metadata_id]
            start = line.timestamp_ns * 1000 + event.offset_ps
            if metadata.name == "window":
                windows.append((start, event.duration_ps))
            elif metadata.name == "ExecutorState::Process":
                executor.append((start, start + event.duration_ps))
            elif ":" in metadata.name and "::" not in metadata.name and line.name.startswith("tf_"):
                op_type = metadata.display_name or metadata.name.rsplit(":", 1)[-1]
                ops.append((line.id, op_type, start, event.duration_ps))
    return ops, windows, executor


def busy_ps(intervals):
    """Length of the union of `(start, end)` intervals."""
    total, reach = 0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def profile_trace(windows):
    import tensorflow as tf

    count = FLAGS.trace_windows
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
    # host_tracer_level 3 records every kernel; the default (2) leaves out the cheap ones.
    tf.profiler.experimental.start(trace_dir, tf.profiler.experimental.ProfilerOptions(host_tracer_level=3))
    started = time.perf_counter()
    for index in range(count):
        with tf.profiler.experimental.Trace("window", step_num=index, _r=1):
            windows.run(1)
    traced = (time.perf_counter() - started) / count
    tf.profiler.experimental.stop()
    ops, window_events, executor = read_trace(trace_dir)
    first = min(start for start, _ in window_events)
    last = max(start + duration for start, duration in window_events)
    ops = [op for op in ops if first <= op[2] <= last]
    wall = sum(duration for _, duration in window_events)
    busy = busy_ps([(start, start + duration) for _, _, start, duration in ops] +
                   [(start, end) for start, end in executor if first <= start <= last])
    kinds = collections.defaultdict(lambda: [0, 0])
    for _, op_type, _, duration in ops:
        kinds[op_kind(op_type)][0] += 1
        kinds[op_kind(op_type)][1] += duration
    op_time = sum(duration for _, duration in kinds.values())
    print(f"\n## Trace of {count} windows of the real step (TensorFlow profiler; {trace_dir})\n")
    print("| kind of op | kernels per window | op ms per window | us per kernel | % of op time |")
    print("|---|---|---|---|---|")
    for kind, (number, duration) in sorted(kinds.items(), key=lambda item: -item[1][1]):
        print(f"| {kind} | {number / count:.0f} | {duration / 1e9 / count:.2f} | {duration / 1e6 / number:.1f} | "
              f"{100 * duration / op_time:.1f} |")
    print(f"| all | {len(ops) / count:.0f} | {op_time / 1e9 / count:.2f} | {op_time / 1e6 / len(ops):.1f} | 100 |")
    print(f"\nwall time per window under the profiler: {wall / 1e9 / count:.2f} ms ({1e3 * traced:.2f} ms "
          f"measured around it); the executor or a kernel busy during {100 * busy / wall:.0f}% of it, "
          f"neither during {100 * (wall - busy) / wall:.0f}% ({(wall - busy) / 1e9 / count:.2f} ms per "
          f"window: the host's share). Op time sums both compute threads, and the profiler adds a little "
          f"to every kernel. Traced after {windows.index - count} windows: later, TensorFlow's executor "
          f"learns which kernels are cheap and runs them inline, where this trace no longer shows them "
          f"one by one.")
    top = collections.Counter()
    for _, op_type, _, duration in ops:
        top[op_type] += duration
    print("\nop types with the most time: " + ", ".join(
        f"{op_type} {duration / 1e9 / count:.2f} ms" for op_type, duration in top.most_common(8)))


# ---------------------------------------------------------------------------------------------
# Memory

def rss_mb():
    """(current, peak) resident set of this process in MB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def memory_stages():
    """Runs in a fresh process: RSS after each stage of a benchmark-like run, one JSON line each."""
    def report(stage):
        current, peak = rss_mb()
        print(json.dumps(dict(stage=stage, rss_mb=round(current, 1), peak_mb=round(peak, 1))), flush=True)

    report("python")
    import tensorflow as tf
    report("import tensorflow")
    tf.constant(1.0).numpy()
    report("first TensorFlow op")
    from gradual_rnn import configs
    from gradual_rnn.nn import language_model  # noqa: F401  (keras and the package)
    from gradual_rnn.train import steps  # noqa: F401
    report("import keras + gradual_rnn")
    config = configs.get_config(FLAGS.config)
    ids = load_ids(config.vocab_size)
    report("PTB loaded")
    model, optimizer, step, plan = build(config)
    report("model + optimizer built")
    windows = Windows(config, ids, step, plan, model)
    windows.run(1)
    report("first window (tracing)")
    windows.run(FLAGS.steps)
    report(f"{FLAGS.steps} more windows")


def peak_rss_of(command, environment=None):
    """(peak RSS in MB of a child process, its stdout), from the kernel's accounting (wait4)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=environment)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command} exited with {process.returncode}")
    return usage.ru_maxrss / 1024, output


def profile_memory():
    python = sys.executable
    here = os.path.dirname(os.path.abspath(__file__))
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    tensorflow, _ = peak_rss_of([python, "-c", "import tensorflow"], environment)
    first_op, _ = peak_rss_of([python, "-c", "import tensorflow as tf; tf.constant(1.0).numpy()"], environment)
    _, stages = peak_rss_of([python, os.path.abspath(__file__), "--memory_stages", f"--config={FLAGS.config}",
                             f"--steps={FLAGS.steps}", f"--data={FLAGS.data}"], environment)
    benchmark, output = peak_rss_of([python, os.path.join(here, "ptb_benchmark.py"), f"--config={FLAGS.config}",
                                     f"--steps={FLAGS.steps}", "--warmup=3", f"--data={FLAGS.data}"], environment)
    line = json.loads([text for text in output.splitlines() if text.startswith("{")][-1])
    print(f"\n## Peak RSS ({FLAGS.config}; MB; fresh processes, from wait4)\n")
    print("| process | peak RSS MB |")
    print("|---|---|")
    print(f"| `python -c \"import tensorflow\"` | {tensorflow:.0f} |")
    print(f"| `python -c \"import tensorflow as tf; tf.constant(1.0).numpy()\"` | {first_op:.0f} |")
    print(f"| `benchmarks/ptb_benchmark.py --config {FLAGS.config} --steps {FLAGS.steps} --warmup 3` | "
          f"{benchmark:.0f} (its own report: {line['peak_rss_mb']:.0f}, {line['wps']:,.0f} words/s) |")
    print(f"| package's share above `import tensorflow` | {benchmark - tensorflow:.0f} |")
    print(f"| package's share above TensorFlow's first op | {benchmark - first_op:.0f} |")
    print("\n| stage of one process | RSS MB | peak MB | RSS added |")
    print("|---|---|---|---|")
    previous = 0.0
    for text in stages.splitlines():
        if text.startswith("{"):
            row = json.loads(text)
            print(f"| {row['stage']} | {row['rss_mb']:.0f} | {row['peak_mb']:.0f} | "
                  f"{row['rss_mb'] - previous:+.0f} |")
            previous = row["rss_mb"]


# ---------------------------------------------------------------------------------------------

def main(argv):
    del argv
    if FLAGS.memory_stages:
        memory_stages()
        return
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one compiled loop per product shape is intended
    print(cpu_line())
    print(f"load average at start: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    if FLAGS.memory:
        profile_memory()
    else:
        from gradual_rnn import configs

        config = configs.override(configs.get_config(FLAGS.config), {"precision": FLAGS.precision})
        model, _, step, plan = build(config)
        ids = load_ids(config.vocab_size)
        windows = Windows(config, ids, step, plan, model)
        windows.run(3)
        if "trace" in FLAGS.sections:  # first: later the executor runs cheap kernels inline, untraced
            profile_trace(windows)
        if "parts" in FLAGS.sections:
            full = profile_parts(config, model, windows, ids)
        else:
            full = statistics.median(windows.run(FLAGS.steps) for _ in range(FLAGS.rounds))
            print(f"\nfull step: {1e3 * full:.2f} ms per window (median of {FLAGS.rounds} rounds of "
                  f"{FLAGS.steps})")
        if "products" in FLAGS.sections:
            profile_products(config, full)
        if "softmax" in FLAGS.sections:
            profile_softmax(config, full)
    print(f"\nload average at end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    app.run(main)
