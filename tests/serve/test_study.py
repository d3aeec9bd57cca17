"""The gradual-vs-traditional study kept in docs/study_runs/ (each run's config.json and results.json,
copied from its run folder by benchmarks/gradual_study.sh): the README's command regenerates the
table and the figure from them, and the table's numbers are those of the JSON."""
import glob
import json
import os
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = sorted(glob.glob(os.path.join(ROOT, "docs", "study_runs", "*", "")))


def _results(folder):
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _config(folder):
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.skipif(not RUNS, reason="no study runs kept in docs/study_runs")
def test_the_readme_command_regenerates_the_study_from_the_kept_json(tmp_path):
    pytest.importorskip("matplotlib")
    done = subprocess.run([sys.executable, "-m", "gradual_rnn", "report", *RUNS, "--out", str(tmp_path),
                           "--table_name=gradual_vs_traditional.md", "--figure_name=gradual_vs_traditional.png"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "gradual_vs_traditional.md").read_text()
    assert (tmp_path / "gradual_vs_traditional.png").read_bytes().startswith(b"\x89PNG")
    for folder in RUNS:
        results, config = _results(folder), _config(folder)
        assert results["rows"], folder  # every kept run finished: its results hold its epochs
        best = (f"{results['best_valid_perplexity']:.2f} ({results['best_phase']}, {results['best_epoch']})")
        name = os.path.basename(os.path.normpath(folder))
        assert f"| {name} | {config['seed']} | {best} | {results['test_perplexity']:.2f} " in table, name
    arms = {}
    for folder in RUNS:
        arms.setdefault("gradual" if _config(folder)["gradual"] else "traditional", []).append(_results(folder))
    for kind, results in arms.items():
        if len(results) < 2:
            continue
        best = [result["best_valid_perplexity"] for result in results]
        test = [result["test_perplexity"] for result in results]
        expected = (f"{statistics.fmean(best):.2f} ± {statistics.stdev(best):.2f} | "
                    f"{statistics.fmean(test):.2f} ± {statistics.stdev(test):.2f} |")
        assert expected in table, kind
