"""The tables the shared summary lacks, from one run of benchmarks/run_interleaved.sh:

1. per round, each gradual_rnn variant against PyTorch and against gradual_rnn's own float32 path
   (the variational path must stay >= 0.8x of it), with peak RSS against PyTorch's;
2. the test pass at batch 1 (one step per window) of `small`: PyTorch literally one token per call,
   PyTorch on 512-token chunks (same numbers), gradual_rnn.

Run: python benchmarks/summarize_extra.py bench-results   (prints markdown)
"""
import collections
import json
import os
import statistics
import sys


def read(path):
    rows = collections.defaultdict(list)  # (config, impl) -> runs in file order (one per round)
    if os.path.exists(path):
        for line in open(path):
            if line.startswith("{"):
                row = json.loads(line)
                rows[(row["config"], row["impl"])].append(row)
    return rows


def median_ratio(numerators, denominators):
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return statistics.median(ratios), ratios


def training_table(rows):
    print("\n| config | impl | rounds | median wps | vs torch_default (median; per round) | "
          "vs gradual_rnn float32 (median; per round) | peak RSS MB | RSS vs torch |")
    print("|---|---|---|---|---|---|---|---|")
    for config in ("small", "medium", "large"):
        torch = rows.get((config, "torch_default"), [])
        ours = rows.get((config, "gradual_rnn"), [])
        for impl in sorted(impl for (name, impl) in rows if name == config and impl.startswith("gradual_rnn")):
            runs = rows[(config, impl)]
            wps = [run["wps"] for run in runs]
            vs_torch, per_torch = median_ratio(wps, [run["wps"] for run in torch])
            vs_ours, per_ours = median_ratio(wps, [run["wps"] for run in ours])
            rss = statistics.median(run["peak_rss_mb"] for run in runs)
            torch_rss = statistics.median(run["peak_rss_mb"] for run in torch) if torch else float("nan")
            print("| %s | %s | %d | %.0f | %.2f; %s | %.2f; %s | %.0f | %.2f |" % (
                config, impl, len(runs), statistics.median(wps), vs_torch,
                " ".join("%.2f" % r for r in per_torch), vs_ours, " ".join("%.2f" % r for r in per_ours),
                rss, rss / torch_rss))


def eval_table(rows):
    literal = [impl for (config, impl) in rows if impl.startswith("torch") and "chunk" not in impl]
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
            impl, len(runs), statistics.median(speed), statistics.median(run["eval_s"] for run in runs),
            ratio, " ".join("%.2f" % r for r in per_round), statistics.median(run["nll_per_token"] for run in runs)))


def main():
    folder = sys.argv[1]
    training_table(read(os.path.join(folder, "peers.jsonl")))
    eval_table(read(os.path.join(folder, "eval.jsonl")))


if __name__ == "__main__":
    main()
