"""One epoch and the run's edges a researcher meets in the first hour: progress lines with ETAs and train.log,
per-window TensorBoard scalars, speed that counts only training time across resumes, a config that
a failed start does not lock, max_epochs raised on a finished run, and max_grad_norm=inf."""
import dataclasses
import glob
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import loop, steps
from gradual_rnn.train.models import build_model
from gradual_rnn.train.run_folder import RunFolder, RunFolderError
from train.tiny import run_tiny as _run
from train.tiny import tiny_config


@pytest.mark.slow
def test_progress_lines_have_etas_and_go_to_train_log(tmp_path, tiny_corpus, caplog):
    caplog.set_level(logging.INFO, logger="absl")  # earlier tests may have lowered absl's verbosity
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1)
    _run(tmp_path, tiny_corpus, config, "run", progress_every_seconds=3600, summary_every_windows=10,
         windows_per_call=1)
    lines = [record.getMessage() for record in caplog.records if "ETA epoch" in record.getMessage()]
    # The session's first window, the first window with a measured speed, and the last window of
    # each epoch (every 3600 s otherwise).
    assert lines[0].startswith("phase 1/2 epoch 1/1: window 1/115 (0%), elapsed 0:00:")
    assert "ETA epoch (measuring) phase (measuring) run (measuring)" in lines[0]
    assert "ETA epoch 0:0" in lines[1] and " phase 0:0" in lines[1] and " run 0:0" in lines[1]
    assert any(line.startswith("phase 2/2 epoch 1/1: window 115/115 (100%)") for line in lines)
    assert len(lines) == 4
    log = (tmp_path / "run" / "train.log").read_text()
    assert "phase 2/2 epoch 1/1: window 115/115 (100%)" in log and "Finished tiny" in log
    assert "Sharding callback" not in log


def _scalar_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_tensorboard_gets_per_window_scalars(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1)
    _run(tmp_path, short_corpus, config, "run", summary_every_windows=10)
    tags = _scalar_tags(str(tmp_path / "run" / "tensorboard"))
    assert {"train/window_cost", "train/gradient_norm_before_clipping", "train/learning_rate",
            "train/words_per_second", "head_2/valid_perplexity"} <= tags


@pytest.mark.slow
def test_speed_counts_timed_windows_across_resumes(tmp_path, tiny_corpus):
    """Each session's first call compiles the step and is not a speed sample: a run stopped
    after 7 windows and resumed, one window a call, times 115 - 2 windows of its epoch."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    with pytest.raises(loop.Interrupted):
        _run(tmp_path, tiny_corpus, config, "run", stop_after_windows=7, windows_per_call=1)
    _run(tmp_path, tiny_corpus, config, "run", windows_per_call=1)
    folder = RunFolder(str(tmp_path / "run"))
    prefix = [p for p in folder.complete() if folder.read_progress(p).rows][0]
    progress = folder.read_progress(prefix)
    assert progress.epoch_timed_tokens == (115 - 2) * 4 * 5
    assert progress.rows[0]["words_per_second"] == pytest.approx(
        progress.epoch_timed_tokens / progress.epoch_timed_seconds)


@pytest.mark.slow
def test_a_run_that_wrote_no_checkpoint_does_not_lock_its_config(tmp_path, short_corpus, monkeypatch):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1)

    def failing_factory(*args, **kwargs):
        raise RuntimeError("the step could not be built")

    monkeypatch.setattr(steps, "make_train_step", failing_factory)
    with pytest.raises(RuntimeError):
        _run(tmp_path, short_corpus, config, "run")
    monkeypatch.undo()
    corrected = dataclasses.replace(config, hidden_size=9)
    assert _run(tmp_path, short_corpus, corrected, "run")["test_perplexity"] > 1


@pytest.mark.slow
def test_max_epochs_raised_on_a_finished_run_extends_the_last_phase(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1)
    first = _run(tmp_path, short_corpus, config, "run")
    longer = dataclasses.replace(config, max_epochs=2)
    extended = _run(tmp_path, short_corpus, longer, "run")
    assert [(row["phase"], row["epoch"]) for row in extended["rows"]] == [(1, 1), (2, 1), (2, 2)]
    assert extended["rows"][:2] == first["rows"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_epochs"] == 2
    straight = _run(tmp_path, short_corpus, longer, "straight")
    assert [row["valid_perplexity"] for row in extended["rows"]] == [
        row["valid_perplexity"] for row in straight["rows"]]
    with pytest.raises(RunFolderError, match=r"another config \(hidden_size: saved 8 now 9, "):
        _run(tmp_path, short_corpus, dataclasses.replace(longer, hidden_size=9, max_epochs=3), "run")


def _weights_after_windows(config, inputs, targets):
    """(the window costs, the model's weights) after training `inputs`/`targets` (`[windows, batch,
    steps]`) window by window, the state carried."""
    model, optimizer = build_model(config), steps.make_optimizer(config)
    step = steps.make_train_step(model, optimizer, config, DropoutPlan.for_depth(config, config.num_layers),
                                 config.num_layers)
    state, costs = model.initial_state(config.batch_size), []
    for index in range(len(inputs)):
        cost, state, _ = step.one(tf.constant(inputs[index]), tf.constant(targets[index]), state,
                                  tf.constant([1, 0, index], tf.int64), None)
        costs.append(float(cost))
    return np.array(costs), [weight.numpy() for weight in model.weights]


def test_max_grad_norm_inf_means_no_clipping(tiny_corpus):
    """inf trains (no NaN from inf/inf) and equals a threshold no gradient reaches: the same costs
    and weights, bit for bit, over 30 windows at a learning rate whose gradients clipping at 1 would cut."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    inputs, targets = (array[:30] for array in ptb.window_arrays(tiny_corpus.train, config.batch_size,
                                                                  config.num_steps))
    unclipped = _weights_after_windows(dataclasses.replace(config, max_grad_norm=float("inf")), inputs, targets)
    huge = _weights_after_windows(dataclasses.replace(config, max_grad_norm=1e30), inputs, targets)
    clipped = _weights_after_windows(dataclasses.replace(config, max_grad_norm=1.0), inputs, targets)
    assert np.isfinite(unclipped[0]).all()
    np.testing.assert_array_equal(unclipped[0], huge[0])
    for a, b in zip(unclipped[1], huge[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(unclipped[0], clipped[0])  # the threshold matters where it is reached
    assert configs.override(config, {"max_grad_norm": "inf"}).max_grad_norm == float("inf")


@pytest.mark.parametrize("field, value", [("learning_rate", "inf"), ("learning_rate", "nan"),
                                          ("init_scale", "inf"), ("momentum", "nan")])
def test_non_finite_values_are_refused(field, value):
    with pytest.raises(configs.ConfigError, match=f"{field} must be a"):
        configs.override(tiny_config(), {field: value})


def test_divergence_before_any_checkpoint_says_so(tmp_path, tiny_corpus, monkeypatch):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    real_factory = steps.make_train_step

    def nan_factory(*args, **kwargs):
        real_step = real_factory(*args, **kwargs)
        return steps.TrainStep(lambda *step_args: (tf.constant(float("nan")),) + tuple(real_step.one(*step_args)[1:]))

    monkeypatch.setattr(steps, "make_train_step", nan_factory)
    with pytest.raises(loop.TrainingDiverged, match=r"became nan in phase 1, epoch 1, window 0; no "
                                                    r"checkpoint was written yet in .*checkpoints"):
        _run(tmp_path, tiny_corpus, config, "run")


@pytest.mark.slow
def test_speed_leaves_out_the_first_call_of_each_compiled_function(tmp_path, tiny_corpus):
    """Calls of 16 windows cut to 1 before every checkpoint (every 17 windows): the first call of
    the K-window function and the first of the one-window function both compile, and neither is a
    speed sample; every other window is."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    records = []
    _run(tmp_path, tiny_corpus, config, "run", windows_per_call=16, checkpoint_every_windows=17,
         window_observer=records.append)
    sizes = [record.call_size for record in records if record.call_offset == 0]
    assert sizes[:4] == [16, 1, 16, 1]
    folder = RunFolder(str(tmp_path / "run"))
    progress = [folder.read_progress(p) for p in folder.complete() if folder.read_progress(p).rows][0]
    assert progress.epoch_timed_tokens == (115 - 16 - 1) * 4 * 5
