"""A shape-aware GEMM bound for one training window: the words/sec the step's matrix products alone
would allow, at the rates TensorFlow's matmul reaches for each of their shapes on this machine, now.

    python benchmarks/gemm_bound.py --config small [--repeats 5]
    python benchmarks/gemm_bound.py --config large --dry_run     # the products only, no timing

The products are those of one window of `ptb_benchmark.py --config NAME` in float32 on a CPU (the
basic LSTM path with its hand-written backward pass, `nn/lstm.py`; the fused softmax cost,
`nn/heads.py`), with T = batch * num_steps tokens, u units, g = 4u gates and V words:

  per layer (input width i: the embedding's for layer 1, else u)
    input projection          x W                 [T x i] [i x g]        1   einsum bti,ig->btg
    recurrence                h R                 [batch x u] [u x g]    num_steps
    gate gradient into h      dgates R^T          [batch x g] [g x u]    num_steps (R^T copied once)
    recurrent-kernel gradient h^T dgates          [T x u]^T [T x g]      1   einsum nkbh,nkbg->hg
    input gradient            dprojected W^T      [T x g] [i x g]^T      1   einsum btg,ig->bti
    kernel gradient           x^T dprojected      [T x i]^T [T x g]      1   einsum btg,bti->ig
  softmax head (untied: W [u x V]; tied: the embedding E [V x u])
    logits                    h W  or  h E^T      [T x u] [u x V]        1
    output gradient           dlogits W^T or dlogits E               1
    weight gradient           h^T dlogits or dlogits^T h             1

The per-step products are counted at the whole batch, as the model defines them; where the
recurrence steps its batch as two row groups (`nn.lstm.batch_groups`) it runs each as two half-height
products, bit for bit the same rows. Every product is computed even where its result is not needed (the recurrence at the first step of
a window from the carried state, the gradient into h at the first step, the input gradient of
layer 1). The einsums of the step are timed as the 2-D matmul with the same operands and
transposes; other elementwise work, the softmax itself, the embedding gather and the update are
left out, so the step cannot beat this bound.

Each distinct product (shape and transposes) is timed alone: `tf.matmul` of two variables inside a
compiled `tf.while_loop` that runs it back to back, enough times that one call takes about
--target_ms (found by warm-up calls of doubling length); the median over --repeats calls, minus the
cost of one iteration of the same loop without the product (measured alike), is its time. A
whole-window product runs with up to 10 loop iterations at once (TensorFlow's default), its fastest
rate. The per-step products are "chained": each step's product needs the step before it, in any
implementation, so they run one iteration at a time, either at full height or as two half-height
products side by side (the recurrence's row groups), whichever is faster. The bound per window is
sum(count * time), and the bound words/sec is T / that. It measures the machine as it is during the
run, which is why run_interleaved.sh runs it once per round between the implementations.

Prints a table to stderr and one JSON line to stdout: impl ("gemm_bound"), config, bound_wps,
bound_ms_per_window, products (shape, count, ms each, gflops, what), words_per_step,
loop_overhead_us, cores_used (this process's CPU seconds over wall seconds while timing: below ncpu
when other work shared the machine), repeats, dtype, cpu, cpu_extensions, host, ncpu, framework.
"""
import argparse
import collections
import dataclasses
import json
import os
import platform
import sys
import time
from typing import List

import numpy as np
import tensorflow as tf

import ptb_benchmark
from gradual_rnn import configs


MAX_ITERATIONS = 1 << 20  # products per timed call, at most


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product `op(a) op(b)` with `op(a)` `[m x k]` and `op(b)` `[k x n]`, run `count`
    times per window."""

    what: str
    m: int
    k: int
    n: int
    transpose_a: bool = False
    transpose_b: bool = False
    count: int = 1
    chained: bool = False  # one per time step, each waiting for the step before

    @property
    def shape(self):
        """(m, k, n, transpose_a, transpose_b, chained): products with the same shape are timed once."""
        return self.m, self.k, self.n, self.transpose_a, self.transpose_b, self.chained

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


def model_config(name: str) -> configs.Config:
    """The config ptb_benchmark.py trains for `--config name` (a registered config, or gl8)."""
    base, assignments = ptb_benchmark.VARIANTS.get(name, (name, {}))
    return configs.override(configs.get_config(base), assignments)


def layer_products(config: configs.Config, layer: int) -> List[Product]:
    """The products of LSTM layer `layer` (1-based) in one window, forward and backward."""
    tokens, units, steps = config.batch_size * config.num_steps, config.hidden_size, config.num_steps
    width, gates = config.embedding_width if layer == 1 else units, 4 * units
    name = f"layer {layer}"
    return [
        Product(f"{name} input projection x W", tokens, width, gates),
        Product(f"{name} recurrence h R (per step)", config.batch_size, units, gates, count=steps,
                chained=True),
        Product(f"{name} gate gradient into h, dgates R^T (per step, from a copy of R^T)", config.batch_size,
                gates, units, count=steps, chained=True),
        Product(f"{name} recurrent-kernel gradient h^T dgates", units, tokens, gates, transpose_a=True),
        Product(f"{name} input gradient dprojected W^T", tokens, gates, width, transpose_b=True),
        Product(f"{name} kernel gradient x^T dprojected", width, tokens, gates, transpose_a=True),
    ]


def head_products(config: configs.Config) -> List[Product]:
    """The three products of the softmax head (`heads.summed_softmax_cost`)."""
    tokens, units, vocab = config.batch_size * config.num_steps, config.hidden_size, config.vocab_size
    if config.tied_weights:
        return [Product("head logits h E^T (tied)", tokens, units, vocab, transpose_b=True),
                Product("head output gradient dlogits E", tokens, vocab, units),
                Product("head embedding gradient dlogits^T h", vocab, tokens, units, transpose_a=True)]
    return [Product("head logits h W", tokens, units, vocab),
            Product("head output gradient dlogits W^T", tokens, vocab, units, transpose_b=True),
            Product("head weight gradient h^T dlogits", units, tokens, vocab, transpose_a=True)]


def window_products(config: configs.Config) -> List[Product]:
    """Every matrix product of one training window, layer by layer, then the head."""
    products = []
    for layer in range(1, config.num_layers + 1):
        products.extend(layer_products(config, layer))
    return products + head_products(config)


def distinct_products(products: List[Product]):
    """shape -> (count per window, what it computes), in first-seen order."""
    merged = collections.OrderedDict()
    for product in products:
        count, names = merged.get(product.shape, (0, []))
        merged[product.shape] = (count + product.count, names + [product.what])
    return merged


def looped(body, carried, parallel_iterations: int):
    """A compiled `iterations -> result` running `body` back to back in one graph loop, at most
    `parallel_iterations` iterations at once (1: each starts when the one before has finished)."""

    @tf.function
    def run(iterations):
        def step(index, value):
            return index + 1, body(value)

        return tf.while_loop(lambda index, _: index < iterations, step, (tf.constant(0), carried),
                             parallel_iterations=parallel_iterations)[1]

    return run


OVERLAPPED, ONE_AT_A_TIME = 10, 1  # parallel iterations of the timing loop (10 is TensorFlow's default)


def call_seconds(run, iterations: int) -> float:
    """Wall seconds of one call of `run` (its result read back)."""
    started = time.perf_counter()
    tf.nest.map_structure(lambda value: value.numpy(), run(tf.constant(iterations)))
    return time.perf_counter() - started


def median_seconds_per_iteration(run, target_seconds: float, repeats: int) -> float:
    """Traces and warms `run`, doubles the iterations until a call takes a quarter of target_seconds
    (so the call's own overhead is amortized), sizes the calls to last about target_seconds, and
    returns the median over `repeats` calls of the seconds per iteration."""
    call_seconds(run, 1)  # traces
    iterations, seconds = 1, call_seconds(run, 1)
    while seconds < target_seconds / 4 and iterations < MAX_ITERATIONS:
        iterations *= 2
        seconds = call_seconds(run, iterations)
    iterations = int(min(MAX_ITERATIONS, max(1, iterations * target_seconds / seconds)))
    return float(np.median([call_seconds(run, iterations) / iterations for _ in range(repeats)]))


def time_shape(shape, target_seconds: float, repeats: int, overheads) -> float:
    """Seconds of one float32 `tf.matmul` of this shape, the loop's own cost (`overheads`, by
    parallel iterations) taken off.

    A whole-window product is timed with overlapping loop iterations, its fastest rate. A chained
    product (one per time step) is timed one iteration at a time, since each step's product waits
    for the step before; and, when the rows split in two, also as two half-height products side by
    side per iteration (the row groups of `nn.lstm.lstm_recurrence`): the faster of the two counts."""
    m, k, n, transpose_a, transpose_b, chained = shape
    generator = tf.random.Generator.from_seed(0)

    def operands(rows):
        return (tf.Variable(generator.normal((k, rows) if transpose_a else (rows, k))),
                tf.Variable(generator.normal((n, k) if transpose_b else (k, n))))

    def products(pairs):
        return lambda _: tuple(tf.matmul(left, right, transpose_a=transpose_a, transpose_b=transpose_b)
                               for left, right in pairs)

    def timed(pairs, rows, parallel_iterations):
        run = looped(products(pairs), tuple(tf.zeros([rows, n]) for _ in pairs), parallel_iterations)
        return median_seconds_per_iteration(run, target_seconds, repeats) - overheads[parallel_iterations]

    if not chained:
        return timed([operands(m)], m, OVERLAPPED)
    candidates = [timed([operands(m)], m, ONE_AT_A_TIME)]
    if m % 2 == 0 and not transpose_a:
        candidates.append(timed([operands(m // 2), operands(m // 2)], m // 2, ONE_AT_A_TIME))
    return min(candidates)


def loop_overhead(target_seconds: float, repeats: int, parallel_iterations: int) -> float:
    """Median seconds of one iteration of the timing loop with nothing in it."""
    return median_seconds_per_iteration(looped(lambda value: value, tf.zeros([]), parallel_iterations),
                                        target_seconds, repeats)


def shape_label(shape) -> str:
    m, k, n, transpose_a, transpose_b, chained = shape
    left = f"[{k}x{m}]^T" if transpose_a else f"[{m}x{k}]"
    right = f"[{n}x{k}]^T" if transpose_b else f"[{k}x{n}]"
    return f"{left} {right}" + (" chained" if chained else "")


def print_table(config_name: str, rows, overhead, total_seconds: float, words: int, cores_used: float):
    """The products and the bound, for people, to stderr (`overhead`: the loop's, by parallel iterations)."""
    print(f"\nGEMM bound of one `{config_name}` training window ({words} words), float32; loop overhead "
          f"{overhead[OVERLAPPED] * 1e6:.2f} us (overlapped) / {overhead[ONE_AT_A_TIME] * 1e6:.2f} us "
          f"(chained) per product subtracted:", file=sys.stderr)
    print(f"{'product [m x k] [k x n]':<32} {'count':>6} {'us each':>10} {'GFLOP/s':>8} "
          f"{'ms/window':>10} {'share':>6}  what", file=sys.stderr)
    for row in rows:
        seconds = row["count"] * row["ms"] / 1e3
        print(f"{row['shape']:<32} {row['count']:>6} {row['ms'] * 1e3:>10.2f} {row['gflops']:>8.1f} "
              f"{seconds * 1e3:>10.3f} {100 * seconds / total_seconds:>5.1f}%  {'; '.join(row['what'])}",
              file=sys.stderr)
    print(f"bound: {total_seconds * 1e3:.3f} ms per window = {words / total_seconds:,.0f} words/sec; "
          f"{cores_used:.2f} cores busy while timing", file=sys.stderr, flush=True)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", choices=[*configs.CONFIGS, *ptb_benchmark.VARIANTS],
                        help="the ptb_benchmark.py config whose window is bounded")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per product (the median is kept)")
    parser.add_argument("--target_ms", type=float, default=20.0, help="about how long one timed call runs")
    parser.add_argument("--dry_run", action="store_true", help="list the products without timing them")
    arguments = parser.parse_args(argv)
    if arguments.repeats < 1 or arguments.target_ms <= 0:
        parser.error("--repeats must be at least 1 and --target_ms positive")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    config = model_config(arguments.config)
    words = config.batch_size * config.num_steps
    products = distinct_products(window_products(config))
    if arguments.dry_run:
        for shape, (count, names) in products.items():
            print(f"{shape_label(shape):<32} x{count:<4} {'; '.join(names)}")
        return
    cpu_model, cpu_extensions = ptb_benchmark.cpu_report()
    target_seconds = arguments.target_ms / 1e3
    started, started_cpu = time.perf_counter(), time.process_time()
    overhead = {iterations: loop_overhead(target_seconds, arguments.repeats, iterations)
                for iterations in (OVERLAPPED, ONE_AT_A_TIME)}
    rows, total_seconds = [], 0.0
    for shape, (count, names) in products.items():
        seconds = max(time_shape(shape, target_seconds, arguments.repeats, overhead), 1e-9)
        flops = 2 * shape[0] * shape[1] * shape[2]
        rows.append(dict(shape=shape_label(shape), chained=shape[5], count=count,
                         ms=round(seconds * 1e3, 6), gflops=round(flops / seconds / 1e9, 2), what=names))
        total_seconds += count * seconds
    cores_used = (time.process_time() - started_cpu) / (time.perf_counter() - started)
    print_table(arguments.config, rows, overhead, total_seconds, words, cores_used)
    output = dict(impl="gemm_bound", config=arguments.config, bound_wps=round(words / total_seconds, 1),
                  bound_ms_per_window=round(total_seconds * 1e3, 4), words_per_step=words, products=rows,
                  loop_overhead_us=round(overhead[OVERLAPPED] * 1e6, 3),
                  chained_loop_overhead_us=round(overhead[ONE_AT_A_TIME] * 1e6, 3),
                  cores_used=round(cores_used, 2),
                  repeats=arguments.repeats, dtype="float32",
                  cpu=cpu_model, cpu_extensions=cpu_extensions, host=platform.node(), ncpu=os.cpu_count(),
                  framework=f"tf {tf.__version__}")
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    main()
