"""The compiled train steps: the window cost, one step, clipping, h-detach, Nesterov, float16, the
L1 activity penalty, Pascanu's Ω and Chernodub & Nowicki's sampling rule."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs, phases
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.nn import language_model as lm
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import steps
from gradual_rnn.train.models import build_model
from train.tiny import tiny_config


def test_window_cost_is_sum_over_time_mean_over_batch():
    logits = tf.random.stateless_normal([3, 4, 7], seed=[1, 2])
    targets = tf.constant(np.arange(12).reshape(3, 4) % 7, tf.int32)
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -sum(log_probs[b, t, targets[b, t]] for b in range(3) for t in range(4)) / 3
    assert float(steps.sequence_cost(logits, targets, 3)) == pytest.approx(expected, rel=1e-6)


def _one_step(config, model, depth):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    plan = DropoutPlan.for_depth(config, depth)
    step = steps.make_train_step(model, optimizer, config, plan, depth)
    inputs = tf.constant(np.arange(20).reshape(4, 5) % config.vocab_size, tf.int32)
    masks = steps.sample_masks(config, plan, (1, 0, 0), 4)
    return step.one(inputs, inputs, model.initial_state(4, depth), tf.constant([1, 0, 0], tf.int64), masks)


def test_one_step_changes_exactly_the_phase_variables():
    """Phase 2 of a 3-layer gradual run with the lower layer frozen: embedding, bias, layer 2 and
    the output bias change; layer 1 (frozen) and layer 3 (above the phase) do not."""
    config = tiny_config(num_layers=3, tied_weights=True, embedding_bias=True,
                         dropout_style="variational", keep_prob_embed=0.8,
                         keep_output=configs.uniform_table(3, 0.7),
                         keep_state=configs.uniform_table(3, 0.9), freeze_lower_layers=True)
    model = build_model(config)
    lm.freeze(model, phases.make_phases(dataclasses.replace(config, gradual=True))[1].frozen_layers)
    before = {v.path: np.array(v) for v in model.weights}
    _one_step(config, model, depth=2)
    changed = {v.path for v in model.weights if not np.array_equal(before[v.path], np.array(v))}
    assert changed == {"embedding/embeddings", "embedding/input_bias", "head/output_bias",
                       "lstm_2/lstm/lstm_cell/kernel", "lstm_2/lstm/lstm_cell/recurrent_kernel",
                       "lstm_2/lstm/lstm_cell/bias"}


def test_clipping_bounds_the_applied_update():
    config = tiny_config(max_grad_norm=1e-3)
    model = build_model(config)
    before = [np.array(v) for v in model.trainable_variables]
    _, _, gradient_norm = _one_step(config, model, depth=2)
    update = np.sqrt(sum(np.sum((np.array(v) - b) ** 2) for v, b in zip(model.trainable_variables, before)))
    assert float(gradient_norm) > 1e-3
    assert update == pytest.approx(1e-3, rel=1e-4)


def test_h_detach_changes_gradients_not_values():
    config = tiny_config(h_detach=0.5, rnn_mode="basic")
    model = build_model(config)
    inputs = tf.constant(np.arange(20).reshape(4, 5) % config.vocab_size, tf.int32)
    seed = dropout_lib.window_seed(config.seed, tf.constant([1, 0, 0]))
    detach = steps.detach_steps(config, seed, 2, 5)
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
    models = [build_model(reference), build_model(config)]
    optimizers = [steps.make_optimizer(reference), steps.make_optimizer(config)]
    assert isinstance(optimizers[1], keras.optimizers.LossScaleOptimizer)
    rng = np.random.RandomState(2)
    inputs, targets = (tf.constant(rng.randint(0, 41, (4, 5)).astype(np.int32)) for _ in range(2))
    results = []
    for model, optimizer, model_config in zip(models, optimizers, (reference, config)):
        step = steps.make_train_step(model, optimizer, model_config,
                                        DropoutPlan.for_depth(model_config, 2), 2)
        cost, _, norm = step.one(inputs, targets, model.initial_state(4), tf.constant([1, 0, 0], tf.int64), None)
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
    step.one(inputs, targets, models[1].initial_state(4), tf.constant([1, 0, 1], tf.int64), None)
    assert float(optimizers[1].dynamic_scale) == pytest.approx(5e29)
    for previous, now in zip(before, models[1].trainable_variables):
        np.testing.assert_array_equal(now.numpy(), previous)


def test_activity_l1_adds_the_penalty_gradient_not_to_the_cost():
    """window_gradients with activity_l1 = λ: the cost is the cross-entropy alone, the gradients are
    those of cost + λ Σ_layers Σ|h| / batch, the outputs recomputed here layer by layer."""
    weight = 0.01
    plain_config, penalized_config = tiny_config(), tiny_config(activity_l1=weight)
    model = build_model(plain_config)
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
    model = build_model(config)
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
    reference = build_model(config)
    for source, target in zip(model.weights, reference.weights):
        target.assign(source)
    optimizer, reference_optimizer = steps.make_optimizer(config), steps.make_optimizer(config)
    step = steps.make_train_step(model, optimizer, config, DropoutPlan.for_depth(config, 2), 2)
    plain = steps.make_train_step(reference, reference_optimizer, dataclasses.replace(config, sampling=False),
                                     DropoutPlan.for_depth(config, 2), 2)
    before = [w.numpy() for w in model.trainable_variables]
    key = tf.constant([1, 0, 0], tf.int64)
    cost, _, norm = step.one(inputs, targets, model.initial_state(4), key, None)
    plain_cost, _, plain_norm = plain.one(inputs, targets, reference.initial_state(4), key, None)
    assert float(cost) == pytest.approx(float(plain_cost), rel=1e-5)
    assert float(norm) == pytest.approx(float(plain_norm), rel=1e-5)
    used, seen = step.counters
    assert int(seen) == 1 and int(used) == int(applied) and plain.counters is None
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


def test_windows_call_traces_once_for_every_number_of_windows():
    """The K-window call is traced once, for any K, on its first call: later calls with another K
    (the calls cut at checkpoints and epoch ends) run the same graph, window after window, the
    state carried from one window to the next."""
    traces = []

    def step(inputs, targets, state, key, masks):
        traces.append(inputs.shape)
        cost = tf.cast(tf.reduce_sum(inputs * targets), tf.float32) + state
        return cost, state + 1.0, tf.cast(tf.reduce_sum(key), tf.float32)

    many = steps.windows_call(step)
    rng = np.random.default_rng(0)
    state = tf.constant(0.0)
    for count in (4, 7, 1):
        inputs = rng.integers(0, 9, size=(count, 2, 3)).astype(np.int32)
        targets = rng.integers(0, 9, size=(count, 2, 3)).astype(np.int32)
        keys = np.arange(count * 3, dtype=np.int64).reshape(count, 3)
        costs, new_state, norms = many(tf.constant(inputs), tf.constant(targets), state, tf.constant(keys), None)
        start = float(state)
        np.testing.assert_array_equal(costs.numpy(), (inputs * targets).sum(axis=(1, 2)) + start + np.arange(count))
        np.testing.assert_array_equal(norms.numpy(), keys.sum(axis=1))
        assert float(new_state) == start + count
        state = new_state
    assert len(traces) == 1
