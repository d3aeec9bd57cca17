"""Markdown tables from one run of benchmarks/run_interleaved.sh:

1. every implementation per config (small, medium, large, and the overhead-bound test and gl8):
   median training words/sec, the spread, warmup, peak RSS, last loss per token, K (windows per
   compiled call);
2. per round, each gradual_rnn variant against the PyTorch peer (`torch_default`) and against
   gradual_rnn's own float32 path (the variational path must stay >= 0.8x of it), its % of the
   shape-aware GEMM bound (gemm.jsonl, benchmarks/gemm_bound.py), and peak RSS against PyTorch's;
3. the GEMM bound per config: bound words/sec, ms per window, the cores it got, and PyTorch's and
   our float32 path's % of it;
4. the test pass at batch 1 (one step per window) of `small`: PyTorch literally one token per call,
   PyTorch on 512-token chunks (same numbers), gradual_rnn.

Runs are appended round by round, so the k-th run of one implementation pairs with the k-th run of
another, and with the k-th GEMM bound of its config. Ratios are medians of the per-round ratios.
Run: python benchmarks/summarize_extra.py bench-results   (prints markdown)
"""
import collections
import json
import math
import os
import statistics
import sys

CONFIG_ORDER = ("small", "medium", "large", "test", "gl8")
PEER = "torch_default"
# Our float32 path: one window per call (small, medium, large), or K chosen by the trainer's rule.
OURS_FLOAT32 = ("gradual_rnn", "gradual_rnn_kauto")
BOUND = "gemm_bound"


def read(path):
    rows = collections.defaultdict(list)  # (config, impl) -> runs in file order (one per round)
    if os.path.exists(path):
        for line in open(path):
            if line.startswith("{"):
                row = json.loads(line)
                rows[(row["config"], row["impl"])].append(row)
    return rows


def median_ratio(numerators, denominators):
    """The median of per-round ratios and the ratios; NaN when there is nothing to pair."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return (statistics.median(ratios) if ratios else math.nan), ratios


def median_of(runs, key):
    values = [run[key] for run in runs if key in run]
    return statistics.median(values) if values else math.nan


def ours_float32(rows, config):
    """Our float32 runs of `config` (the first of OURS_FLOAT32 that ran), or []."""
    for impl in OURS_FLOAT32:
        if rows.get((config, impl)):
            return rows[(config, impl)]
    return []


def percent_of_bound(runs, bounds):
    """The median over rounds of 100 * wps / bound_wps, and the per-round values (NaN: no bound)."""
    ratio, per_round = median_ratio([run["wps"] for run in runs], [bound["bound_wps"] for bound in bounds])
    return 100 * ratio, [100 * value for value in per_round]


def joined(values, form="%.2f"):
    return " ".join(form % value for value in values) or "-"


def percent_cell(median, per_round):
    """`61%; 60 61 63`, or `-` without a bound to pair with."""
    return "-" if math.isnan(median) else "%.0f%%; %s" % (median, joined(per_round, "%.0f"))


def implementations(rows, config):
    names = {impl for (name, impl) in rows if name == config}
    return sorted(names, key=lambda impl: (not impl.startswith("torch"), impl))


def overview_table(rows):
    print("\n| config | impl | rounds | median wps | min-max wps | median-step wps | warmup s | "
          "peak RSS MB | last loss | K per round |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in CONFIG_ORDER:
        for impl in implementations(rows, config):
            runs = rows[(config, impl)]
            wps = [run["wps"] for run in runs]
            print("| %s | %s | %d | %.0f | %.0f-%.0f | %.0f | %.1f | %.0f | %.2f | %s |" % (
                config, impl, len(runs), statistics.median(wps), min(wps), max(wps),
                median_of(runs, "wps_median_step"), median_of(runs, "warmup_s"),
                median_of(runs, "peak_rss_mb"), median_of(runs, "last_loss"),
                joined([run["windows_per_call"] for run in runs if "windows_per_call" in run], "%d")))


def ratio_table(rows, bounds):
    print("\n| config | impl | rounds | median wps | vs %s (median; per round) | "
          "vs gradual_rnn float32 (median; per round) | %% of GEMM bound (median; per round) | "
          "peak RSS MB | RSS vs torch |" % PEER)
    print("|---|---|---|---|---|---|---|---|---|")
    for config in CONFIG_ORDER:
        torch = rows.get((config, PEER), [])
        ours = ours_float32(rows, config)
        for impl in implementations(rows, config):
            if not impl.startswith("gradual_rnn"):
                continue
            runs = rows[(config, impl)]
            wps = [run["wps"] for run in runs]
            vs_torch, per_torch = median_ratio(wps, [run["wps"] for run in torch])
            vs_ours, per_ours = median_ratio(wps, [run["wps"] for run in ours])
            bound, per_bound = percent_of_bound(runs, bounds.get((config, BOUND), []))
            rss = median_of(runs, "peak_rss_mb")
            print("| %s | %s | %d | %.0f | %.2f; %s | %.2f; %s | %s | %.0f | %.2f |" % (
                config, impl, len(runs), statistics.median(wps), vs_torch, joined(per_torch),
                vs_ours, joined(per_ours), percent_cell(bound, per_bound),
                rss, rss / median_of(torch, "peak_rss_mb") if torch else math.nan))
    if bounds:
        print("\nThe GEMM bound times float32 products: a bfloat16 variant can pass 100%.")


def bound_table(rows, bounds):
    """The shape-aware GEMM bound per config (float32 products timed alone, once per round)."""
    configs = [config for config in CONFIG_ORDER if bounds.get((config, BOUND))]
    if not configs:
        return
    print("\n| config | GEMM bound rounds | median bound wps | min-max | median ms/window | cores used "
          "per round | %s %% of bound (median; per round) | gradual_rnn float32 %% of bound (median; "
          "per round) |" % PEER)
    print("|---|---|---|---|---|---|---|---|")
    for config in configs:
        runs = bounds[(config, BOUND)]
        wps = [run["bound_wps"] for run in runs]
        torch, per_torch = percent_of_bound(rows.get((config, PEER), []), runs)
        ours, per_ours = percent_of_bound(ours_float32(rows, config), runs)
        print("| %s | %d | %.0f | %.0f-%.0f | %.2f | %s | %s | %s |" % (
            config, len(runs), statistics.median(wps), min(wps), max(wps),
            median_of(runs, "bound_ms_per_window"),
            joined([run["cores_used"] for run in runs if "cores_used" in run]),
            percent_cell(torch, per_torch), percent_cell(ours, per_ours)))


def eval_table(rows):
    literal = sorted(impl for (config, impl) in rows if impl.startswith("torch") and "chunk" not in impl)
    if not literal:
        return
    torch = rows[("small", literal[0])]
    print("\n| test pass of small (82,429 windows, batch 1, one step) | rounds | median tokens/s | "
          "median seconds | vs %s, one token per call (per round) | nll/token |" % literal[0])
    print("|---|---|---|---|---|---|")
    for (config, impl), runs in sorted(rows.items()):
        speed = [run["eval_b1_wps"] for run in runs]
        ratio, per_round = median_ratio(speed, [run["eval_b1_wps"] for run in torch])
        print("| %s | %d | %.0f | %.1f | %.2f (%s) | %.4f |" % (
            impl, len(runs), statistics.median(speed), median_of(runs, "eval_s"),
            ratio, " ".join("%.2f" % r for r in per_round), median_of(runs, "nll_per_token")))


def main():
    folder = sys.argv[1]
    cpu = os.path.join(folder, "cpu.txt")
    if os.path.exists(cpu):
        print("".join("    " + line for line in open(cpu)))
    training = read(os.path.join(folder, "peers.jsonl"))
    bounds = read(os.path.join(folder, "gemm.jsonl"))
    overview_table(training)
    ratio_table(training, bounds)
    bound_table(training, bounds)
    eval_table(read(os.path.join(folder, "eval.jsonl")))


if __name__ == "__main__":
    main()
