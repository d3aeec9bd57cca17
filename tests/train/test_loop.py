"""The phase loop: the best-validation test rule across phases, the plateau rule in the trainer,
resume to the bit, the config guard, a diverged run, and the results file."""
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import checkpoint, loop, progress, steps
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train.context import Interrupted, RunOptions, TrainingDiverged
from gradual_rnn.train.run_folder import RunFolder, RunFolderError
from train.tiny import final_weights, run_tiny, tiny_config


def _scripted_run(tmp_path, tiny_corpus, config, valid_values, monkeypatch):
    """Runs the trainer with validation perplexities taken from a script; records test calls."""
    values, scored, tested = iter(valid_values), [], []
    monkeypatch.setattr(evaluation.Evaluator, "valid", lambda self: scored.append(1) or next(values))
    monkeypatch.setattr(evaluation.Evaluator, "test", lambda self: tested.append(len(scored)) or (1.0, 1.0))
    options = RunOptions(data_dir="", save_path=str(tmp_path / "run"))
    results = loop.train(config, options, tiny_corpus)
    rows = results["rows"]  # a test after validation number k scored the weights of row k
    return results, [(rows[k - 1]["phase"], rows[k - 1]["epoch"]) for k in tested]


@pytest.mark.slow
def test_best_validation_rule_spans_phases(tmp_path, short_corpus, monkeypatch):
    config = tiny_config(vocab_size=short_corpus.vocab_size, gradual=True, layer_epochs=3, max_epochs=3,
                         learning_rate_schedule="plateau", test_rule="at_best_valid")
    # Phase 1: 500, 400, 450 -> tests at (1,1), (1,2). Phase 2: 420 is not below the global 400,
    # 390 is -> test at (2,2); 395 not.
    results, tests = _scripted_run(tmp_path, short_corpus, config, [500, 400, 450, 420, 390, 395], monkeypatch)
    assert tests == [(1, 1), (1, 2), (2, 2)]
    assert (results["best_phase"], results["best_epoch"], results["best_valid_perplexity"]) == (2, 2, 390)
    rates = [row["learning_rate"] for row in results["rows"]]
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.slow
def test_best_validation_reset_per_phase_option(tmp_path, short_corpus, monkeypatch):
    config = tiny_config(vocab_size=short_corpus.vocab_size, gradual=True, layer_epochs=2, max_epochs=2,
                         learning_rate_schedule="plateau", test_rule="at_best_valid",
                         best_valid_across_phases=False)
    _, tests = _scripted_run(tmp_path, short_corpus, config, [500, 400, 450, 420], monkeypatch)
    assert tests == [(1, 1), (1, 2), (2, 1), (2, 2)]


@pytest.mark.slow
def test_plateau_decay_inside_the_trainer(tmp_path, short_corpus, monkeypatch):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=5, learning_rate_schedule="plateau",
                         learning_rate_decay=0.5)
    results, _ = _scripted_run(tmp_path, short_corpus, config, [300, 200, 210, 220, 100], monkeypatch)
    assert [row["learning_rate"] for row in results["rows"]] == [1.0, 1.0, 1.0, 0.5, 0.25]


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_numbers(tmp_path, tiny_corpus, caplog):
    """Stopping mid-epoch in phase 2 (130 windows, inside a call of 16 windows; Nesterov momentum,
    h-detach, variational masks) then resuming gives the perplexities and weights of a run of one
    window a call, bit for bit: seeds are derived from (phase, epoch, window) and the carried state,
    masks, LR, history and optimizer slots (momentum) are checkpointed. A SIGKILL is resumed by
    tests/test_cli.py (phase 2) and, across two workers, by test_multiworker.py (phase 1)."""
    stop_after = 130
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1,
                         dropout_style="variational", keep_prob_embed=0.8,
                         keep_output=configs.uniform_table(2, 0.7), keep_state=configs.uniform_table(2, 0.8),
                         optimizer="nesterov", momentum=0.9, h_detach=0.3)
    assert ptb.epoch_size(len(tiny_corpus.train), 4, 5) == 115
    straight = run_tiny(tmp_path, tiny_corpus, config, "straight", windows_per_call=1)
    # 16 windows a call: phase 2 starts at window 115, so the stop cuts its first call at 15 windows.
    with pytest.raises(Interrupted):
        run_tiny(tmp_path, tiny_corpus, config, "resumed", stop_after_windows=stop_after, windows_per_call=16)
    caplog.set_level("INFO", logger="absl")
    resumed = run_tiny(tmp_path, tiny_corpus, config, "resumed", windows_per_call=16)
    assert "phase 2 of 2, epoch 1, window 15 run next" in caplog.text  # the restore says what runs next
    for key in ("test_perplexity", "exact_test_perplexity", "best_valid_perplexity"):
        assert resumed[key] == straight[key]
    caplog.clear()
    assert run_tiny(tmp_path, tiny_corpus, config, "resumed") == resumed  # finished: the same results
    assert ": the run has finished." in caplog.text and "phase 3" not in caplog.text
    assert [r["train_perplexity"] for r in resumed["rows"]] == [r["train_perplexity"] for r in straight["rows"]]
    a, b = final_weights(tmp_path, "straight"), final_weights(tmp_path, "resumed")
    model_keys = [key for key in a if key.startswith("model/")]
    assert len(model_keys) == 9
    for key in model_keys:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_changed_config_is_refused(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1)
    run_tiny(tmp_path, short_corpus, config, "run")
    with pytest.raises(RunFolderError, match=r"another config \(hidden_size: saved 8 now 9\)"):
        run_tiny(tmp_path, short_corpus, dataclasses.replace(config, hidden_size=9), "run")


def test_save_path_that_is_a_file_is_refused(tmp_path, tiny_corpus):
    (tmp_path / "file").write_text("x")
    config = tiny_config(vocab_size=tiny_corpus.vocab_size)
    with pytest.raises(RunFolderError, match="exists and is not a directory"):
        loop.train(config, RunOptions("", str(tmp_path / "file")), tiny_corpus)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_corpus, monkeypatch):
    """The real step, made to report NaN at its 6th window: the run stops with the phase, epoch and
    window in the message, and the checkpoint of window 4 (every 2 windows) is what remains."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=3)
    real_factory = steps.make_train_step

    def failing_factory(*args, **kwargs):
        real_step, calls = real_factory(*args, **kwargs), []

        def one(*step_args):
            calls.append(1)
            cost, state, norm = real_step.one(*step_args)
            return (tf.constant(np.nan) if len(calls) == 6 else cost), state, norm

        return steps.TrainStep(one)

    monkeypatch.setattr(steps, "make_train_step", failing_factory)
    with pytest.raises(TrainingDiverged, match=r"became nan in phase 1, epoch 1, window 5; the last good"):
        run_tiny(tmp_path, tiny_corpus, config, "diverge", checkpoint_every_windows=2)
    restored = checkpoint.CheckpointStore(RunFolder(str(tmp_path / "diverge")), config).restore()
    progress, arrays = restored.progress, checkpoint.read_tensors(restored.prefix)
    assert (progress.phase, progress.epoch, progress.window) == (1, 0, 4)
    assert all(np.all(np.isfinite(value)) for value in arrays.values() if value.dtype.kind == "f")


@pytest.mark.slow
def test_results_json_and_tensorboard_written(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1)
    results = run_tiny(tmp_path, short_corpus, config, "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_perplexity"] == results["test_perplexity"]
    assert [(row["phase"], row["depth"], row["epoch"]) for row in saved["rows"]] == [(1, 1, 1), (2, 2, 1)]
    assert os.listdir(tmp_path / "run" / "tensorboard")
    # Faithful B=1, n=1 test scores every token, so it equals the exact evaluation.
    assert results["test_perplexity"] == pytest.approx(results["exact_test_perplexity"], rel=1e-9)


# ----- nothing made up: a diverged run fails and writes no results -----
@pytest.mark.parametrize("changes, value", [(dict(init_scale=100.0), r"5\.51011e\+63"),
                                            (dict(init_scale=1e30), "(nan|inf)")])
def test_a_perplexity_beyond_the_bound_stops_the_run_before_any_results(tmp_path, tiny_corpus, changes, value):
    """A finite perplexity far above the vocabulary's (init_scale 100) and a non-finite one (init_scale
    1e30): the run stops at its first window, writes no results, and the TensorBoard file of a session
    that wrote no checkpoint is removed."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1, **changes)
    with pytest.raises(TrainingDiverged, match=rf"training perplexity became {value}.* in phase 1, epoch 1, "
                                               r"window 0; no checkpoint was written yet .*above 100 x the "
                                               r"vocabulary size"):
        run_tiny(tmp_path, tiny_corpus, config, "run", windows_per_call=1)
    folder = RunFolder(str(tmp_path / "run"))
    assert not os.path.exists(folder.results_file) and not folder.complete()
    assert not os.path.isdir(folder.summaries) or not os.listdir(folder.summaries)


def test_a_validation_beyond_the_bound_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, short_corpus,
                                                                                    monkeypatch):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=3)
    values = iter([30.0, 1e9])
    monkeypatch.setattr(evaluation.Evaluator, "valid", lambda self: next(values))
    with pytest.raises(TrainingDiverged, match=r"validation perplexity became 1e\+09 after phase 1, epoch 2; "
                                               r"the last good checkpoint, ckpt-\d+ .* is kept"):
        run_tiny(tmp_path, short_corpus, config, "run")
    folder = RunFolder(str(tmp_path / "run"))
    assert not os.path.exists(folder.results_file)
    assert len(folder.read_progress(folder.complete()[-1]).rows) == 1


def test_no_best_validation_means_no_results(tmp_path, short_corpus, monkeypatch):
    """A GL-rule run whose validation never beats the rule's starting value (10000) has no test
    perplexity to report: it fails instead of reporting 10000 as its best validation."""
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1, test_rule="at_best_valid")
    monkeypatch.setattr(evaluation.Evaluator, "valid", lambda self: 20000.0)
    monkeypatch.setattr(progress, "DIVERGENCE_FACTOR", 1000.0)  # 41 words: 20000 is no divergence then
    with pytest.raises(TrainingDiverged, match="No epoch of the run scored a validation perplexity below"):
        run_tiny(tmp_path, short_corpus, dataclasses.replace(config, vocab_size=short_corpus.vocab_size), "run")


def test_results_are_strict_json(tmp_path):
    folder = RunFolder(str(tmp_path))
    with pytest.raises(ValueError):
        folder.write_results(dict(test_perplexity=float("inf")))
    assert not os.path.exists(folder.results_file)


# ----- a run resumes only on its own data -----
@pytest.mark.slow
def test_a_resume_on_other_data_is_refused_naming_what_differs(tmp_path, short_corpus, tiny_corpus_dir):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=2)
    with pytest.raises(Interrupted):
        run_tiny(tmp_path, short_corpus, config, "run", stop_after_windows=5, checkpoint_every_windows=5)
    smoke = dataclasses.replace(short_corpus, train=short_corpus.train[:400])
    with pytest.raises(RunFolderError, match=r"trained on other data \(fingerprint: saved .* smoke_test: saved "
                                             r"False now True, tokens: saved"):
        run_tiny(tmp_path, smoke, config, "run", smoke_test={"train": 400})
    with pytest.raises(RunFolderError, match=r"other data \(map_unknown_to_unk: saved False now True\)"):
        run_tiny(tmp_path, short_corpus, config, "run", map_unknown_to_unk=True)
    swapped = dataclasses.replace(short_corpus, valid=short_corpus.test, test=short_corpus.valid)
    with pytest.raises(RunFolderError, match=r"other data \(fingerprint: saved .*, tokens: saved"):
        run_tiny(tmp_path, swapped, config, "run")
    assert run_tiny(tmp_path, short_corpus, config, "run")["test_perplexity"] > 1  # its own data: resumes
    folder = RunFolder(str(tmp_path / "run"))
    assert folder.read_vocabulary() == short_corpus.words()


# ----- sidecars are range-checked -----
@pytest.mark.slow
def test_an_edited_sidecar_is_set_aside_and_the_one_before_used(tmp_path, tiny_corpus, caplog):
    """A newest sidecar edited to window=999999, or to an epoch its rows do not show: set aside with
    the reason logged, and the run resumes from the checkpoint before, to the same numbers. (A phase
    outside the run's is checked the same way: test_run_folder's sidecar checks.)"""
    import shutil

    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    with pytest.raises(Interrupted):
        run_tiny(tmp_path, tiny_corpus, config, "stopped", stop_after_windows=20, checkpoint_every_windows=10,
                 windows_per_call=1)
    straight = run_tiny(tmp_path, tiny_corpus, config, "straight")
    for index, (edit, problem) in enumerate([(dict(window=999999), "window 999999 is outside 0..114"),
                                             (dict(epoch=1), "epoch 1 does not follow its 0 finished epochs")]):
        shutil.copytree(tmp_path / "stopped", tmp_path / f"edited{index}")
        folder = RunFolder(str(tmp_path / f"edited{index}"))
        newest = folder.complete()[-1]
        payload = json.loads(open(folder.sidecar(newest)).read())
        payload["progress"].update(edit)
        open(folder.sidecar(newest), "w").write(json.dumps(payload))
        assert run_tiny(tmp_path, tiny_corpus, config, f"edited{index}")["test_perplexity"] == straight["test_perplexity"]
        assert problem in caplog.text and os.path.basename(newest) in folder.set_aside_names()
