"""A report of training runs beside the references' published numbers: a markdown table and a figure.

    python -m gradual_rnn report RUN_DIR [RUN_DIR ...] [--out DIR] [--table_name=report.md]
        [--figure_name=validation_perplexity.png]

Each RUN_DIR is a `--save_path` of `ptb_word_lm.py` (or a copy of its config and results files).
The report reads the run's config and its results (one row per epoch: phase, depth, epoch,
learning_rate, train/valid perplexity, and test perplexities where the test rule scored them; the
final test numbers beside the rows) through `RunFolder`. A run that has not finished has no results
yet: its rows come from the newest checkpoint's progress record. A smoke test is marked as one.

Runs whose configs differ only in their seed form an arm: the report adds a table of each arm's
best validation and test (mean ± standard deviation over the seeds, and each seed's numbers), and the
figure draws each arm's mean validation curve with the band from its lowest to its highest seed.

It writes into DIR (default `report/`):
  report.md                   per run, one table row per phase and head (measured), a row for the
                              whole run, and the published numbers for its config (published);
                              then the arms, and per run its best validation, test, learning-rate
                              decays and whether it finished;
  validation_perplexity.png   validation perplexity per epoch, every run on one axis, the phase
                              boundaries of gradual runs marked (the GL paper's Figure 2 as a
                              picture). It needs matplotlib (`pip install gradual_rnn[plot]`); without
                              it the report holds the table and a line on how to get the figure.

The published numbers, and where they come from:
  small, medium, large   the TensorFlow PTB tutorial's docstring (ptb_word_lm.py), which lists
                         train / valid / test perplexities for Zaremba et al.'s three configs:
                         37.99 / 121.39 / 115.91, 48.45 / 86.16 / 82.07, 37.87 / 82.62 / 78.29;
                         the GL paper's Table 1 also lists Zaremba et al.'s large model at 78.4 test.
  gl, lad, gl_lad,       test perplexity in the GL paper's Table 1 (Aharoni, Rattner & Permuter
  deep_gl_lad            2017): 67.8, 65.8, 65.0, 61.7; and in the docstrings of the configs in the
                         paper's 2017 code: 66.7, 65.6, 64.5, 61.7.
  reference              no number of its own in the paper; Table 1 gives 73.2 test for the
                         variational LSTM with weight tying of Gal & Ghahramani and Press & Wolf,
                         the model the reference config follows (without the embedding bias).
This module needs no TensorFlow.
"""
import dataclasses
import json
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging

from gradual_rnn import configs
from gradual_rnn.train.run_folder import RunFolder, RunFolderError

TABLE_FILE = "report.md"
FIGURE_FILE = "validation_perplexity.png"
NO_FIGURE_NOTE = ("No figure: matplotlib is not installed. Install it with `pip install gradual_rnn[plot]` "
                  "(or `pip install matplotlib`) and run the report again.")
MISSING = "—"


class ReportError(ValueError):
    """A run folder that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Published:
    """Perplexities a reference published for a config (None where it gave none)."""

    source: str
    train: Optional[float] = None
    valid: Optional[float] = None
    test: Optional[float] = None


_TUTORIAL = "TF tutorial ptb_word_lm.py docstring (Zaremba et al. 2014)"
_TABLE_1 = "GL paper (Aharoni et al. 2017), Table 1"
_GL_CODE = "GL code (2017), docstring of the config"
PUBLISHED: Dict[str, List[Published]] = {
    "small": [Published(_TUTORIAL, 37.99, 121.39, 115.91)],
    "medium": [Published(_TUTORIAL, 48.45, 86.16, 82.07)],
    "large": [Published(_TUTORIAL, 37.87, 82.62, 78.29), Published(_TABLE_1 + ", Zaremba et al.", test=78.4)],
    "reference": [Published(_TABLE_1 + ", variational LSTM + weight tying of [8, 18]", test=73.2)],
    "gl": [Published(_TABLE_1, test=67.8), Published(_GL_CODE, test=66.7)],
    "lad": [Published(_TABLE_1, test=65.8), Published(_GL_CODE, test=65.6)],
    "gl_lad": [Published(_TABLE_1, test=65.0), Published(_GL_CODE, test=64.5)],
    "deep_gl_lad": [Published(_TABLE_1, test=61.7), Published(_GL_CODE, test=61.7)],
}


# ----- reading runs -----
@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder: its config (as saved), its epoch rows, and its final results (empty until it finishes)."""

    path: str
    config: Dict
    rows: List[Dict]
    final: Dict

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def kind(self) -> str:
        return "gradual" if self.config.get("gradual") else "traditional"

    @property
    def smoke_test(self) -> bool:
        return bool(self.final.get("smoke_test"))

    @property
    def label(self) -> str:
        smoke = ", smoke test" if self.smoke_test else ""
        return f"{self.name} ({self.config.get('name')}, {self.kind}{smoke})"


def read_run(path: str) -> Run:
    """Reads a run's config and results (or, for an unfinished run, its newest checkpoint's rows)."""
    folder = RunFolder(path)
    try:
        config = json.loads(folder.read_config().to_json())
        final = folder.read_results()
        if final is not None:
            return Run(path, config, list(final.get("rows", [])), final)
        progress = folder.newest_progress()
    except RunFolderError as error:
        raise ReportError(str(error)) from None
    if progress is None:
        raise ReportError(f"{path} holds no results and no checkpoint: is it a --save_path of ptb_word_lm.py?")
    logging.info("%s has no results yet (not finished): reading its newest checkpoint.", path)
    return Run(path, config, [dict(row) for row in progress.rows], {})


# ----- the table -----
def _number(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:.2f}"


def differences_from_registered(config: Dict) -> List[str]:
    """`field=value` for every field where the run's config differs from the registered one of its name."""
    name = config.get("name")
    if name not in configs.CONFIGS:
        return []
    registered = json.loads(configs.get_config(name).to_json())
    return [f"{field}={json.dumps(config[field])}" for field in sorted(config)
            if field in registered and config[field] != registered[field]]


def phase_summaries(rows: Sequence[Dict]) -> List[Dict]:
    """One summary per (phase, depth), in order: epochs, last train/valid, best valid and its epoch,
    and the last test perplexity scored in the phase (the `at_best_valid` rule)."""
    summaries: Dict = {}
    for row in rows:
        summary = summaries.setdefault((row["phase"], row["depth"]), dict(phase=row["phase"], depth=row["depth"],
                                                                          epochs=0, best=None))
        summary.update(epochs=summary["epochs"] + 1, train=row.get("train_perplexity"),
                       valid=row.get("valid_perplexity"))
        if row.get("valid_perplexity") is not None and (summary["best"] is None or
                                                       row["valid_perplexity"] < summary["best"][0]):
            summary["best"] = (row["valid_perplexity"], row["epoch"])
        if row.get("test_perplexity") is not None:
            summary["test"] = row["test_perplexity"]
    return list(summaries.values())


_HEADER = ("| run | config | kind | phase | head (depth) | epochs | train (last) | valid (last) | "
           "best valid (epoch) | test | source |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _measured(run: Run) -> str:
    return "measured, smoke test" if run.smoke_test else "measured"


def _measured_rows(run: Run) -> List[str]:
    name, lines = run.name, []
    for summary in phase_summaries(run.rows):
        best = summary["best"]
        best_text = f"{best[0]:.2f} ({best[1]})" if best else MISSING
        lines.append(f"| {name} | {run.config.get('name')} | {_measured(run)} | {summary['phase']} | {summary['depth']} | "
                     f"{summary['epochs']} | {_number(summary['train'])} | {_number(summary['valid'])} | "
                     f"{best_text} | {_number(summary.get('test'))} | results |")
    lines.append(_whole_run_row(run, name))
    return lines


def _whole_run_row(run: Run, name: str) -> str:
    final = run.final
    if not final:
        return (f"| {name} | {run.config.get('name')} | {_measured(run)} | all | {MISSING} | {len(run.rows)} | {MISSING} | "
                f"{MISSING} | {MISSING} | {MISSING} | unfinished (newest checkpoint) |")
    best = (f"{final['best_valid_perplexity']:.2f} (phase {final.get('best_phase')}, epoch {final.get('best_epoch')})"
            if final.get("best_valid_perplexity") is not None else MISSING)
    test = _number(final.get("test_perplexity"))
    if final.get("exact_test_perplexity") is not None:
        test += f" (exact {final['exact_test_perplexity']:.2f})"
    depth = run.rows[-1]["depth"] if run.rows else MISSING
    return (f"| {name} | {run.config.get('name')} | {_measured(run)} | all | {depth} | {len(run.rows)} | "
            f"{_number(final.get('train_perplexity'))} | {_number(final.get('valid_perplexity'))} | {best} | "
            f"{test} | results (test rule {run.config.get('test_rule', MISSING)}) |")


def _as_published(value: Optional[float]) -> str:
    return MISSING if value is None else f"{value:g}"


def _published_rows(config: Dict) -> List[str]:
    """The published numbers for the registered config of the run's name (its depth, not the run's)."""
    name = config.get("name")
    if name not in PUBLISHED:
        return []
    depth = configs.get_config(name).num_layers
    return [f"| {MISSING} | {name} | published | all | {depth} | {MISSING} | {_as_published(item.train)} | "
            f"{_as_published(item.valid)} | {MISSING} | {_as_published(item.test)} | {item.source} |"
            for item in PUBLISHED[name]]


def markdown_table(runs: Sequence[Run]) -> str:
    """The report's markdown: the table, then one note per run whose config differs from the
    registered config that the published numbers belong to."""
    lines = ["# Runs beside the published numbers", "",
             "`measured`: this package's runs (per phase and head, then the whole run). `published`: "
             "the references' numbers for the registered config of the same name.", "", _HEADER]
    for run in runs:
        lines += _measured_rows(run) + _published_rows(run.config)
    notes = [f"- {run.name}: differs from the registered "
             f"`{run.config.get('name')}` config (which the published numbers are for) in "
             f"{', '.join(differences)}."
             for run in runs for differences in [differences_from_registered(run.config)] if differences]
    groups = arms(runs)
    lines += [""] + notes if notes else []
    if any(len(arm.runs) > 1 for arm in groups):
        lines += [""] + arm_table(groups)
    lines += [""] + run_table(groups)
    return "\n".join(lines) + "\n"


# ----- arms: runs that differ only in their seed -----
@dataclasses.dataclass(frozen=True)
class Arm:
    """Runs of one config but for the seed."""

    label: str
    runs: Tuple[Run, ...]

    @property
    def finished(self) -> Tuple[Run, ...]:
        return tuple(run for run in self.runs if run.final)


def _arm_key(config: Dict) -> str:
    return json.dumps({key: value for key, value in config.items() if key != "seed"}, sort_keys=True)


def arms(runs: Sequence[Run]) -> List[Arm]:
    """The runs grouped by config without the seed, in the order their first run was given."""
    grouped: Dict[str, List[Run]] = {}
    for run in runs:
        grouped.setdefault(_arm_key(run.config), []).append(run)
    labels = {}
    for key, members in grouped.items():
        first = members[0]
        base = f"{first.config.get('name')}, {first.kind}"
        labels[key] = base if sum(1 for other in grouped.values() if
                                  f"{other[0].config.get('name')}, {other[0].kind}" == base) == 1 else first.name
    return [Arm(labels[key], tuple(members)) for key, members in grouped.items()]


def mean_and_spread(values: Sequence[float]) -> Tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value)."""
    values = list(values)
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _plus_minus(values: Sequence[float]) -> str:
    if not values:
        return MISSING
    mean, spread = mean_and_spread(values)
    return f"{mean:.2f} ± {spread:.2f}"


def learning_rate_decays(rows: Sequence[Dict]) -> int:
    """How often the learning rate fell from one epoch to the next within a phase."""
    return sum(1 for before, after in zip(rows, rows[1:])
               if before["phase"] == after["phase"] and None not in (before.get("learning_rate"), after.get("learning_rate"))
               and after["learning_rate"] < before["learning_rate"])


def arm_table(groups: Sequence[Arm]) -> List[str]:
    """Per arm: the seeds, best validation and test as mean ± standard deviation over the finished runs."""
    lines = ["## Arms (runs that differ only in their seed)", "",
             "| arm | finished runs | seeds | best valid, mean ± sd | test at the best valid, mean ± sd | "
             "exact test, mean ± sd |", "|---|---|---|---|---|---|"]
    for arm in groups:
        done = arm.finished
        seeds = ", ".join(str(run.config.get("seed")) for run in done) or MISSING
        lines.append(f"| {arm.label} | {len(done)} of {len(arm.runs)} | {seeds} | "
                     f"{_plus_minus([run.final['best_valid_perplexity'] for run in done])} | "
                     f"{_plus_minus([run.final['test_perplexity'] for run in done if run.final.get('test_perplexity') is not None])} | "
                     f"{_plus_minus([run.final['exact_test_perplexity'] for run in done if run.final.get('exact_test_perplexity') is not None])} |")
    return lines


def run_table(groups: Sequence[Arm]) -> List[str]:
    """Per run: the best validation (phase, epoch), the test there, the learning-rate decays taken,
    whether it finished and its wall time in the session that finished it."""
    lines = ["## Runs", "", "| arm | run | seed | best valid (phase, epoch) | test (exact) | learning-rate decays | "
             "finished | wall time of the last session |", "|---|---|---|---|---|---|---|---|"]
    for arm in groups:
        for run in arm.runs:
            final = run.final
            best = (f"{final['best_valid_perplexity']:.2f} ({final.get('best_phase')}, {final.get('best_epoch')})"
                    if final.get("best_valid_perplexity") is not None else MISSING)
            test = (f"{final['test_perplexity']:.2f} ({final['exact_test_perplexity']:.2f})"
                    if final.get("test_perplexity") is not None else MISSING)
            seconds = final.get("wall_seconds_this_session")
            wall = MISSING if seconds is None else f"{seconds / 60:.0f} min"
            lines.append(f"| {arm.label} | {run.name} | {run.config.get('seed')} | {best} | {test} | "
                         f"{learning_rate_decays(run.rows)} | {'yes' if final else 'no'} | {wall} |")
    return lines


# ----- the figure -----
def _pyplot_free_figure():
    """matplotlib's Figure class with the Agg canvas, or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _phase_boundaries(rows: Sequence[Dict]) -> List[tuple]:
    """(x between the last epoch of a phase and the first of the next, the next phase, its depth)."""
    return [(index + 0.5, rows[index]["phase"], rows[index]["depth"]) for index in range(1, len(rows))
            if rows[index]["phase"] != rows[index - 1]["phase"]]


def _validation_curve(run: Run) -> List[float]:
    return [row["valid_perplexity"] for row in run.rows if row.get("valid_perplexity") is not None]


def _plot_arm(axis, arm: Arm) -> None:
    """The arm's mean validation perplexity per epoch and the band from its lowest to its highest
    seed, over the epochs every run has; the phase boundaries of its first run dotted."""
    curves = [_validation_curve(run) for run in arm.runs]
    length = min(len(curve) for curve in curves)
    epochs = list(range(1, length + 1))
    mean = [statistics.fmean(curve[index] for curve in curves) for index in range(length)]
    low = [min(curve[index] for curve in curves) for index in range(length)]
    high = [max(curve[index] for curve in curves) for index in range(length)]
    line, = axis.plot(epochs, mean, marker="o", markersize=3,
                      label=f"{arm.label}: mean of {len(curves)} seeds, band min-max")
    axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2)
    for position, phase, depth in _phase_boundaries(arm.runs[0].rows):
        axis.axvline(position, color=line.get_color(), linestyle=":", linewidth=1)
        axis.annotate(f"phase {phase} (depth {depth})", (position, 1.0), xycoords=("data", "axes fraction"),
                      rotation=90, va="top", ha="right", fontsize=7, color=line.get_color())


def plot_validation(runs: Sequence[Run], path: str) -> bool:
    """Validation perplexity per epoch (epochs counted across phases), on one axis: every run, or,
    when an arm has several seeds, every arm's mean and band; each phase boundary a dotted line in
    the curve's colour. Returns False without matplotlib."""
    classes = _pyplot_free_figure()
    if classes is None:
        return False
    figure_class, canvas_class = classes
    figure = figure_class(figsize=(8, 5), dpi=120)
    canvas_class(figure)
    axis = figure.add_subplot(1, 1, 1)
    groups = arms(runs)
    if any(len(arm.runs) > 1 for arm in groups):
        for arm in groups:
            _plot_arm(axis, arm)
        runs = []
    for run in runs:
        epochs = [index + 1 for index, row in enumerate(run.rows) if row.get("valid_perplexity") is not None]
        values = [row["valid_perplexity"] for row in run.rows if row.get("valid_perplexity") is not None]
        line, = axis.plot(epochs, values, marker="o", markersize=3, label=run.label)
        for position, phase, depth in _phase_boundaries(run.rows):
            axis.axvline(position, color=line.get_color(), linestyle=":", linewidth=1)
            axis.annotate(f"phase {phase} (depth {depth})", (position, 1.0), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=7, color=line.get_color())
    axis.set_xlabel("epoch (counted across phases)")
    axis.set_ylabel("validation perplexity")
    axis.set_title("Validation perplexity per epoch")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return True


# ----- the report -----
def write_report(run_dirs: Sequence[str], out_dir: str, table_name: str = TABLE_FILE,
                 figure_name: str = FIGURE_FILE) -> Dict[str, Optional[str]]:
    """Writes the table (and the figure when matplotlib is there) into `out_dir`; returns their paths."""
    if not run_dirs:
        raise ReportError("Name at least one run folder.")
    runs = [read_run(path) for path in run_dirs]
    os.makedirs(out_dir, exist_ok=True)
    figure_path = os.path.join(out_dir, figure_name)
    has_figure = plot_validation(runs, figure_path)
    text = markdown_table(runs)
    text += f"\n![validation perplexity per epoch]({figure_name})\n" if has_figure else f"\n{NO_FIGURE_NOTE}\n"
    table_path = os.path.join(out_dir, table_name)
    with open(table_path, "w", encoding="utf-8") as handle:
        handle.write(text)
    if not has_figure:
        logging.warning(NO_FIGURE_NOTE)
    return dict(table=table_path, figure=figure_path if has_figure else None,
                note=None if has_figure else NO_FIGURE_NOTE)
