"""The layers: BasicLSTM against a NumPy TF1 BasicLSTMCell (eager, tf.function, XLA), its cuDNN
eligibility, variational and per-element dropout statistics, and serialization of every layer."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow.rnn import _do_lstm_arguments_support_cudnn

from gradual_rnn import configs
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.nn import heads
from gradual_rnn.nn import lstm
from gradual_rnn.nn.dropout import DropoutPlan
from gradual_rnn.nn.language_model import WordEmbedding

BATCH, TIME, INPUT, UNITS = 3, 5, 4, 6
EXECUTION_MODES = ("eager", "function", "xla")


# --- A NumPy reference of TF1's BasicLSTMCell. ---

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_basic_lstm(inputs, cell, hidden, kernel, bias, forget_bias, recurrent_mask=None):
    """TF1 BasicLSTMCell over `inputs [batch, time, input]`, in float64.

    kernel `[input + units, 4 units]` on `[x, h]`, bias `[4 units]`, gates in TF1 order (i, j, f, o):
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j);  h' = tanh(c') * sigmoid(o).
    With `recurrent_mask`, the h fed back (and returned) is `h' * recurrent_mask`; the outputs and c
    are not masked. Returns (outputs [batch, time, units], c, h).
    """
    outputs = []
    for step in range(inputs.shape[1]):
        gates = np.concatenate([inputs[:, step], hidden], axis=1) @ kernel + bias
        i, j, f, o = np.split(gates, 4, axis=1)
        cell = cell * _sigmoid(f + forget_bias) + _sigmoid(i) * np.tanh(j)
        hidden = np.tanh(cell) * _sigmoid(o)
        outputs.append(hidden)
        if recurrent_mask is not None:
            hidden = hidden * recurrent_mask
    return np.stack(outputs, axis=1), cell, hidden


def tf1_weights(layer):
    """The layer's variables as one TF1 kernel on `[x, h]` and a TF1 bias, gates (i, j, f, o)."""
    kernel = np.concatenate([lstm.keras_to_tf1_gates(layer.kernel.numpy()),
                             lstm.keras_to_tf1_gates(layer.recurrent_kernel.numpy())], axis=0)
    return kernel.astype(np.float64), lstm.keras_to_tf1_gates(layer.bias.numpy()).astype(np.float64)


def randomize(layer, seed, scale=0.5):
    """Assigns every variable of `layer` fresh nonzero uniform values (biases included)."""
    rng = np.random.RandomState(seed)
    for weight in layer.weights:
        weight.assign(rng.uniform(-scale, scale, weight.shape).astype(np.float32))


def _new_lstm(rnn_mode="basic", forget_bias=0.0, seed=1):
    layer = lstm.BasicLSTM(UNITS, init_scale=0.1, forget_bias=forget_bias, rnn_mode=rnn_mode,
                             seed=seed)
    layer.build((None, None, INPUT))
    randomize(layer, seed)
    return layer


def _window(seed=0):
    """Inputs `[BATCH, TIME, INPUT]` and a nonzero initial (c, h), float32."""
    rng = np.random.RandomState(100 + seed)
    inputs = rng.uniform(-1, 1, (BATCH, TIME, INPUT)).astype(np.float32)
    cell = rng.uniform(-1, 1, (BATCH, UNITS)).astype(np.float32)
    hidden = rng.uniform(-0.5, 0.5, (BATCH, UNITS)).astype(np.float32)
    return inputs, cell, hidden


def _runner(layer, mode):
    """`run(inputs, cell, hidden, mask) -> (outputs, c, h)` eagerly, as a tf.function, or with XLA."""
    def run(inputs, cell, hidden, mask=None):
        outputs, (new_cell, new_hidden) = layer(inputs, (cell, hidden), recurrent_mask=mask)
        return outputs, new_cell, new_hidden

    if mode == "eager":
        return run
    return tf.function(run, jit_compile=mode == "xla")


def _assert_matches_numpy(layer, mode, forget_bias, mask=None):
    inputs, cell, hidden = _window()
    outputs, new_cell, new_hidden = _runner(layer, mode)(inputs, cell, hidden, mask)
    kernel, bias = tf1_weights(layer)
    expected = numpy_basic_lstm(inputs.astype(np.float64), cell, hidden, kernel, bias, forget_bias,
                                mask)
    assert outputs.shape == (BATCH, TIME, UNITS)
    for actual, wanted in zip((outputs, new_cell, new_hidden), expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=0, atol=1e-5)
    return outputs.numpy(), new_cell.numpy(), new_hidden.numpy()


# --- Gate order. ---

def test_gate_order_mapping():
    keras_blocks = np.repeat(np.array(["i", "f", "c", "o"]), 2)[np.newaxis]  # Keras (i, f, c=j, o)
    tf1 = lstm.keras_to_tf1_gates(keras_blocks)
    np.testing.assert_array_equal(tf1[0], ["i", "i", "c", "c", "f", "f", "o", "o"])  # TF1 (i, j, f, o)
    kernel = np.arange(3 * 8).reshape(3, 8)
    np.testing.assert_array_equal(lstm.tf1_to_keras_gates(lstm.keras_to_tf1_gates(kernel)), kernel)
    np.testing.assert_array_equal(lstm.tf1_to_keras_gates(tf1), keras_blocks)


def test_numpy_reference_is_sensitive_to_gate_order():
    """Guards the reference itself: reading Keras-ordered weights as TF1 ones gives other numbers."""
    layer = _new_lstm()
    inputs, cell, hidden = _window()
    kernel, bias = tf1_weights(layer)
    unmapped = np.concatenate([layer.kernel.numpy(), layer.recurrent_kernel.numpy()], axis=0)
    right = numpy_basic_lstm(inputs, cell, hidden, kernel, bias, 0.0)[0]
    wrong = numpy_basic_lstm(inputs, cell, hidden, unmapped, layer.bias.numpy(), 0.0)[0]
    assert np.abs(right - wrong).max() > 1e-2


# --- BasicLSTM numerics. ---

@pytest.mark.parametrize("mode", EXECUTION_MODES)
@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_basic_path_matches_tf1_basic_lstm_cell(mode, forget_bias):
    layer = _new_lstm("basic", forget_bias)
    assert not layer.uses_cudnn_path()
    _assert_matches_numpy(layer, mode, forget_bias)


def test_forget_bias_changes_the_result():
    inputs, cell, hidden = _window()
    without = _new_lstm("basic", 0.0)(inputs, (cell, hidden))[0].numpy()
    with_bias = _new_lstm("basic", 1.0)(inputs, (cell, hidden))[0].numpy()
    assert np.abs(without - with_bias).max() > 1e-3


@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_cudnn_path_matches_basic_path_and_numpy(mode):
    cudnn = _new_lstm("cudnn", seed=2)
    basic = _new_lstm("basic", seed=3)
    for source, target in zip(cudnn.weights, basic.weights):
        target.assign(source)
    assert cudnn.uses_cudnn_path() and not basic.uses_cudnn_path()
    fused = _assert_matches_numpy(cudnn, mode, 0.0)
    inputs, cell, hidden = _window()
    stepwise = _runner(basic, mode)(inputs, cell, hidden)
    for actual, wanted in zip(fused, stepwise):
        np.testing.assert_allclose(actual, wanted.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_recurrent_mask_path_matches_numpy(mode):
    layer = _new_lstm("auto")
    keep = 0.5
    mask = (np.random.RandomState(7).uniform(size=(BATCH, UNITS)) < keep).astype(np.float32) / keep
    assert 0 < np.count_nonzero(mask) < mask.size
    outputs, cell, hidden = _assert_matches_numpy(layer, mode, 0.0, mask)
    # The state h carried on is the masked h; the outputs (passed up) and c are not masked.
    np.testing.assert_allclose(hidden, outputs[:, -1] * mask, rtol=0, atol=1e-7)
    dropped = mask == 0
    assert np.all(hidden[dropped] == 0) and np.all(outputs[:, -1][dropped] != 0)
    assert np.all(cell != 0)
    # The mask also changed the recursion: without it the later steps differ.
    inputs, first_cell, first_hidden = _window()
    unmasked = layer(inputs, (first_cell, first_hidden))[0].numpy()
    np.testing.assert_allclose(unmasked[:, 0], outputs[:, 0], rtol=0, atol=1e-6)
    assert np.abs(unmasked[:, 1:] - outputs[:, 1:]).max() > 1e-3


def test_basic_path_needs_static_time():
    layer = _new_lstm("basic")
    run = tf.function(lambda inputs, cell, hidden: layer(inputs, (cell, hidden))[0],
                      input_signature=[tf.TensorSpec([BATCH, None, INPUT]),
                                       tf.TensorSpec([BATCH, UNITS]), tf.TensorSpec([BATCH, UNITS])])
    with pytest.raises(ValueError, match="static number of time steps"):
        run(*_window())


# --- cuDNN eligibility by construction. ---

@pytest.mark.parametrize("rnn_mode", ["auto", "cudnn"])
def test_cudnn_eligible_arguments(rnn_mode):
    layer = _new_lstm(rnn_mode)
    assert layer.cudnn_eligible() and layer.cudnn_eligible(None)
    lstm = layer.lstm
    assert isinstance(lstm, keras.layers.LSTM)
    assert lstm.cell.activation is keras.activations.tanh
    assert lstm.cell.recurrent_activation is keras.activations.sigmoid
    assert lstm.cell.use_bias is True
    assert lstm.recurrent_dropout == 0 and lstm.dropout == 0
    assert lstm.unroll is False and lstm.go_backwards is False
    assert lstm.use_cudnn == "auto"
    assert lstm.cell.unit_forget_bias is False
    # Keras's own test of whether its TF backend may run the fused cuDNN kernel.
    assert _do_lstm_arguments_support_cudnn(activation=lstm.cell.activation,
                                            recurrent_activation=lstm.cell.recurrent_activation,
                                            unroll=lstm.unroll, use_bias=lstm.cell.use_bias)


def _refuse(what):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} ran")
    return refuse


def test_auto_on_a_gpu_runs_on_keras_lstm(monkeypatch):
    monkeypatch.setattr(lstm, "gpu_available", lambda: True)
    layer = _new_lstm("auto")
    assert layer.uses_cudnn_path()
    monkeypatch.setattr(lstm.BasicLSTM, "_basic_call", _refuse("the basic path"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden))[0].shape == (BATCH, TIME, UNITS)
    with pytest.raises(AssertionError, match="the basic path ran"):
        layer(inputs, (cell, hidden), recurrent_mask=np.ones((BATCH, UNITS), np.float32))


def test_auto_on_a_cpu_takes_the_basic_path(monkeypatch):
    """On a CPU Keras's LSTM runs a generic loop slower than the basic path, so auto skips it."""
    monkeypatch.setattr(lstm, "gpu_available", lambda: False)
    layer = _new_lstm("auto")
    assert layer.cudnn_eligible() and not layer.uses_cudnn_path()
    assert _new_lstm("cudnn").uses_cudnn_path()
    monkeypatch.setattr(keras.layers.LSTM, "call", _refuse("keras.layers.LSTM"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden))[0].shape == (BATCH, TIME, UNITS)


def test_gpu_available_matches_tensorflow():
    assert lstm.gpu_available() == bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_with_state_mask_takes_the_basic_path(monkeypatch, gpu):
    monkeypatch.setattr(lstm, "gpu_available", lambda: gpu)
    layer = _new_lstm("auto")
    mask = np.ones((BATCH, UNITS), np.float32)
    assert not layer.uses_cudnn_path(mask) and not layer.cudnn_eligible(mask)
    monkeypatch.setattr(keras.layers.LSTM, "call", _refuse("keras.layers.LSTM"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden), recurrent_mask=mask)[0].shape == (BATCH, TIME, UNITS)


def test_basic_mode_and_forget_bias_never_take_the_cudnn_path(monkeypatch):
    monkeypatch.setattr(lstm, "gpu_available", lambda: True)
    for layer in (_new_lstm("basic"), _new_lstm("auto", forget_bias=1.0)):
        assert not layer.uses_cudnn_path() and not layer.cudnn_eligible()


def test_cudnn_with_state_mask_raises():
    layer = _new_lstm("cudnn")
    mask = np.ones((BATCH, UNITS), np.float32)
    with pytest.raises(ValueError, match="cannot apply a recurrent"):
        layer.uses_cudnn_path(mask)
    inputs, cell, hidden = _window()
    with pytest.raises(ValueError, match="cannot apply a recurrent"):
        layer(inputs, (cell, hidden), recurrent_mask=mask)


def test_cudnn_with_forget_bias_raises():
    with pytest.raises(ValueError, match="needs forget_bias=0"):
        lstm.BasicLSTM(UNITS, forget_bias=1.0, rnn_mode="cudnn")


def test_unknown_rnn_mode_raises():
    with pytest.raises(ValueError, match="rnn_mode='fused'"):
        lstm.BasicLSTM(UNITS, rnn_mode="fused")


# --- The hand-written backward passes, against autodiff and NumPy finite differences. ---

def _plain_recurrence(projected, cell, hidden, recurrent_kernel, mask, detach, forget_bias):
    """The window stepped with `lstm_gate_step`, differentiated by TensorFlow's autodiff."""
    outputs = []
    for step in range(projected.shape[1]):
        fed = hidden if detach is None else lstm.detach_where(detach[step], hidden)
        cell, hidden = lstm.lstm_gate_step(projected[:, step], cell, fed, recurrent_kernel, forget_bias)
        outputs.append(hidden)
        if mask is not None:
            hidden = hidden * mask
    return tf.stack(outputs, axis=1), (cell, hidden)


def _recurrence_case(dtype=np.float32, time=TIME):
    rng = np.random.RandomState(11)
    projected = rng.uniform(-1, 1, (BATCH, time, 4 * UNITS)).astype(dtype)
    cell, hidden = (rng.uniform(-1, 1, (BATCH, UNITS)).astype(dtype) for _ in range(2))
    recurrent_kernel = rng.uniform(-0.5, 0.5, (UNITS, 4 * UNITS)).astype(dtype)
    mask = ((rng.uniform(size=(BATCH, UNITS)) < 0.5) / 0.5).astype(dtype)
    weights = [rng.uniform(-1, 1, shape).astype(dtype)
               for shape in ((BATCH, time, UNITS), (BATCH, UNITS), (BATCH, UNITS))]
    return (projected, cell, hidden, recurrent_kernel), mask, weights


def _recurrence_loss(function, arguments, mask, detach, forget_bias, weights):
    outputs, (cell, hidden) = function(*arguments, mask, detach, forget_bias)
    return sum(tf.reduce_sum(value * weight) for value, weight in zip((outputs, cell, hidden), weights))


def test_steps_per_block():
    assert [lstm.steps_per_block(n) for n in (1, 5, 8, 12, 20, 35, 11, 128)] == [1, 5, 8, 6, 5, 7, 1, 8]


# Every combination eagerly and under tf.function; under XLA (slow to compile) the two layouts of
# several blocks (2 blocks of 6 steps; 11 blocks of 1) with mask and h-detach both on, which
# exercises every branch of the backward pass.
RECURRENCE_CASES = [(mode, masked, detached, forget_bias, time)
                    for forget_bias, time in [(0.0, TIME), (1.0, TIME), (1.0, 12), (0.0, 11)]
                    for mode in EXECUTION_MODES for masked in (False, True) for detached in (False, True)
                    if mode != "xla" or (masked and detached and time != TIME)]


@pytest.mark.parametrize("mode, masked, detached, forget_bias, time", RECURRENCE_CASES)
def test_recurrence_gradients_match_autodiff(mode, masked, detached, forget_bias, time):
    """One block (5 steps), two blocks of 6, eleven blocks of 1."""
    arguments, mask, weights = _recurrence_case(time=time)
    mask = mask if masked else None
    coins = np.random.RandomState(time).uniform(size=time) < 0.4
    coins[0] = False  # so that the h0 gradient below is not blocked
    assert coins.any()
    detach = tf.constant(coins) if detached else None

    def gradients(function):
        def run(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                loss = _recurrence_loss(function, tensors, mask, detach, forget_bias, weights)
            return [loss] + tape.gradient(loss, list(tensors))
        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(*[tf.constant(value) for value in arguments])

    fast = gradients(lstm.lstm_recurrence)
    plain = gradients(_plain_recurrence)
    for mine, wanted in zip(fast, plain, strict=True):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=0, atol=2e-5)
    assert float(tf.reduce_max(tf.abs(fast[3]))) > 0.1  # the h0 gradient is real, not zeros


# Compiled: every combination; eagerly and under XLA, one each.
ROW_GROUP_CASES = [("function", False, False, TIME, 2), ("function", True, True, 12, 2),
                   ("function", True, False, 11, 4), ("function", False, True, 12, 4),
                   ("eager", True, True, 12, 2), ("xla", True, True, 12, 2)]


@pytest.mark.parametrize("mode, masked, detached, time, groups", ROW_GROUP_CASES)
def test_row_groups_give_the_same_bits(mode, masked, detached, time, groups):
    """The batch split into row groups that step side by side: the values and every gradient equal,
    bit for bit, those of one group (itself checked against autodiff above). Batch 8, 16 units:
    every group's tensors fill whole vector registers, as `batch_groups` requires."""
    batch, units = 8, 16
    rng = np.random.RandomState(time)
    arguments = [rng.uniform(-1, 1, shape).astype(np.float32) for shape in
                 ((batch, time, 4 * units), (batch, units), (batch, units))]
    arguments.append(rng.uniform(-0.5, 0.5, (units, 4 * units)).astype(np.float32))
    mask = ((rng.uniform(size=(batch, units)) < 0.5) / 0.5).astype(np.float32) if masked else None
    detach = tf.constant(rng.uniform(size=time) < 0.4) if detached else None
    weights = [rng.uniform(-1, 1, shape).astype(np.float32)
               for shape in ((batch, time, units), (batch, units), (batch, units))]

    def values_and_gradients(group_count):
        def run(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                outputs, (cell, hidden) = lstm.lstm_recurrence(*tensors, mask, detach, 1.0, groups=group_count)
                loss = sum(tf.reduce_sum(value * weight) for value, weight in zip((outputs, cell, hidden), weights))
            return [outputs, cell, hidden] + tape.gradient(loss, list(tensors))
        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return [value.numpy() for value in run(*[tf.constant(value) for value in arguments])]

    grouped, single = values_and_gradients(groups), values_and_gradients(1)
    for mine, wanted in zip(grouped, single, strict=True):
        np.testing.assert_array_equal(mine, wanted)
    assert np.abs(single[4]).max() > 0.1  # the initial state's gradient is real, not zeros


def test_batch_groups_rule(monkeypatch):
    monkeypatch.setattr(lstm, "usable_cores", lambda: 2)
    monkeypatch.setattr(lstm, "gpu_available", lambda: False)
    assert [lstm.batch_groups(20, units) for units in (8, 127, 128, 200, 512, 513, 650)] == [1, 1, 2, 2, 2, 1, 1]
    assert [lstm.batch_groups(batch, 200) for batch in (1, 2, 19, 64, None)] == [1, 1, 1, 2, 1]
    assert lstm.batch_groups(20, 130) == 1  # a group of 10 x 130 floats ends inside a vector register
    monkeypatch.setattr(lstm, "usable_cores", lambda: 1)
    assert lstm.batch_groups(20, 200) == 1
    monkeypatch.setattr(lstm, "usable_cores", lambda: 2)
    monkeypatch.setattr(lstm, "gpu_available", lambda: True)
    assert lstm.batch_groups(20, 200) == 1


@pytest.mark.parametrize("masked", [False, True])
def test_recurrence_gradient_matches_numpy_finite_differences(masked):
    """Directional derivatives in float64 against central differences of the NumPy TF1 cell."""
    arguments, mask, weights = _recurrence_case(np.float64)
    mask = mask if masked else None
    tensors = [tf.constant(value) for value in arguments]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss = _recurrence_loss(lstm.lstm_recurrence, tensors, mask, None, 1.0, weights)
    gradients = [gradient.numpy() for gradient in tape.gradient(loss, tensors)]

    def numpy_loss(projected, cell, hidden, recurrent_kernel):
        total_outputs, total_cell, total_hidden = [], cell, hidden
        # The projection is precomputed: the cell sees zero inputs and the step's projection as bias.
        kernel = np.concatenate([np.zeros((INPUT, 4 * UNITS)), recurrent_kernel], axis=0)
        for step in range(TIME):
            bias = projected[:, step]
            out, total_cell, total_hidden = numpy_basic_lstm(
                np.zeros((BATCH, 1, INPUT)), total_cell, total_hidden, lstm.keras_to_tf1_gates(kernel),
                lstm.keras_to_tf1_gates(bias), 1.0, mask)
            total_outputs.append(out[:, 0])
        values = (np.stack(total_outputs, axis=1), total_cell, total_hidden)
        return sum(np.sum(value * weight) for value, weight in zip(values, weights))

    rng = np.random.RandomState(5)
    for _ in range(3):
        directions = [rng.normal(size=value.shape) for value in arguments]
        epsilon = 1e-6
        plus = numpy_loss(*[value + epsilon * d for value, d in zip(arguments, directions)])
        minus = numpy_loss(*[value - epsilon * d for value, d in zip(arguments, directions)])
        numeric = (plus - minus) / (2 * epsilon)
        analytic = sum(np.sum(g * d) for g, d in zip(gradients, directions))
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_fused_softmax_cost_matches_autodiff(transposed, mode):
    rng = np.random.RandomState(3)
    vocab = 12
    outputs = tf.constant(rng.uniform(-1, 1, (BATCH, TIME, UNITS)).astype(np.float32))
    kernel_shape = (vocab, UNITS) if transposed else (UNITS, vocab)
    kernel = tf.constant(rng.uniform(-1, 1, kernel_shape).astype(np.float32))
    bias = tf.constant(rng.uniform(-1, 1, (vocab,)).astype(np.float32))
    targets = tf.constant(rng.randint(0, vocab, (BATCH, TIME)).astype(np.int32))

    def plain(outputs, kernel, bias):
        logits = tf.einsum("btu,vu->btv" if transposed else "btu,uv->btv", outputs, kernel) + bias
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))

    def fused(outputs, kernel, bias):
        return heads.summed_softmax_cost(outputs, kernel, bias, targets, transposed)

    def gradients(function):
        def run(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                cost = 3.0 * function(*tensors)  # a non-unit upstream gradient
            return [cost] + tape.gradient(cost, list(tensors))
        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(outputs, kernel, bias)

    for mine, wanted in zip(gradients(fused), gradients(plain), strict=True):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=1e-6, atol=1e-5)


# --- Variational masks. ---

STAT_BATCH, STAT_UNITS = 4000, 50  # 200,000 Bernoulli draws per mask
SIGMAS = 5


def _assert_mask_statistics(mask, keep):
    mask = np.asarray(mask)
    count = mask.size
    scaled_one = np.float32(1.0) / np.float32(keep)
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) <= {np.float32(0.0), scaled_one}  # exactly 0 or 1/keep
    kept = np.count_nonzero(mask) / count
    assert abs(kept - keep) < SIGMAS * np.sqrt(keep * (1 - keep) / count)
    # Expectation preserved: E[mask] = 1.
    assert abs(mask.mean(dtype=np.float64) - 1.0) < SIGMAS * np.sqrt((1 - keep) / (keep * count))


def test_variational_masks_values_and_statistics():
    seed = tf.constant([1, 2], tf.int32)
    masks = dropout_lib.sample_variational_masks(seed, STAT_BATCH, STAT_UNITS, keep_output=(0.4, 0.25),
                                            keep_state=(0.7, 0.5))
    assert len(masks) == 2
    for (output_mask, state_mask), keep_output, keep_state in zip(masks, (0.4, 0.25), (0.7, 0.5)):
        assert output_mask.shape == state_mask.shape == (STAT_BATCH, STAT_UNITS)
        _assert_mask_statistics(output_mask, keep_output)
        _assert_mask_statistics(state_mask, keep_state)


def test_variational_mask_statistics_can_fail():
    """Guards the tolerance: a mask of keep 0.41 fails the test for keep 0.4."""
    seed = tf.constant([1, 2], tf.int32)
    (mask, _), = dropout_lib.sample_variational_masks(seed, STAT_BATCH, STAT_UNITS, (0.41,), (1.0,))
    relabelled = (np.asarray(mask) != 0).astype(np.float32) / np.float32(0.4)
    with pytest.raises(AssertionError):
        _assert_mask_statistics(relabelled, 0.4)


def test_variational_masks_are_seeded_and_independent():
    def sample(seed):
        masks = dropout_lib.sample_variational_masks(tf.constant(seed, tf.int32), 20, 30, (0.5, 0.5),
                                                (0.5, 0.5))
        return [np.asarray(mask) for pair in masks for mask in pair]

    first, again, other = sample([5, 6]), sample([5, 6]), sample([5, 7])
    for mask, same, different in zip(first, again, other):
        np.testing.assert_array_equal(mask, same)
        assert not np.array_equal(mask, different)
    # Output and state masks, and the masks of different layers, are different draws.
    for index, mask in enumerate(first):
        for later in first[index + 1:]:
            assert not np.array_equal(mask, later)


def test_variational_mask_of_keep_one_is_none():
    masks = dropout_lib.sample_variational_masks(tf.constant([1, 2]), 4, 3, (1.0, 0.5), (1.0, 1.0))
    assert masks[0] == (None, None)
    assert masks[1][0] is not None and masks[1][1] is None


def _variational_config(**changes):
    values = dict(name="tiny", num_layers=2, hidden_size=STAT_UNITS, num_steps=3, vocab_size=20,
                  dropout_style="variational", keep_output=((0.3,), (0.5, 0.25)),
                  keep_state=((0.3,), (0.5, 0.4)))
    values.update(changes)
    return configs.Config(**values)


def test_training_sample_masks():
    config = _variational_config()
    plan = DropoutPlan.for_depth(config, 2)
    masks = dropout_lib.sample_masks(config, plan, (1, 0, 0), STAT_BATCH)
    assert len(masks) == 2
    for (output_mask, state_mask), keep_output, keep_state in zip(masks, (0.5, 0.25), (0.5, 0.4)):
        _assert_mask_statistics(output_mask, keep_output)
        _assert_mask_statistics(state_mask, keep_state)
    again = dropout_lib.sample_masks(config, plan, (1, 0, 0), STAT_BATCH)
    next_epoch = dropout_lib.sample_masks(config, plan, (1, 1, 0), STAT_BATCH)
    other_seed = dropout_lib.sample_masks(_variational_config(seed=1), plan, (1, 0, 0), STAT_BATCH)
    for index in range(2):
        for kind in range(2):
            np.testing.assert_array_equal(masks[index][kind], again[index][kind])
            assert not np.array_equal(masks[index][kind], next_epoch[index][kind])
            assert not np.array_equal(masks[index][kind], other_seed[index][kind])


def test_training_sample_masks_per_phase_and_style():
    config = _variational_config()
    first_phase = dropout_lib.sample_masks(config, DropoutPlan.for_depth(config, 1), (0, 0, 0), 4)
    assert len(first_phase) == 1 and first_phase[0][0].shape == (4, STAT_UNITS)
    zaremba = configs.Config(name="tiny", num_layers=2, hidden_size=4, num_steps=3,
                             keep_output=((0.5,), (0.5, 0.5)))
    assert dropout_lib.sample_masks(zaremba, DropoutPlan.for_depth(zaremba, 2), (0, 0, 0), 4) is None


# --- Per-element (Zaremba) dropout. ---

def test_stateless_dropout_values_and_statistics():
    keep = 0.4
    inputs = tf.ones([400, 10, STAT_UNITS])  # 200,000 elements
    dropped = dropout_lib.stateless_dropout(inputs, keep, tf.constant([3, 4])).numpy()
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 1 / keep, rtol=1e-6)
    assert abs(kept.mean() - keep) < SIGMAS * np.sqrt(keep * (1 - keep) / kept.size)
    assert abs(dropped.mean(dtype=np.float64) - 1.0) < SIGMAS * np.sqrt((1 - keep) / (keep * dropped.size))
    # Fresh per element: the pattern at step t and at step t+1 agree only as often as two independent
    # draws do, p^2 + (1-p)^2 (a variational mask would agree everywhere).
    agree = np.mean((dropped[:, 0] != 0) == (dropped[:, 1] != 0))
    chance = keep ** 2 + (1 - keep) ** 2
    count = dropped[:, 0].size
    assert abs(agree - chance) < SIGMAS * np.sqrt(chance * (1 - chance) / count)


def test_stateless_dropout_scales_values_and_is_seeded():
    inputs = tf.random.stateless_uniform([8, 5, 6], seed=[0, 1], minval=0.5, maxval=1.5)
    first = dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 1])).numpy()
    kept = first != 0
    np.testing.assert_allclose(first[kept], inputs.numpy()[kept] / 0.5, rtol=1e-6)
    np.testing.assert_array_equal(first, dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 1])))
    assert not np.array_equal(first, dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 2])))


def test_stateless_dropout_keep_one_is_identity():
    inputs = tf.ones([2, 3])
    assert dropout_lib.stateless_dropout(inputs, 1.0, tf.constant([1, 2])) is inputs


# --- Serialization of every layer. ---

def _lstm_case():
    layer = lstm.BasicLSTM(UNITS, init_scale=0.2, forget_bias=1.0, rnn_mode="auto", seed=4,
                             name="basic_lstm")
    layer.build((None, None, INPUT))
    inputs, cell, hidden = _window()
    return layer, lambda target: target(inputs, (cell, hidden))


def _tied_head_case():
    layer = heads.TiedSoftmaxHead(12, 0.1, seed=5, name="tied_head")
    rng = np.random.RandomState(0)
    outputs = rng.uniform(-1, 1, (2, 3, UNITS)).astype(np.float32)
    embedding = rng.uniform(-1, 1, (12, UNITS)).astype(np.float32)
    return layer, lambda target: target(outputs, embedding)


def _head_case():
    layer = heads.SoftmaxHead(12, UNITS, 0.1, seed=6, name="softmax_head")
    outputs = np.random.RandomState(1).uniform(-1, 1, (2, 3, UNITS)).astype(np.float32)
    return layer, lambda target: target(outputs)


def _embedding_case(use_bias):
    layer = WordEmbedding(12, UNITS, 0.1, use_bias=use_bias, seed=7, name="embedding")
    ids = np.array([[0, 5, 11], [3, 3, 1]], np.int32)
    return layer, lambda target: target(ids)


LAYER_CASES = {"BasicLSTM": _lstm_case, "TiedSoftmaxHead": _tied_head_case,
               "SoftmaxHead": _head_case, "WordEmbedding": lambda: _embedding_case(False),
               "WordEmbedding_bias": lambda: _embedding_case(True)}


def _assert_same_layer(original, restored, call):
    assert type(restored) is type(original)
    assert restored.get_config() == original.get_config()
    assert [w.path for w in restored.weights] == [w.path for w in original.weights]
    for mine, theirs in zip(original.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    for mine, theirs in zip(tf.nest.flatten(call(original)), tf.nest.flatten(call(restored))):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_config_round_trip(case):
    layer, call = LAYER_CASES[case]()
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    # Same seed, same initial values.
    call(restored)
    for mine, theirs in zip(layer.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    # And through Keras's registry of serializable objects.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_keras_file_round_trip(case, tmp_path):
    layer, call = LAYER_CASES[case]()
    call(layer)
    randomize(layer, 11)  # trained values, not the seeded initial ones
    path = tmp_path / "layer.keras"
    keras.saving.save_model(layer, path)
    restored = keras.saving.load_model(path, safe_mode=True)
    _assert_same_layer(layer, restored, call)


@pytest.mark.parametrize("rnn_mode", ["basic", "cudnn"])
def test_bfloat16_layer_tracks_float32_on_both_paths(rnn_mode):
    """The keras.layers.LSTM path takes the Keras dtype policy, the basic path casts itself: both
    give 16-bit outputs and a float32 state close to the float32 layer's."""
    full = _new_lstm(rnn_mode, seed=4)
    mixed = lstm.BasicLSTM(UNITS, rnn_mode=rnn_mode, precision="mixed_bfloat16", seed=4)
    mixed.build((None, None, INPUT))
    for source, target in zip(full.weights, mixed.weights, strict=True):
        assert target.dtype == "float32"
        target.assign(source)
    inputs, cell, hidden = _window()
    expected_outputs, (expected_cell, expected_hidden) = full(inputs, (cell, hidden))
    outputs, (new_cell, new_hidden) = mixed(inputs, (cell, hidden))
    assert outputs.dtype == tf.bfloat16 and new_cell.dtype == new_hidden.dtype == tf.float32
    np.testing.assert_allclose(tf.cast(outputs, tf.float32).numpy(), expected_outputs.numpy(), atol=3e-2)
    np.testing.assert_allclose(new_cell.numpy(), expected_cell.numpy(), atol=3e-2)
    np.testing.assert_allclose(new_hidden.numpy(), expected_hidden.numpy(), atol=3e-2)
