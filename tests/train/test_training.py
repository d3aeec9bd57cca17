"""The training rules: LR schedules, the best-validation test rule, phases, one step, resume."""
import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn import phases
from gradual_rnn.data import ptb
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.nn import language_model as lm
from gradual_rnn.train import checkpoint as checkpoints
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train import loop as trainer
from gradual_rnn.train import schedules
from gradual_rnn.train import steps


def tiny_config(**changes):
    base = configs.Config(name="tiny", num_layers=2, hidden_size=8, num_steps=5, batch_size=4,
                          vocab_size=41, init_scale=0.1, max_epochs=2, full_lr_epochs=1,
                          test_num_steps=1, seed=7)
    return dataclasses.replace(base, **changes)


@pytest.fixture
def tiny_corpus(tiny_corpus_dir):
    return ptb.load_corpus(tiny_corpus_dir)


def test_tutorial_schedule_small_matches_zaremba():
    config = configs.get_config("small")
    rates = [schedules.tutorial_learning_rate(config, epoch) for epoch in range(13)]
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625,
                     0.0078125, 0.00390625, 0.001953125]


def test_tutorial_schedule_large_decays_by_1_15_after_14_epochs():
    config = configs.get_config("large")
    assert schedules.tutorial_learning_rate(config, 13) == 1.0
    assert schedules.tutorial_learning_rate(config, 14) == pytest.approx(1 / 1.15)
    assert schedules.tutorial_learning_rate(config, 54) == pytest.approx(1.15 ** -41)


def test_plateau_schedule_on_scripted_validation():
    """GL rule: before each epoch, x0.85 when history > 2 entries and the last one rose."""
    config = configs.get_config("gl")
    valid = [300.0, 200.0, 210.0, 190.0, 195.0, 196.0, 150.0]
    rate, history, rates = None, [], []
    for epoch in range(len(valid)):
        rate = schedules.learning_rate_for_epoch(config, epoch, rate, history)
        rates.append(rate)
        history.append(valid[epoch])
    # Epoch 3 sees [300, 200, 210]: rose -> decay. Epoch 5 sees ..., 190, 195: decay. Epoch 6: 196 > 195.
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.85, 0.85, 0.85 ** 2, 0.85 ** 3])


def test_phases_of_deep_gl_lad():
    config = configs.get_config("deep_gl_lad")
    plan = phases.make_phases(config)
    assert [p.depth for p in plan] == [1, 2, 3, 4, 5]
    assert [p.epochs for p in plan] == [80] * 5
    assert plan[2].dropout.keep_output == (.5, .4, .25) and plan[2].dropout.keep_state == (.5, .5, .4)
    assert plan[2].dropout == dropout_lib.DropoutPlan.for_depth(config, 3)
    assert plan[4].trainable_layers == (0, 1, 2, 3, 4)
    assert [p.grows_model for p in plan] == [False, True, True, True, True]


def test_phases_without_gradual_and_with_freezing():
    assert [(p.depth, p.epochs) for p in phases.make_phases(configs.get_config("lad"))] == [(2, 160)]
    frozen = phases.make_phases(dataclasses.replace(configs.get_config("gl"), freeze_lower_layers=True))
    assert frozen[1].trainable_layers == (1,) and frozen[1].frozen_layers == (0,)
    small = configs.override(configs.get_config("small"), {"gradual": "true", "layer_epochs": "3"})
    assert [(p.depth, p.epochs) for p in phases.make_phases(small)] == [(1, 3), (2, 13)]


def test_window_cost_is_sum_over_time_mean_over_batch():
    logits = tf.random.stateless_normal([3, 4, 7], seed=[1, 2])
    targets = tf.constant(np.arange(12).reshape(3, 4) % 7, tf.int32)
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -sum(log_probs[b, t, targets[b, t]] for b in range(3) for t in range(4)) / 3
    assert float(steps.sequence_cost(logits, targets, 3)) == pytest.approx(expected, rel=1e-6)


def _one_step(config, model, depth):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    plan = dropout_lib.DropoutPlan.for_depth(config, depth)
    step = steps.make_train_step(model, optimizer, config, plan, depth)
    inputs = tf.constant(np.arange(20).reshape(4, 5) % config.vocab_size, tf.int32)
    masks = dropout_lib.sample_masks(config, plan, (1, 0, 0), 4)
    return step(inputs, inputs, (model.initial_state(4, depth), masks), tf.constant([1, 0, 0], tf.int64))


def test_one_step_changes_exactly_the_phase_variables():
    """Phase 2 of a 3-layer gradual run with the lower layer frozen: embedding, bias, layer 2 and
    the output bias change; layer 1 (frozen) and layer 3 (above the phase) do not."""
    config = tiny_config(num_layers=3, tied_weights=True, embedding_bias=True,
                         dropout_style="variational", keep_prob_embed=0.8,
                         keep_output=configs.uniform_table(3, 0.7),
                         keep_state=configs.uniform_table(3, 0.9), freeze_lower_layers=True)
    model = lm.build_model(config)
    lm.freeze(model, phases.make_phases(dataclasses.replace(config, gradual=True))[1].frozen_layers)
    before = {v.path: np.array(v) for v in model.weights}
    _one_step(config, model, depth=2)
    changed = {v.path for v in model.weights if not np.array_equal(before[v.path], np.array(v))}
    assert changed == {"embedding/embeddings", "embedding/input_bias", "head/output_bias",
                       "lstm_2/lstm/lstm_cell/kernel", "lstm_2/lstm/lstm_cell/recurrent_kernel",
                       "lstm_2/lstm/lstm_cell/bias"}


def test_clipping_bounds_the_applied_update():
    config = tiny_config(max_grad_norm=1e-3)
    model = lm.build_model(config)
    before = [np.array(v) for v in model.trainable_variables]
    _, _, gradient_norm = _one_step(config, model, depth=2)
    update = np.sqrt(sum(np.sum((np.array(v) - b) ** 2) for v, b in zip(model.trainable_variables, before)))
    assert float(gradient_norm) > 1e-3
    assert update == pytest.approx(1e-3, rel=1e-4)


def test_eval_step_equals_python_loop_over_windows(tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size)
    model = lm.build_model(config)
    inputs, targets = ptb.window_arrays(tiny_corpus.valid, 4, 5)
    evaluate = evaluation.make_eval_step(model, 2)
    nll, count, _ = evaluate(tf.constant(inputs), tf.constant(targets),
                             tf.ones(inputs.shape), model.initial_state(4))
    state, total = model.initial_state(4), 0.0
    for x, y in zip(inputs, targets):
        logits, state = model(tf.constant(x), state)
        total += float(steps.sequence_cost(logits, tf.constant(y), 4)) * 4
    assert float(count) == inputs.size
    assert float(nll) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("batch_size, num_steps", [(1, 1), (2, 3)])
def test_eval_step_chunks_equal_window_by_window(tiny_corpus, batch_size, num_steps):
    """Windows joined into long chunks give the window-by-window numbers, including the exact
    layout's zero-weighted padding and a tail of windows shorter than one chunk."""
    model = lm.build_model(tiny_config(vocab_size=tiny_corpus.vocab_size))
    exact = ptb.exact_windows(tiny_corpus.test, batch_size, num_steps)
    windows = exact.inputs.shape[0]
    chunk_tokens = 7 * batch_size * num_steps
    assert windows % 7 and windows > 7
    assert (exact.weights.sum() < exact.weights.size) == (batch_size > 1)  # padding at batch 2
    arguments = [tf.constant(array) for array in (exact.inputs, exact.targets, exact.weights)]
    window_by_window = evaluation.make_eval_step(model, 2, chunk_tokens=1)
    chunked = evaluation.make_eval_step(model, 2, chunk_tokens=chunk_tokens)
    expected = window_by_window(*arguments, model.initial_state(batch_size))
    actual = chunked(*arguments, model.initial_state(batch_size))
    assert float(actual[1]) == float(expected[1]) == exact.weights.sum()
    assert float(actual[0]) == pytest.approx(float(expected[0]), rel=1e-6)
    for mine, wanted in zip(tf.nest.flatten(actual[2]), tf.nest.flatten(expected[2])):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=0, atol=1e-6)


def test_merge_windows_joins_consecutive_windows_per_row():
    array = np.arange(5 * 2 * 3).reshape(5, 2, 3)  # [windows, batch, steps]
    merged = evaluation.merge_windows(tf.constant(array), 2).numpy()
    assert merged.shape == (2, 2, 6)
    np.testing.assert_array_equal(merged[1, 1], np.concatenate([array[2, 1], array[3, 1]]))


def _scripted_run(tmp_path, tiny_corpus, config, valid_values, monkeypatch):
    """Runs the trainer with validation perplexities taken from a script; records test calls."""
    values, scored, tested = iter(valid_values), [], []
    monkeypatch.setattr(evaluation.Evaluator, "valid", lambda self: scored.append(1) or next(values))
    monkeypatch.setattr(evaluation.Evaluator, "test", lambda self: tested.append(len(scored)) or (1.0, 1.0))
    options = trainer.RunOptions(data_dir="", save_path=str(tmp_path / "run"))
    results = trainer.train(config, options, tiny_corpus)
    rows = results["rows"]  # a test after validation number k scored the weights of row k
    return results, [(rows[k - 1]["phase"], rows[k - 1]["epoch"]) for k in tested]


@pytest.mark.slow
def test_best_validation_rule_spans_phases(tmp_path, tiny_corpus, monkeypatch):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=3, max_epochs=3,
                         learning_rate_schedule="plateau", test_rule="at_best_valid")
    # Phase 1: 500, 400, 450 -> tests at (1,1), (1,2). Phase 2: 420 is not below the global 400,
    # 390 is -> test at (2,2); 395 not.
    results, tests = _scripted_run(tmp_path, tiny_corpus, config, [500, 400, 450, 420, 390, 395], monkeypatch)
    assert tests == [(1, 1), (1, 2), (2, 2)]
    assert (results["best_phase"], results["best_epoch"], results["best_valid_perplexity"]) == (2, 2, 390)
    rates = [row["learning_rate"] for row in results["rows"]]
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.slow
def test_best_validation_reset_per_phase_option(tmp_path, tiny_corpus, monkeypatch):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=2, max_epochs=2,
                         learning_rate_schedule="plateau", test_rule="at_best_valid",
                         best_valid_across_phases=False)
    _, tests = _scripted_run(tmp_path, tiny_corpus, config, [500, 400, 450, 420], monkeypatch)
    assert tests == [(1, 1), (1, 2), (2, 1), (2, 2)]


@pytest.mark.slow
def test_plateau_decay_inside_the_trainer(tmp_path, tiny_corpus, monkeypatch):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=5, learning_rate_schedule="plateau",
                         learning_rate_decay=0.5)
    results, _ = _scripted_run(tmp_path, tiny_corpus, config, [300, 200, 210, 220, 100], monkeypatch)
    assert [row["learning_rate"] for row in results["rows"]] == [1.0, 1.0, 1.0, 0.5, 0.25]


def _run(tmp_path, corpus, config, name, **options):
    run_options = trainer.RunOptions(data_dir="", save_path=str(tmp_path / name), **options)
    return trainer.train(config, run_options, corpus)


def _final_weights(tmp_path, name):
    store = checkpoints.CheckpointStore(str(tmp_path / name), configs.Config.from_json(
        open(tmp_path / name / "config.json").read()))
    return checkpoints.read_tensors(store.restore().prefix)


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_numbers(tmp_path, tiny_corpus):
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
    straight = _run(tmp_path, tiny_corpus, config, "straight", windows_per_call=1)
    # 16 windows a call: phase 2 starts at window 115, so the stop cuts its first call at 15 windows.
    with pytest.raises(trainer.Interrupted):
        _run(tmp_path, tiny_corpus, config, "resumed", stop_after_windows=stop_after, windows_per_call=16)
    resumed = _run(tmp_path, tiny_corpus, config, "resumed", windows_per_call=16)
    for key in ("test_perplexity", "exact_test_perplexity", "best_valid_perplexity"):
        assert resumed[key] == straight[key]
    assert [r["train_perplexity"] for r in resumed["rows"]] == [r["train_perplexity"] for r in straight["rows"]]
    a, b = _final_weights(tmp_path, "straight"), _final_weights(tmp_path, "resumed")
    model_keys = [key for key in a if key.startswith("model/")]
    assert len(model_keys) == 9
    for key in model_keys:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_changed_config_is_refused(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    _run(tmp_path, tiny_corpus, config, "run")
    with pytest.raises(checkpoints.CheckpointError, match=r"another config \(hidden_size: saved 8 now 9\)"):
        _run(tmp_path, tiny_corpus, dataclasses.replace(config, hidden_size=9), "run")


def test_save_path_that_is_a_file_is_refused(tmp_path, tiny_corpus):
    (tmp_path / "file").write_text("x")
    config = tiny_config(vocab_size=tiny_corpus.vocab_size)
    with pytest.raises(checkpoints.CheckpointError, match="exists and is not a directory"):
        trainer.train(config, trainer.RunOptions("", str(tmp_path / "file")), tiny_corpus)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_corpus, monkeypatch):
    """The real step, made to report NaN at its 6th window: the run stops with the phase, epoch and
    window in the message, and the checkpoint of window 4 (every 2 windows) is what remains."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=3)
    real_factory = steps.make_train_step

    def failing_factory(*args, **kwargs):
        real_step, calls = real_factory(*args, **kwargs), []

        def step(*step_args):
            calls.append(1)
            cost, state, norm = real_step(*step_args)
            return (tf.constant(np.nan) if len(calls) == 6 else cost), state, norm

        return step

    monkeypatch.setattr(steps, "make_train_step", failing_factory)
    with pytest.raises(trainer.TrainingDiverged, match=r"became nan in phase 1, epoch 1, window 5; the last good"):
        _run(tmp_path, tiny_corpus, config, "diverge", checkpoint_every_windows=2)
    restored = checkpoints.CheckpointStore(str(tmp_path / "diverge"), config).restore()
    progress, arrays = restored.progress, checkpoints.read_tensors(restored.prefix)
    assert (progress.phase, progress.epoch, progress.window) == (1, 0, 4)
    assert all(np.all(np.isfinite(value)) for value in arrays.values() if value.dtype.kind == "f")


@pytest.mark.slow
def test_results_json_and_tensorboard_written(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1)
    results = _run(tmp_path, tiny_corpus, config, "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_perplexity"] == results["test_perplexity"]
    assert [(row["phase"], row["depth"], row["epoch"]) for row in saved["rows"]] == [(1, 1, 1), (2, 2, 1)]
    assert os.listdir(tmp_path / "run" / "tensorboard")
    # Faithful B=1, n=1 test scores every token, so it equals the exact evaluation.
    assert results["test_perplexity"] == pytest.approx(results["exact_test_perplexity"], rel=1e-9)


def test_h_detach_changes_gradients_not_values():
    config = tiny_config(h_detach=0.5, rnn_mode="basic")
    model = lm.build_model(config)
    inputs = tf.constant(np.arange(20).reshape(4, 5) % config.vocab_size, tf.int32)
    seed = dropout_lib.window_seed(config.seed, tf.constant([1, 0, 0]))
    detach = dropout_lib.detach_steps(config, seed, 2, 5)
    assert detach is not None and 0 < int(tf.reduce_sum(tf.cast(tf.stack(detach), tf.int32))) < 10

    def cost_and_gradient(detach_steps):
        with tf.GradientTape() as tape:
            logits, _ = model(inputs, model.initial_state(4), detach=detach_steps)
            cost = steps.sequence_cost(logits, inputs, 4)
        return float(cost), tape.gradient(cost, model.lstm_layers[0].recurrent_kernel)

    plain_cost, plain_gradient = cost_and_gradient(None)
    detached_cost, detached_gradient = cost_and_gradient(detach)
    assert detached_cost == plain_cost
    assert not np.allclose(np.asarray(plain_gradient), np.asarray(detached_gradient))


def test_nesterov_optimizer_from_config():
    optimizer = steps.make_optimizer(tiny_config(optimizer="nesterov", momentum=0.9))
    assert optimizer.nesterov and optimizer.momentum == 0.9
    with pytest.raises(configs.ConfigError, match="needs momentum > 0"):
        tiny_config(optimizer="nesterov")


def test_float16_step_scales_clips_and_skips_non_finite():
    """mixed_float16: Keras's dynamic loss scale (checkpointed with the optimizer) multiplies the
    cost, clipping and the reported norm are unscaled, a non-finite step is skipped and halves it."""
    config = tiny_config(vocab_size=41, precision="mixed_float16", max_grad_norm=0.5)
    reference = tiny_config(vocab_size=41, max_grad_norm=0.5)
    models = [lm.build_model(reference), lm.build_model(config)]
    optimizers = [steps.make_optimizer(reference), steps.make_optimizer(config)]
    assert isinstance(optimizers[1], keras.optimizers.LossScaleOptimizer)
    rng = np.random.RandomState(2)
    inputs, targets = (tf.constant(rng.randint(0, 41, (4, 5)).astype(np.int32)) for _ in range(2))
    results = []
    for model, optimizer, model_config in zip(models, optimizers, (reference, config)):
        step = steps.make_train_step(model, optimizer, model_config,
                                        dropout_lib.DropoutPlan.for_depth(model_config, 2), 2)
        cost, _, norm = step(inputs, targets, (model.initial_state(4), None), tf.constant([1, 0, 0], tf.int64))
        results.append((float(cost), float(norm), [w.numpy() for w in model.trainable_variables]))
    assert float(optimizers[1].dynamic_scale) == 2.0 ** 15
    assert any("dynamic_scale" in v.path for v in optimizers[1].variables)
    (cost, norm, weights), (cost16, norm16, weights16) = results
    assert norm > 0.5  # clipping was active
    assert cost16 == pytest.approx(cost, rel=1e-2) and norm16 == pytest.approx(norm, rel=1e-2)
    for expected, actual in zip(weights, weights16):
        np.testing.assert_allclose(actual, expected, atol=2e-3)
    # A window whose gradients overflow float16 at this scale: skipped, scale halved.
    optimizers[1].dynamic_scale.assign(1e30)
    before = [w.numpy() for w in models[1].trainable_variables]
    step(inputs, targets, (models[1].initial_state(4), None), tf.constant([1, 0, 1], tf.int64))
    assert float(optimizers[1].dynamic_scale) == pytest.approx(5e29)
    for previous, now in zip(before, models[1].trainable_variables):
        np.testing.assert_array_equal(now.numpy(), previous)


def test_activity_l1_adds_the_penalty_gradient_not_to_the_cost():
    """window_gradients with activity_l1 = λ: the cost is the cross-entropy alone, the gradients are
    those of cost + λ Σ_layers Σ|h| / batch, the outputs recomputed here layer by layer."""
    weight = 0.01
    plain_config, penalized_config = tiny_config(), tiny_config(activity_l1=weight)
    model = lm.build_model(plain_config)
    variables = model.trainable_variables
    inputs = tf.constant(np.arange(20).reshape(4, 5) % plain_config.vocab_size, tf.int32)
    targets = tf.roll(inputs, 1, axis=1)
    window = (inputs, targets, model.initial_state(4), None)
    seed = tf.constant([1, 2])
    cost, _, plain = steps.window_gradients(model, variables, plain_config, None, 2, seed, window, 4)
    penalized_cost, _, penalized = steps.window_gradients(model, variables, penalized_config, None, 2,
                                                             seed, window, 4)
    assert float(penalized_cost) == float(cost)
    with tf.GradientTape() as tape:
        outputs, penalty = model.embedding(inputs), 0.0
        for index, layer in enumerate(model.lstm_layers):
            outputs, _ = layer(outputs, model.initial_state(4)[index])
            penalty += tf.reduce_sum(tf.abs(outputs))
        penalty = weight * penalty / 4
    expected = tape.gradient(penalty, variables)
    for mine, base, extra in zip(penalized, plain, expected, strict=True):
        base = tf.convert_to_tensor(base).numpy()
        extra = 0.0 if extra is None else tf.convert_to_tensor(extra).numpy()
        np.testing.assert_allclose(tf.convert_to_tensor(mine).numpy(), base + extra, rtol=1e-5, atol=1e-7)
    moved = [np.abs(tf.convert_to_tensor(extra).numpy()).max()
             for extra, variable in zip(expected, variables) if "lstm" in variable.path]
    assert len(moved) == 6 and min(moved) > 1e-6  # the penalty reaches every LSTM variable


def _randomized_case(config, seed):
    """A model of `config` with large random weights, and one random window of 4 x 5."""
    model = lm.build_model(config)
    rng = np.random.RandomState(seed)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.6, 0.6, weight.shape).astype(np.float32))
    inputs = tf.constant(rng.randint(0, config.vocab_size, (4, 5)).astype(np.int32))
    targets = tf.constant(rng.randint(0, config.vocab_size, (4, 5)).astype(np.int32))
    return config, model, inputs, targets


def _omega_case(**changes):
    return _randomized_case(tiny_config(omega=0.5, **changes), 4)


def test_stepwise_trace_equals_the_fast_path():
    config, model, inputs, targets = _omega_case()
    state = model.initial_state(4)
    fast, fast_state = model.summed_cost(inputs, targets, state)
    trace = []
    slow, slow_state = model.summed_cost(inputs, targets, state, trace=trace)
    assert float(slow) == pytest.approx(float(fast), rel=1e-6)
    assert len(trace) == 2 and len(trace[0].hiddens) == 5
    for mine, wanted in zip(tf.nest.flatten(slow_state), tf.nest.flatten(fast_state)):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), atol=1e-6)


def test_omega_matches_explicit_step_jacobians():
    """window_omega against Ω built from full Jacobians ∂h_{k+1}/∂h_k (c_k fixed, per sequence)."""
    config, model, inputs, targets = _omega_case()
    trace = []
    with tf.GradientTape(persistent=True) as tape:
        summed, _ = model.summed_cost(inputs, targets, model.initial_state(4), trace=trace)
        cost = summed / 4
    omega = float(steps.window_omega(tape, cost, trace))
    expected = 0.0
    for layer in trace:
        gradients = tape.gradient(cost, layer.hiddens)
        terms = []
        for k in range(len(layer.hiddens) - 1):
            previous = layer.hiddens[k]
            with tf.GradientTape() as jacobian_tape:
                jacobian_tape.watch(previous)
                following = layer.step(k + 1, (layer.cells[k], previous))
            jacobian = jacobian_tape.batch_jacobian(following, previous).numpy()  # [batch, out, in]
            g = gradients[k + 1].numpy()
            back = np.einsum("bo,boi->bi", g, jacobian)
            terms.extend((np.linalg.norm(back, axis=1) / np.linalg.norm(g, axis=1) - 1.0) ** 2)
        expected += np.mean(terms)
    assert omega == pytest.approx(expected, rel=1e-4)
    assert omega > 1e-3


def test_omega_changes_gradients_not_cost():
    config, model, inputs, targets = _omega_case()
    window = (inputs, targets, model.initial_state(4), None)
    variables = model.trainable_variables
    seed = tf.constant([1, 2])
    cost, _, plain = steps.window_gradients(model, variables, tiny_config(), None, 2, seed, window, 4)
    omega_cost, _, regularized = steps.window_gradients(model, variables, config, None, 2, seed, window, 4)
    assert float(omega_cost) == pytest.approx(float(cost), rel=1e-6)
    kernel = [index for index, variable in enumerate(variables) if "recurrent_kernel" in variable.path][0]
    difference = np.abs(tf.convert_to_tensor(regularized[kernel]) - tf.convert_to_tensor(plain[kernel])).max()
    assert difference > 1e-5
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in regularized)


@pytest.mark.parametrize("changes, message", [
    (dict(h_detach=0.5), "omega and h_detach cannot be combined"),
    (dict(precision="mixed_bfloat16"), "omega needs precision=float32"),
])
def test_omega_refuses_what_it_cannot_do(changes, message):
    with pytest.raises(configs.ConfigError, match=message):
        tiny_config(omega=0.5, **changes)


def _sampling_case(**changes):
    return _randomized_case(tiny_config(sampling=True, max_grad_norm=50.0, **changes), 6)


def test_sampling_q_and_ds_match_direct_and_finite_difference_values():
    """Q from ∂E/∂h of the first and last steps; dS = ⟨∂S/∂W_rec, ΔW_rec⟩ against a central
    difference of S = ½||δ(k-h)||² along ΔW_rec."""
    config, model, inputs, targets = _sampling_case()
    variables = model.trainable_variables
    window = (inputs, targets, model.initial_state(4), None)
    cost, _, gradients, q, d_kernels = steps.sampled_window(model, variables, config, None, 2,
                                                               tf.constant([1, 2]), window, 4)
    kernels = [layer.recurrent_kernel for layer in model.lstm_layers]

    def deltas():
        trace = []
        with tf.GradientTape() as tape:
            summed, _ = model.summed_cost(inputs, targets, model.initial_state(4), trace=trace)
            cost = summed / 4
        ends = [layer.hiddens[0] for layer in trace] + [layer.hiddens[-1] for layer in trace]
        found = [g.numpy() for g in tape.gradient(cost, ends)]
        return np.concatenate(found[:2], -1), np.concatenate(found[2:], -1)

    first, last = deltas()
    assert float(q) == pytest.approx(np.log10(np.linalg.norm(last) / np.linalg.norm(first)), abs=1e-5)
    directions = [np.random.RandomState(index).normal(size=k.shape).astype(np.float32) * 0.01
                  for index, k in enumerate(kernels)]
    analytic = sum(float(tf.reduce_sum(d * direction)) for d, direction in zip(d_kernels, directions))
    originals = [k.numpy() for k in kernels]
    values = []
    for sign in (1.0, -1.0):
        for kernel, original, direction in zip(kernels, originals, directions):
            kernel.assign(original + sign * 0.01 * direction)
        values.append(0.5 * np.sum(deltas()[0].astype(np.float64) ** 2))
    for kernel, original in zip(kernels, originals):
        kernel.assign(original)
    numeric = (values[0] - values[1]) / 0.02
    assert analytic == pytest.approx(numeric, rel=2e-2)
    assert abs(analytic) > 0


def _sampling_sign_of_ds(config, model, inputs, targets):
    """The sign of dS = Σ⟨∂S/∂W_rec, -lr g_rec⟩ for this window (no clipping at max_grad_norm 50)."""
    variables = model.trainable_variables
    _, _, gradients, _, d_kernels = steps.sampled_window(
        model, variables, config, None, 2, tf.constant([1, 2]),
        (inputs, targets, model.initial_state(4), None), 4)
    assert float(tf.linalg.global_norm(gradients)) < config.max_grad_norm
    by_id = {id(v): g for v, g in zip(variables, gradients)}
    return np.sign(sum(float(tf.reduce_sum(d * -g)) for d, g in zip(
        d_kernels, [by_id[id(layer.recurrent_kernel)] for layer in model.lstm_layers])))


@pytest.mark.parametrize("convention, q_min, q_max", [
    ("text", -1e9, 1e9), ("text", 1e8, 1e9), ("text", -1e9, -1e8), ("printed", 1e8, 1e9), ("printed", -1e9, -1e8)])
def test_sampling_step_applies_exactly_when_the_rule_says(convention, q_min, q_max):
    """Q inside the safe range: the plain clipped step (the conventions differ only outside it). Q
    below it (range far above): used iff dS < 0 by the text rule (> 0 as printed); Q above it: the
    reverse. Otherwise the variables stay; the step's counters say which happened."""
    config, model, inputs, targets = _sampling_case(q_min=q_min, q_max=q_max, sampling_convention=convention)
    sign = _sampling_sign_of_ds(config, model, inputs, targets)
    assert sign != 0
    below, above = q_min > 0, q_max < 0
    flip = 1 if convention == "text" else -1
    applied = not (below or above) or (below and sign * flip < 0) or (above and sign * flip > 0)
    reference = lm.build_model(config)
    for source, target in zip(model.weights, reference.weights):
        target.assign(source)
    optimizer, reference_optimizer = steps.make_optimizer(config), steps.make_optimizer(config)
    step = steps.make_train_step(model, optimizer, config, dropout_lib.DropoutPlan.for_depth(config, 2), 2)
    plain = steps.make_train_step(reference, reference_optimizer, dataclasses.replace(config, sampling=False),
                                     dropout_lib.DropoutPlan.for_depth(config, 2), 2)
    before = [w.numpy() for w in model.trainable_variables]
    key = tf.constant([1, 0, 0], tf.int64)
    cost, _, norm = step(inputs, targets, (model.initial_state(4), None), key)
    plain_cost, _, plain_norm = plain(inputs, targets, (reference.initial_state(4), None), key)
    assert float(cost) == pytest.approx(float(plain_cost), rel=1e-5)
    assert float(norm) == pytest.approx(float(plain_norm), rel=1e-5)
    assert int(step.seen) == 1 and int(step.used) == int(applied)
    for mine, previous, wanted in zip(model.trainable_variables, before, reference.trainable_variables):
        if applied:
            np.testing.assert_allclose(mine.numpy(), wanted.numpy(), atol=1e-5)
        else:
            np.testing.assert_array_equal(mine.numpy(), previous)


def test_sampling_refuses_what_it_cannot_do():
    with pytest.raises(configs.ConfigError, match="q_min=2.0 is above q_max=1.0"):
        tiny_config(sampling=True, q_min=2.0)
    with pytest.raises(configs.ConfigError, match="sampling runs in float32 without h_detach"):
        tiny_config(sampling=True, h_detach=0.5)
