"""The synthetic run: the train step changes what it should, errors count broken predictions as
wrong, divergence follows the package's one rule, and a diverged run says so in strict JSON."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.synthetic import run
from gradual_rnn.synthetic import tasks
from gradual_rnn.synthetic.config import SyntheticConfig
from gradual_rnn.train import progress


def _one_step(config, batch_size=4):
    task = tasks.get_task(config.task)
    model = run.SequenceModel(config, task)
    step = run.make_sequence_train_step(model, run.make_sequence_optimizer(config), task, config)
    before = [v.numpy().copy() for v in model.trainable_variables]
    inputs, targets = tasks.batch(task, 0, 0, batch_size, config.length)
    metrics = step(tf.constant(inputs), tf.constant(targets), tf.constant([0, 1]))
    return metrics, before, model.trainable_variables


def test_train_step_with_sampling_skip_changes_nothing():
    config = SyntheticConfig(task="adding", length=10, hidden_size=8, sampling=True,
                             q_min=50.0, q_max=60.0, max_abs_ds=0.0, clip=1.0, omega=1.0)
    metrics, before, after = _one_step(config)
    assert float(metrics["used"]) == 0.0
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new.numpy())
    assert {"q_factor", "omega", "ds", "gradient_norm/unit_1", "gradient_norm/readout"} <= set(metrics)


def test_lstm_step_with_h_detach_and_l1_updates_every_layer():
    config = SyntheticConfig(task="temporal_order", length=10, unit="lstm", hidden_size=6, num_layers=2,
                             init_scale=0.1, h_detach=0.5, l1=0.01, optimizer="nesterov", clip=1.0)
    metrics, before, after = _one_step(config)
    assert float(metrics["used"]) == 1.0 and "q_factor" not in metrics
    assert {"gradient_norm/unit_1", "gradient_norm/unit_2", "gradient_norm/readout"} <= set(metrics)
    assert all(not np.array_equal(old, new.numpy()) for old, new in zip(before, after))


def test_non_finite_predictions_count_as_wrong():
    nan = float("nan")
    adding, order, copying = (tasks.get_task(name) for name in ("adding", "temporal_order", "copying"))
    assert run.error_rate(adding, np.array([[0.5], [nan]]), np.array([[0.5], [0.5]])) == 0.5
    assert run.error_rate(order, np.array([[1.0, 0, 0, 0], [nan, 0, 0, 0]]), np.array([0, 0])) == 0.5
    logits = np.zeros((1, 30, 10))
    logits[0, -10:, 3] = 1.0
    logits[0, -1, 0] = nan
    assert run.error_rate(copying, logits, np.full((1, 30), 3)) == 0.1


def test_a_diverged_run_stops_and_reports_null_in_strict_json():
    config = SyntheticConfig(task="adding", length=10, hidden_size=8, learning_rate=1e30, steps=6,
                             eval_every=3, valid_size=10, test_size=10)
    result = run.run(config)
    assert result["diverged"] and result["diverged_at_step"] == result["steps"] < 6
    assert result["test_error"] is None and result["accuracy"] is None and not result["success"]
    summary = run.summarize([result])
    assert summary["diverged"] == 1 and summary["mean_accuracy"] is None
    assert json.loads(run.to_json(dict(summary, runs=[result])))["runs"][0]["diverged"] is True


def _metrics(loss, gradient_norm=1.0):
    """A train step's metrics as the run reads them (float32 scalars)."""
    return {"loss": tf.constant(loss, tf.float32), "gradient_norm": tf.constant(gradient_norm, tf.float32)}


def test_uniform_guess_loss():
    assert run.uniform_guess_loss(tasks.get_task("adding")) == 1.0  # squared error of guessing 0
    assert run.uniform_guess_loss(tasks.get_task("temporal_order")) == pytest.approx(math.log(4))
    assert run.uniform_guess_loss(tasks.get_task("temporal_order_3bit")) == pytest.approx(math.log(8))
    assert run.uniform_guess_loss(tasks.get_task("copying")) == pytest.approx(math.log(10))


@pytest.mark.parametrize("name", ["adding", "temporal_order", "copying"])
def test_divergence_follows_the_package_rule(name):
    """Diverged: a non-finite gradient norm, or a loss that is not finite or above the uniform guess's
    by more than log(100). A loss of 1.5e31 is finite, and diverged (the CLI once said it was not)."""
    task = tasks.get_task(name)
    assert progress.DIVERGENCE_FACTOR == 100.0
    bound = run.uniform_guess_loss(task) + math.log(100.0)
    below, above = np.nextafter(np.float32(bound), np.float32(0)), np.nextafter(np.float32(bound), np.float32(10))
    assert not run.has_diverged(_metrics(below), task)
    assert run.has_diverged(_metrics(above), task)
    assert run.has_diverged(_metrics(1.5e31), task)
    assert run.has_diverged({"loss": 1.5e31, "gradient_norm": 0.5}, task)
    for broken in (math.nan, math.inf):
        assert run.has_diverged(_metrics(broken), task)
        assert run.has_diverged(_metrics(0.1, gradient_norm=broken), task)
    assert not run.has_diverged(_metrics(0.0), task) and not run.has_diverged(_metrics(bound - 1.0), task)


@pytest.mark.parametrize("loss", [0.5, 5.9, 6.0, 6.1, 40.0, 1.5e31, math.inf, math.nan])
def test_divergence_of_a_softmax_task_is_the_trainer_rule_on_its_perplexity(loss):
    """For a softmax output the loss is a cross-entropy: `progress.diverged` of its perplexity, with
    the classes as the vocabulary, says the same (log(4) + log(100) = 5.99)."""
    task = tasks.get_task("temporal_order")
    expected = progress.diverged(progress.perplexity(loss, 1.0), task.output_size)
    assert run.has_diverged({"loss": loss, "gradient_norm": 1.0}, task) is expected


def test_a_run_stops_at_a_huge_finite_loss(monkeypatch):
    """The run loop applies the rule: a finite loss of 1.5e31 at step 2 stops the run there."""
    make_step = run.make_sequence_train_step

    def with_a_huge_loss_at_step_2(*arguments):
        step = make_step(*arguments)

        def stepped(inputs, targets, seed):
            metrics = dict(step(inputs, targets, seed))
            if int(seed[1]) == 2:
                metrics["loss"] = tf.constant(1.5e31, tf.float32)
            return metrics
        return stepped

    monkeypatch.setattr(run, "make_sequence_train_step", with_a_huge_loss_at_step_2)
    config = SyntheticConfig(task="temporal_order", length=10, hidden_size=8, steps=6, eval_every=3,
                             valid_size=10, test_size=10)
    result = run.run(config)
    assert result["diverged"] is True and result["diverged_at_step"] == result["steps"] == 2
    assert json.loads(run.to_json(result))["diverged"] is True


def test_json_lines_never_hold_bare_non_finite_numbers():
    line = run.to_json({"loss": float("nan"), "norms": [1.5, float("inf")], "inner": {"x": -float("inf")}})
    assert json.loads(line) == {"loss": None, "norms": [1.5, None], "inner": {"x": None}}
