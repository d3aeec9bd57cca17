"""VariationalLSTM (nn/lstm.py) as a Keras layer: one call with masks against the NumPy TF1 cell
(eager and compiled), the masks (training switch, seeds, policies, statistics), any time length,
state (initial, returned, held between calls), the cuDNN path's eligibility, and keras.Sequential:
fit, then a `.keras` round trip in safe mode."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import hardware
from gradual_rnn.data import ptb
from gradual_rnn.nn import LSTMState, Perplexity, VariationalLSTM, WindowCrossEntropy
from nn.numpy_lstm import numpy_basic_lstm, tf1_weights
from nn.round_trips import assert_config_round_trip, assert_keras_file_round_trip, randomize

BATCH, TIME, INPUT, UNITS = 3, 5, 4, 6
SEED = tf.constant([4, 7], tf.int32)


def _layer(keep_output=0.5, keep_state=0.5, forget_bias=1.0, **options):
    options = dict(dict(return_sequences=True, return_state=True, seed=1), **options)
    layer = VariationalLSTM(UNITS, keep_output=keep_output, keep_state=keep_state, forget_bias=forget_bias,
                            **options)
    layer.build((None, None, INPUT))
    randomize(layer, 2)
    return layer


def _window(seed=0, batch=BATCH, time=TIME):
    rng = np.random.RandomState(100 + seed)
    return (rng.uniform(-1, 1, (batch, time, INPUT)).astype(np.float32),
            rng.uniform(-1, 1, (batch, UNITS)).astype(np.float32),
            rng.uniform(-0.5, 0.5, (batch, UNITS)).astype(np.float32))


# --- One call against NumPy. ---

@pytest.mark.parametrize("mode", ["eager", "function"])
def test_one_call_with_masks_matches_numpy(mode):
    """outputs = h * m_out at every step; the h fed back and returned = h * m_state; c unmasked."""
    layer = _layer()
    inputs, cell, hidden = _window()

    def run(inputs, cell, hidden):
        return layer(inputs, LSTMState(cell, hidden), training=True, seed=SEED)

    if mode == "function":
        run = tf.function(run)
    outputs, (new_cell, new_hidden) = run(inputs, cell, hidden)
    output_mask, state_mask = (mask.numpy() for mask in layer.draw_masks(BATCH, SEED))
    for mask in (output_mask, state_mask):
        assert 0 < np.count_nonzero(mask) < mask.size
    kernel, bias = tf1_weights(layer)
    plain, expected_cell, expected_hidden = numpy_basic_lstm(inputs.astype(np.float64), cell, hidden, kernel,
                                                             bias, 1.0, state_mask)
    np.testing.assert_allclose(outputs.numpy(), plain * output_mask[:, np.newaxis], rtol=0, atol=1e-5)
    np.testing.assert_allclose(new_cell.numpy(), expected_cell, rtol=0, atol=1e-5)
    np.testing.assert_allclose(new_hidden.numpy(), expected_hidden, rtol=0, atol=1e-5)
    np.testing.assert_allclose(new_hidden.numpy(), plain[:, -1] * state_mask, rtol=0, atol=1e-5)


def test_training_false_is_deterministic_and_unmasked():
    layer = _layer()
    inputs, cell, hidden = _window()
    first, (_, first_hidden) = layer(inputs, (cell, hidden), training=False)
    second, _ = layer(inputs, (cell, hidden))
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    kernel, bias = tf1_weights(layer)
    plain, _, expected_hidden = numpy_basic_lstm(inputs.astype(np.float64), cell, hidden, kernel, bias, 1.0)
    np.testing.assert_allclose(first.numpy(), plain, rtol=0, atol=1e-5)
    np.testing.assert_allclose(first_hidden.numpy(), expected_hidden, rtol=0, atol=1e-5)


# --- The masks: seeds and policies. ---

def _outputs(layer, **call):
    inputs, cell, hidden = _window()
    return layer(inputs, (cell, hidden), training=True, **call)[0].numpy()


def test_a_fixed_seed_gives_the_same_masks_twice():
    layer = _layer()
    np.testing.assert_array_equal(_outputs(layer, seed=SEED), _outputs(layer, seed=SEED))
    assert not np.array_equal(_outputs(layer, seed=SEED), _outputs(layer, seed=tf.constant([4, 8])))
    # The generator of a layer is seeded by its `seed`: equal layers draw equal masks, call by call.
    twin = _layer()
    for _ in range(2):
        np.testing.assert_array_equal(_outputs(layer), _outputs(twin))


def test_per_call_policy_draws_new_masks_every_call():
    layer = _layer(mask_policy="per_call")
    assert not np.array_equal(_outputs(layer), _outputs(layer))


def test_fixed_policy_holds_the_masks_until_refreshed():
    layer = _layer(mask_policy="fixed")
    held = _outputs(layer)
    np.testing.assert_array_equal(_outputs(layer), held)
    layer.refresh_masks()
    refreshed = _outputs(layer)
    assert not np.array_equal(refreshed, held)
    np.testing.assert_array_equal(_outputs(layer), refreshed)
    layer.refresh_masks(5)  # an explicit seed: reproducible
    again = _outputs(layer)
    layer.refresh_masks(tf.constant([5, 0]))
    np.testing.assert_array_equal(_outputs(layer), again)
    np.testing.assert_array_equal(_outputs(layer, seed=tf.constant([5, 0])), again)


def test_explicit_masks_win_whatever_training_says():
    layer = _layer()
    output_mask, state_mask = layer.draw_masks(BATCH, SEED)
    inputs, cell, hidden = _window()
    given = layer(inputs, (cell, hidden), training=False, masks=(output_mask, state_mask))[0]
    drawn = layer(inputs, (cell, hidden), training=True, seed=SEED)[0]
    np.testing.assert_array_equal(given.numpy(), drawn.numpy())


def test_mask_statistics():
    """One `bernoulli(keep) / keep` mask per stream: values 0 or 1/keep, about `keep` of them kept,
    the same units dropped at every step, independent output and state masks."""
    layer = VariationalLSTM(200, keep_output=0.7, keep_state=0.4, return_sequences=True, seed=3)
    output_mask, state_mask = (mask.numpy() for mask in layer.draw_masks(50, SEED))
    for mask, keep in ((output_mask, 0.7), (state_mask, 0.4)):
        assert set(np.unique(mask)) == {0.0, np.float32(1.0 / keep)}
        assert abs((mask > 0).mean() - keep) < 0.02
    assert abs(((output_mask > 0) & (state_mask > 0)).mean() - 0.28) < 0.02
    outputs = layer(np.random.RandomState(1).uniform(-1, 1, (50, 4, 3)).astype(np.float32), training=True,
                    seed=SEED).numpy()
    np.testing.assert_array_equal(outputs == 0, np.broadcast_to(output_mask[:, None] == 0, outputs.shape))


def test_no_state_mask_keeps_the_cudnn_eligible_path(monkeypatch):
    monkeypatch.setattr(hardware, "gpu_available", lambda: True)
    calls = []
    original = keras.layers.LSTM.call
    monkeypatch.setattr(keras.layers.LSTM, "call",
                        lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    inputs = _window()[0]
    _layer(keep_output=0.5, keep_state=1.0, forget_bias=0.0)(inputs, training=True)
    _layer(keep_state=0.5, forget_bias=0.0)(inputs, training=False)
    assert len(calls) == 2
    _layer(keep_state=0.5, forget_bias=0.0)(inputs, training=True)
    assert len(calls) == 2  # a state mask needs the basic path


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="keep_state=0.0 is outside"):
        VariationalLSTM(UNITS, keep_state=0.0)
    with pytest.raises(ValueError, match="mask_policy='epoch'"):
        VariationalLSTM(UNITS, mask_policy="epoch")
    with pytest.raises(ValueError, match="cannot apply a recurrent"):
        VariationalLSTM(UNITS, keep_state=0.5, rnn_mode="cudnn")


# --- Time, state and outputs. ---

def test_any_time_length_in_a_compiled_graph():
    """One trace with an unknown time length serves windows of 2 and 7 steps; gradients too."""
    layer = _layer()

    @tf.function(input_signature=[tf.TensorSpec([BATCH, None, INPUT])])
    def run(inputs):
        with tf.GradientTape() as tape:
            outputs, _ = layer(inputs, training=True, seed=SEED)
            loss = tf.reduce_sum(outputs ** 2)
        return outputs, tape.gradient(loss, layer.recurrent_kernel)

    for time in (2, 7):
        inputs = _window(time=time)[0]
        outputs, gradient = run(inputs)
        expected = layer(inputs, training=True, seed=SEED)[0]
        np.testing.assert_allclose(outputs.numpy(), expected.numpy(), rtol=0, atol=1e-6)
        assert outputs.shape == (BATCH, time, UNITS) and np.abs(gradient.numpy()).max() > 0


def test_return_sequences_and_state_options():
    inputs, cell, hidden = _window()
    everything, state = _layer()(inputs, (cell, hidden), training=True, seed=SEED)
    last = _layer(return_sequences=False, return_state=False)(inputs, (cell, hidden), training=True, seed=SEED)
    np.testing.assert_array_equal(last.numpy(), everything.numpy()[:, -1])
    assert type(state) is LSTMState and state.cell.shape == (BATCH, UNITS)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_stateful_layer_carries_its_state_between_calls(mode):
    """Two half windows equal the whole window; a reset, or another batch size, starts from zeros."""
    layer = _layer(keep_state=1.0, keep_output=1.0, stateful=True)
    inputs = _window(time=8)[0]
    call = layer if mode == "eager" else tf.function(lambda inputs: layer(inputs))
    whole, whole_state = call(inputs)
    layer.reset_state()
    first, _ = call(inputs[:, :4])
    second, second_state = call(inputs[:, 4:])
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(second_state.hidden.numpy(), whole_state.hidden.numpy(), rtol=0, atol=1e-6)
    other_batch, _ = call(inputs[:2, :4])
    np.testing.assert_allclose(other_batch.numpy(), first.numpy()[:2], rtol=0, atol=1e-6)
    layer.reset_state()
    np.testing.assert_allclose(call(inputs[:2, :4])[0].numpy(), first.numpy()[:2], rtol=0, atol=1e-6)


# --- Serialization and keras.Sequential. ---

def _layer_case():
    layer = VariationalLSTM(UNITS, keep_output=0.6, keep_state=0.7, mask_policy="fixed", forget_bias=1.0,
                            return_sequences=True, return_state=True, stateful=True, seed=4,
                            name="variational_lstm")
    inputs, cell, hidden = _window()
    return layer, lambda target: target(inputs, (cell, hidden))


def test_config_round_trip():
    assert_config_round_trip(*_layer_case())


def test_keras_file_round_trip(tmp_path):
    assert_keras_file_round_trip(*_layer_case(), tmp_path / "layer.keras")


def _corpus_windows(batch_size=4, num_steps=6):
    """A tiny corpus with structure to learn (0 3 6 9 2 5 ...), as `ptb.make_dataset` lays it out."""
    ids = np.array([3 * index % 10 for index in range(600)], np.int32)
    return ptb.make_dataset(ids, batch_size, num_steps)


def test_sequential_trains_with_fit_and_reloads_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"), keras.layers.Embedding(10, 16),
        VariationalLSTM(16, keep_output=0.8, keep_state=0.8, init_scale=0.5, return_sequences=True, seed=1),
        VariationalLSTM(16, keep_output=0.8, keep_state=0.8, mask_policy="fixed", init_scale=0.5,
                        return_sequences=True, seed=2),
        keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=5.0), loss=WindowCrossEntropy(),
                  metrics=[Perplexity()], jit_compile=False)
    history = model.fit(_corpus_windows(), epochs=3, shuffle=False, verbose=0).history
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["perplexity"][-1] < history["perplexity"][0]
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert [type(layer) for layer in restored.layers] == [type(layer) for layer in model.layers]
    assert restored.layers[2].get_config() == model.layers[2].get_config()
    ids = np.array([[1, 4, 7, 0, 3, 6, 9]], np.int32)  # another length than trained on
    np.testing.assert_array_equal(restored(ids, training=False).numpy(), model(ids, training=False).numpy())
