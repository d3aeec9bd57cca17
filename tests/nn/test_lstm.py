"""The LSTM layer (nn/lstm.py): BasicLSTM against a NumPy TF1 BasicLSTMCell (eager, tf.function,
XLA), its compute paths and their cuDNN eligibility, the hand-written backward pass against autodiff
and finite differences, row groups bit for bit, mixed precision, and serialization."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow.rnn import _do_lstm_arguments_support_cudnn

from gradual_rnn import hardware
from gradual_rnn.nn import lstm
from nn.numpy_lstm import numpy_basic_lstm, tf1_weights
from nn.round_trips import assert_config_round_trip, assert_keras_file_round_trip, randomize

BATCH, TIME, INPUT, UNITS = 3, 5, 4, 6
EXECUTION_MODES = ("eager", "function", "xla")


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
        outputs, (new_cell, new_hidden) = layer(inputs, lstm.LSTMState(cell, hidden), recurrent_mask=mask)
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


def test_basic_path_runs_a_time_length_known_only_at_run_time():
    """A graph traced with an unknown time length runs one step per loop iteration: the same
    outputs, state and gradients as the static window, with the state mask."""
    layer = _new_lstm("basic", forget_bias=1.0)
    mask = (np.random.RandomState(9).uniform(size=(BATCH, UNITS)) < 0.5).astype(np.float32) / 0.5

    def run(inputs, cell, hidden):
        with tf.GradientTape() as tape:
            tape.watch([inputs, cell, hidden])
            outputs, state = layer(inputs, (cell, hidden), recurrent_mask=mask)
            loss = tf.reduce_sum(outputs * outputs) + tf.reduce_sum(state.cell * state.hidden)
        return [outputs, *state] + tape.gradient(loss, [inputs, cell, hidden, layer.recurrent_kernel])

    dynamic = tf.function(run, input_signature=[tf.TensorSpec([BATCH, None, INPUT]),
                                                tf.TensorSpec([BATCH, UNITS]), tf.TensorSpec([BATCH, UNITS])])
    window = [tf.constant(value) for value in _window()]
    for mine, wanted in zip(dynamic(*window), tf.function(run)(*window), strict=True):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=0, atol=1e-6)


# --- cuDNN eligibility by construction. ---

@pytest.mark.parametrize("rnn_mode", ["auto", "cudnn"])
def test_cudnn_eligible_arguments(rnn_mode):
    layer = _new_lstm(rnn_mode)
    assert layer.cudnn_eligible() and layer.cudnn_eligible(None)
    fused = layer.lstm
    assert isinstance(fused, keras.layers.LSTM)
    assert fused.cell.activation is keras.activations.tanh
    assert fused.cell.recurrent_activation is keras.activations.sigmoid
    assert fused.cell.use_bias is True
    assert fused.recurrent_dropout == 0 and fused.dropout == 0
    assert fused.unroll is False and fused.go_backwards is False
    assert fused.use_cudnn == "auto"
    assert fused.cell.unit_forget_bias is False
    # Keras's own test of whether its TF backend may run the fused cuDNN kernel.
    assert _do_lstm_arguments_support_cudnn(activation=fused.cell.activation,
                                            recurrent_activation=fused.cell.recurrent_activation,
                                            unroll=fused.unroll, use_bias=fused.cell.use_bias)


def _refuse(what):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} ran")
    return refuse


def test_auto_on_a_gpu_runs_on_keras_lstm(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_available", lambda: True)
    layer = _new_lstm("auto")
    assert layer.uses_cudnn_path()
    monkeypatch.setattr(lstm.BasicLSTM, "_basic_call", _refuse("the basic path"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden))[0].shape == (BATCH, TIME, UNITS)
    with pytest.raises(AssertionError, match="the basic path ran"):
        layer(inputs, (cell, hidden), recurrent_mask=np.ones((BATCH, UNITS), np.float32))


def test_auto_on_a_cpu_takes_the_basic_path(monkeypatch):
    """On a CPU Keras's LSTM runs a generic loop slower than the basic path, so auto skips it."""
    monkeypatch.setattr(hardware, "gpu_available", lambda: False)
    layer = _new_lstm("auto")
    assert layer.cudnn_eligible() and not layer.uses_cudnn_path()
    assert _new_lstm("cudnn").uses_cudnn_path()
    monkeypatch.setattr(keras.layers.LSTM, "call", _refuse("keras.layers.LSTM"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden))[0].shape == (BATCH, TIME, UNITS)


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_with_state_mask_takes_the_basic_path(monkeypatch, gpu):
    monkeypatch.setattr(hardware, "gpu_available", lambda: gpu)
    layer = _new_lstm("auto")
    mask = np.ones((BATCH, UNITS), np.float32)
    assert not layer.uses_cudnn_path(mask) and not layer.cudnn_eligible(mask)
    monkeypatch.setattr(keras.layers.LSTM, "call", _refuse("keras.layers.LSTM"))
    inputs, cell, hidden = _window()
    assert layer(inputs, (cell, hidden), recurrent_mask=mask)[0].shape == (BATCH, TIME, UNITS)


def test_basic_mode_and_forget_bias_never_take_the_cudnn_path(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_available", lambda: True)
    for layer in (_new_lstm("basic"), _new_lstm("auto", forget_bias=1.0)):
        assert not layer.uses_cudnn_path() and not layer.cudnn_eligible()


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_block_mode_is_the_basic_path_bit_for_bit(monkeypatch, mode):
    """`rnn_mode='block'` (the tutorial's LSTMBlockCell default) is the same math: it takes the basic
    path, even with a GPU in view, and gives exactly its outputs and state."""
    monkeypatch.setattr(hardware, "gpu_available", lambda: True)
    block, basic = _new_lstm("block", forget_bias=1.0), _new_lstm("basic", forget_bias=1.0)
    assert not block.cudnn_eligible() and not block.uses_cudnn_path()
    for mine, theirs in zip(block.weights, basic.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())  # same seed, same values
    monkeypatch.setattr(keras.layers.LSTM, "call", _refuse("keras.layers.LSTM"))
    inputs, cell, hidden = _window()
    mask = (np.random.RandomState(8).uniform(size=(BATCH, UNITS)) < 0.5).astype(np.float32) / 0.5
    for recurrent_mask in (None, mask):
        expected = _runner(basic, mode)(inputs, cell, hidden, recurrent_mask)
        actual = _runner(block, mode)(inputs, cell, hidden, recurrent_mask)
        for mine, wanted in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(mine.numpy(), wanted.numpy())
    assert block.get_config()["rnn_mode"] == "block"


@pytest.mark.parametrize("rnn_mode", ["basic", "cudnn"])
def test_state_is_an_lstm_state_on_both_paths(rnn_mode):
    """The new state is an `LSTMState(cell, hidden)` that still unpacks as `(c, h)`."""
    layer = _new_lstm(rnn_mode)
    inputs, cell, hidden = _window()
    outputs, state = layer(inputs, lstm.LSTMState(cell, hidden))
    assert type(state) is lstm.LSTMState and state._fields == ("cell", "hidden")
    new_cell, new_hidden = state
    assert new_cell is state.cell and new_hidden is state.hidden
    np.testing.assert_array_equal(new_hidden.numpy(), outputs.numpy()[:, -1])
    assert not np.array_equal(new_cell.numpy(), new_hidden.numpy())


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


def test_recurrence_returns_an_lstm_state():
    arguments, _, _ = _recurrence_case()
    outputs, state = lstm.lstm_recurrence(*[tf.constant(value) for value in arguments], None, None, 0.0)
    assert type(state) is lstm.LSTMState
    np.testing.assert_array_equal(state.hidden.numpy(), outputs.numpy()[:, -1])


def test_steps_per_block():
    assert [lstm.steps_per_block(n) for n in (1, 5, 8, 12, 20, 35, 11, 128)] == [1, 5, 8, 6, 5, 7, 1, 8]


# Under tf.function, every layout with mask and h-detach both off and both on, and every combination
# of one layout (2 blocks of 6 steps, forget bias 1); eagerly, every combination of that layout (the
# eager and compiled paths run the same Python); under XLA (slow to compile) the two layouts of
# several blocks (2 blocks of 6 steps; 11 blocks of 1) with mask and h-detach both on, which
# exercises every branch of the backward pass.
RECURRENCE_CASES = [(mode, masked, detached, forget_bias, time)
                    for forget_bias, time in [(0.0, TIME), (1.0, TIME), (1.0, 12), (0.0, 11)]
                    for mode in EXECUTION_MODES for masked in (False, True) for detached in (False, True)
                    if (mode == "function" and (masked == detached or forget_bias == 1.0 and time == 12))
                    or (mode == "eager" and forget_bias == 1.0 and time == 12)
                    or (mode == "xla" and masked and detached and time != TIME)]


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
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    monkeypatch.setattr(hardware, "gpu_available", lambda: False)
    assert [lstm.batch_groups(20, units) for units in (8, 127, 128, 200, 512, 513, 650)] == [1, 1, 2, 2, 2, 1, 1]
    assert [lstm.batch_groups(batch, 200) for batch in (1, 2, 19, 64, None)] == [1, 1, 1, 2, 1]
    assert lstm.batch_groups(20, 130) == 1  # a group of 10 x 130 floats ends inside a vector register
    monkeypatch.setattr(hardware, "usable_cores", lambda: 1)
    assert lstm.batch_groups(20, 200) == 1
    monkeypatch.setattr(hardware, "usable_cores", lambda: 2)
    monkeypatch.setattr(hardware, "gpu_available", lambda: True)
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


# --- Serialization. ---

def _lstm_case():
    layer = lstm.BasicLSTM(UNITS, init_scale=0.2, forget_bias=1.0, rnn_mode="auto", seed=4,
                           name="basic_lstm")
    layer.build((None, None, INPUT))
    inputs, cell, hidden = _window()
    return layer, lambda target: target(inputs, (cell, hidden))


def test_lstm_config_round_trip():
    assert_config_round_trip(*_lstm_case())


def test_lstm_keras_file_round_trip(tmp_path):
    assert_keras_file_round_trip(*_lstm_case(), tmp_path / "layer.keras")


# --- Mixed precision. ---

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
