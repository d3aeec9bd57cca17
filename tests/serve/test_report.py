"""The report of runs beside the published numbers: the table, the figure, and the table alone
when matplotlib is missing. Run folders are written by hand (config.json, results.json)."""
import json
import os
import subprocess
import sys

import pytest

from gradual_rnn import configs
from gradual_rnn.serve import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(folder, config, valid_by_phase, final=None):
    """A run folder: config.json, and results.json with one row per epoch (None: no results.json)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(config.to_json())
    rows = [dict(phase=phase, depth=phase if config.gradual else config.num_layers, epoch=epoch + 1,
                 learning_rate=1.0, train_perplexity=value * 0.8, valid_perplexity=value,
                 words_per_second=1000.0)
            for phase, values in enumerate(valid_by_phase, start=1) for epoch, value in enumerate(values)]
    if final is not None:
        with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as handle:
            json.dump(dict(final, rows=rows), handle)
    return str(folder), rows


@pytest.fixture
def runs(tmp_path):
    tiny = configs.override(configs.get_config("gl"), {"hidden_size": "8", "max_epochs": "2", "layer_epochs": "2"})
    gradual, _ = write_run(tmp_path / "gradual", tiny, [[300.0, 250.0], [240.0, 245.0]],
                           dict(best_valid_perplexity=240.0, best_phase=2, best_epoch=1, test_perplexity=230.5,
                                exact_test_perplexity=231.25))
    traditional, _ = write_run(tmp_path / "traditional", configs.override(tiny, {"gradual": "false"}),
                               [[310.0, 260.0, 255.0, 250.0]],
                               dict(best_valid_perplexity=250.0, best_phase=1, best_epoch=4, test_perplexity=241.0,
                                    exact_test_perplexity=241.0))
    return [gradual, traditional]


def test_table_holds_every_phase_and_head_beside_the_published_numbers(runs, tmp_path):
    written = report.write_report(runs, str(tmp_path / "out"))
    text = open(written["table"], encoding="utf-8").read()
    assert "| gradual | gl | measured | 1 | 1 | 2 | 200.00 | 250.00 | 250.00 (2) | — | results |" in text
    assert "| gradual | gl | measured | 2 | 2 | 2 | 196.00 | 245.00 | 240.00 (1) | — | results |" in text
    assert ("| gradual | gl | measured | all | 2 | 4 | — | — | 240.00 (phase 2, epoch 1) | 230.50 (exact 231.25) | "
            "results (test rule at_best_valid) |") in text
    assert "| traditional | gl | measured | 1 | 2 | 4 | 200.00 | 250.00 | 250.00 (4) | — | results |" in text
    published = "| — | gl | published | all | 2 | — | — | — | — | 67.8 | GL paper (Aharoni et al. 2017), Table 1"
    assert text.count(published) == 2
    assert "| 66.7 | GL code (2017), docstring of the config |" in text
    assert "- traditional: differs from the registered `gl` config (which the published numbers are for) in " \
           "gradual=false, hidden_size=8, layer_epochs=2, max_epochs=2." in text


def test_tutorial_configs_get_the_tutorials_train_valid_test(tmp_path):
    folder, _ = write_run(tmp_path / "small", configs.get_config("small"), [[130.0]],
                          dict(best_valid_perplexity=130.0, best_phase=1, best_epoch=1, test_perplexity=125.0,
                               exact_test_perplexity=125.0, train_perplexity=104.0, valid_perplexity=130.0))
    text = open(report.write_report([folder], str(tmp_path / "out"))["table"], encoding="utf-8").read()
    assert ("| — | small | published | all | 2 | — | 37.99 | 121.39 | — | 115.91 | TF tutorial ptb_word_lm.py "
            "docstring (Zaremba et al. 2014) |") in text
    assert "differs from the registered" not in text


def test_figure_is_a_png(runs, tmp_path):
    pytest.importorskip("matplotlib")
    written = report.write_report(runs, str(tmp_path / "out"))
    with open(written["figure"], "rb") as handle:
        content = handle.read()
    assert content.startswith(PNG_SIGNATURE) and len(content) > 1000
    assert f"![validation perplexity per epoch]({report.FIGURE_FILE})" in open(written["table"]).read()


def test_without_matplotlib_the_table_says_how_to_get_the_figure(runs, tmp_path, monkeypatch):
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = report.write_report(runs, str(tmp_path / "out"))
    assert written["figure"] is None and written["note"] == report.NO_FIGURE_NOTE
    assert not os.path.exists(tmp_path / "out" / report.FIGURE_FILE)
    text = open(written["table"], encoding="utf-8").read()
    assert "pip install gradual_rnn[plot]" in text and "| gradual | gl | measured | 1 |" in text


def test_an_unfinished_run_is_read_from_its_newest_checkpoint(tmp_path):
    config = configs.get_config("small")
    folder, rows = write_run(tmp_path / "running", config, [[400.0, 300.0]])
    os.makedirs(os.path.join(folder, "checkpoints"))
    for number, count in ((3, 1), (12, 2)):
        with open(os.path.join(folder, "checkpoints", f"ckpt-{number}.progress.json"), "w") as handle:
            json.dump(dict(progress=dict(rows=rows[:count]), config={}), handle)
        open(os.path.join(folder, "checkpoints", f"ckpt-{number}.index"), "w").close()
    run = report.read_run(folder)
    assert run.rows == rows and run.final == {}
    whole_run = "| running | small | measured | all | — | 2 | — | — | — | — | unfinished (newest checkpoint)"
    assert whole_run in report.markdown_table([run])


def test_bad_run_folders_are_named(tmp_path):
    with pytest.raises(report.ReportError, match="--save_path .*missing is not a folder of a training run"):
        report.read_run(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ReportError, match="empty has no config.json"):
        report.read_run(str(tmp_path / "empty"))


def test_command_line(runs, tmp_path):
    out = str(tmp_path / "cli")
    result = subprocess.run([sys.executable, "-m", "gradual_rnn", "report", *runs, "--out", out],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["table"] == os.path.join(out, report.TABLE_FILE)
    failed = subprocess.run([sys.executable, "-m", "gradual_rnn", "report", str(tmp_path / "missing")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("ReportError: --save_path ")


def _seed_run(folder, config, seed, valid, test, smoke=False):
    rows = [dict(phase=1, depth=config.num_layers, epoch=epoch + 1, learning_rate=rate,
                 train_perplexity=value, valid_perplexity=value, words_per_second=1.0)
            for epoch, (value, rate) in enumerate(zip(valid, [1.0, 1.0, 0.85][:len(valid)]))]
    best = min(range(len(valid)), key=valid.__getitem__)
    final = dict(best_valid_perplexity=valid[best], best_phase=1, best_epoch=best + 1, test_perplexity=test,
                 exact_test_perplexity=test, rows=rows, wall_seconds_this_session=600.0)
    if smoke:
        final["smoke_test"] = dict(train=20000, valid=4000, test=2000)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as handle:
        handle.write(configs.override(config, {"seed": str(seed)}).to_json())
    with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(final, handle)
    return str(folder)


def test_seeds_of_one_config_form_an_arm_with_mean_and_spread(tmp_path):
    pytest.importorskip("matplotlib")
    base = configs.override(configs.get_config("gl"), {"hidden_size": "8", "gradual": "false", "max_epochs": "3"})
    folders = [_seed_run(tmp_path / f"seed{seed}", base, seed, valid, test)
               for seed, valid, test in ((1, [300.0, 200.0, 210.0], 190.0), (2, [310.0, 220.0, 230.0], 210.0))]
    written = report.write_report(folders, str(tmp_path / "out"))
    text = open(written["table"], encoding="utf-8").read()
    # best valid 200 and 220: mean 210, sample sd 14.14; test 190 and 210: mean 200 ± 14.14.
    assert "| gl, traditional | 2 of 2 | 1, 2 | 210.00 ± 14.14 | 200.00 ± 14.14 | 200.00 ± 14.14 |" in text
    assert "| gl, traditional | seed1 | 1 | 200.00 (1, 2) | 190.00 (190.00) | 1 | yes | 10 min |" in text
    assert open(written["figure"], "rb").read().startswith(PNG_SIGNATURE)
    assert [len(arm.runs) for arm in report.arms([report.read_run(folder) for folder in folders])] == [2]


def test_a_smoke_test_is_marked(tmp_path):
    folder = _seed_run(tmp_path / "smoke", configs.get_config("small"), 1, [500.0], 480.0, smoke=True)
    text = report.markdown_table([report.read_run(folder)])
    assert "| smoke | small | measured, smoke test | all |" in text
