"""The language model (nn/language_model.py): parameter counts of the registered configs (built by
`train.models.build_model`), the forward pass against NumPy, depth (no gradient above the head),
variational masks over windows, grow, freeze and one train step, and serialization of the model and
of its word embedding."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.nn import language_model as model
from gradual_rnn.nn.lstm import LSTMState
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import steps
from gradual_rnn.train.models import build_model
from nn.numpy_lstm import numpy_basic_lstm, tf1_weights
from nn.round_trips import assert_config_round_trip, assert_keras_file_round_trip

VOCAB, HIDDEN, LAYERS, BATCH, TIME = 50, 8, 3, 3, 4


def _tiny_config(tied=True, **changes):
    values = dict(name="tiny", num_layers=LAYERS, hidden_size=HIDDEN, num_steps=TIME,
                  batch_size=BATCH, vocab_size=VOCAB, init_scale=0.1, max_grad_norm=5.0,
                  keep_output=configs.uniform_table(LAYERS, 1.0),
                  keep_state=configs.uniform_table(LAYERS, 1.0), tied_weights=tied,
                  embedding_bias=tied, seed=11)
    values.update(changes)
    return configs.Config(**values)


def _tiny_model(tied, depth=None, **changes):
    return build_model(_tiny_config(tied, **changes), depth)


def _batch(seed=0, time=TIME):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, VOCAB, (BATCH, time)).astype(np.int32)
    targets = rng.randint(0, VOCAB, (BATCH, time)).astype(np.int32)
    return ids, targets


def _random_state(num_layers, seed=1):
    rng = np.random.RandomState(seed)
    return tuple((rng.uniform(-1, 1, (BATCH, HIDDEN)).astype(np.float32),
                  rng.uniform(-0.5, 0.5, (BATCH, HIDDEN)).astype(np.float32))
                 for _ in range(num_layers))


def _randomize_model(lm, seed):
    for index, weight in enumerate(lm.weights):
        weight.assign(np.random.RandomState(seed + index).uniform(-0.5, 0.5, weight.shape)
                      .astype(np.float32))


def _dense(gradient):
    """A gradient as a NumPy array (the embedding's may be IndexedSlices), or None."""
    return None if gradient is None else tf.convert_to_tensor(gradient).numpy()


def _values(lm):
    return {weight.path: weight.numpy().copy() for weight in lm.weights}


# --- Parameter counts (the tutorial and GL models, docs/reference.md). ---

PARAMETER_COUNTS = {"small": 4_651_600, "medium": 19_775_200, "large": 66_022_000,
                    "reference": 51_023_500, "gl": 51_023_500, "lad": 51_023_500,
                    "gl_lad": 51_023_500, "deep_gl_lad": 105_041_500}


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_parameter_count(name):
    assert model.parameter_count(build_model(configs.get_config(name))) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_formula_and_variable_shapes(tied):
    lm = _tiny_model(tied)
    lstm = LAYERS * (4 * (HIDDEN + HIDDEN) * HIDDEN + 4 * HIDDEN)
    if tied:  # E, b_embed_in, layers, b_embed_out
        expected = VOCAB * HIDDEN + HIDDEN + lstm + VOCAB
    else:  # E, layers, softmax_w, softmax_b
        expected = VOCAB * HIDDEN + lstm + HIDDEN * VOCAB + VOCAB
    assert model.parameter_count(lm) == expected
    shapes = {weight.path: tuple(weight.shape) for weight in lm.weights}
    assert shapes["embedding/embeddings"] == (VOCAB, HIDDEN)
    assert shapes["lstm_2/lstm/lstm_cell/kernel"] == (HIDDEN, 4 * HIDDEN)
    assert ("head/softmax_w" in shapes) is not tied


def test_initial_values_follow_the_references():
    """Uniform +-init_scale for every weight, embedding and output biases included; LSTM biases 0."""
    lm = _tiny_model(True, init_scale=0.04)
    for weight in lm.weights:
        values = weight.numpy()
        if weight.path.endswith("lstm_cell/bias"):
            assert np.all(values == 0)
        else:
            assert np.abs(values).max() <= 0.04 and np.abs(values).max() > 0.02
            assert np.unique(values).size == values.size  # not constant


# --- The forward pass against NumPy. ---

def _numpy_forward(lm, ids, state, depth):
    outputs = lm.embedding.embeddings.numpy()[ids].astype(np.float64)
    if lm.embedding_bias:
        outputs = outputs + lm.embedding.input_bias.numpy()
    new_state = []
    for index in range(depth):
        kernel, bias = tf1_weights(lm.lstm_layers[index])
        outputs, cell, hidden = numpy_basic_lstm(outputs, state[index][0], state[index][1], kernel,
                                                 bias, 0.0)
        new_state.append((cell, hidden))
    if lm.tied_weights:
        logits = outputs @ lm.embedding.embeddings.numpy().T + lm.head.output_bias.numpy()
    else:
        logits = outputs @ lm.head.softmax_w.numpy() + lm.head.softmax_b.numpy()
    return logits, new_state


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_forward_matches_numpy(tied, depth):
    lm = _tiny_model(tied)
    _randomize_model(lm, 3)
    ids, _ = _batch()
    state = _random_state(LAYERS)
    logits, new_state = lm(ids, state, depth=depth)
    expected_logits, expected_state = _numpy_forward(lm, ids, state, depth)
    assert logits.shape == (BATCH, TIME, VOCAB)
    np.testing.assert_allclose(logits.numpy(), expected_logits, rtol=0, atol=1e-5)
    assert len(new_state) == depth
    for (cell, hidden), (expected_cell, expected_hidden) in zip(new_state, expected_state):
        np.testing.assert_allclose(cell.numpy(), expected_cell, rtol=0, atol=1e-5)
        np.testing.assert_allclose(hidden.numpy(), expected_hidden, rtol=0, atol=1e-5)


def test_depth_outside_the_model_raises():
    lm = _tiny_model(True)
    ids, _ = _batch()
    for depth in (0, LAYERS + 1):
        with pytest.raises(ValueError, match=f"depth={depth} is outside 1..{LAYERS}"):
            lm(ids, lm.initial_state(BATCH), depth=depth)


def test_initial_state():
    state = _tiny_model(True).initial_state(BATCH, depth=2)
    assert len(state) == 2 and all(type(layer_state) is LSTMState for layer_state in state)
    for cell, hidden in state:
        assert cell.shape == hidden.shape == (BATCH, HIDDEN)
        assert not np.any(cell.numpy()) and not np.any(hidden.numpy())


# --- Depth: head k's cost reaches nothing above layer k. ---

@pytest.mark.parametrize("tied, depth, variational", [(True, 1, False), (True, 2, False),
                                                      (True, 1, True), (False, 1, False),
                                                      (False, 2, True)])
def test_head_cost_has_no_gradient_above_its_layer(tied, depth, variational):
    config = _tiny_config(tied, dropout_style="variational", keep_prob_embed=0.5,
                          keep_output=configs.uniform_table(LAYERS, 0.5),
                          keep_state=configs.uniform_table(LAYERS, 0.5))
    lm = build_model(config)
    ids, targets = _batch()
    plan, masks, seed = None, None, None
    if variational:  # masks for every layer, including those above the head
        plan = DropoutPlan.for_depth(config, LAYERS)
        masks = steps.sample_masks(config, plan, (0, 0, 0), BATCH)
        seed = tf.constant([1, 2])
    with tf.GradientTape() as tape:
        logits, new_state = lm(ids, _random_state(LAYERS), depth=depth, dropout=plan, seed=seed,
                               masks=masks)
        cost = steps.sequence_cost(logits, targets, BATCH)
    gradients = dict(zip([v.path for v in lm.trainable_variables],
                         map(_dense, tape.gradient(cost, lm.trainable_variables))))
    assert len(new_state) == depth
    above = [v.path for index in range(depth, LAYERS) for v in lm.layer_variables(index)]
    trained = [v.path for index in range(depth) for v in lm.layer_variables(index)]
    trained += [v.path for v in lm.embedding.weights + lm.head.weights]
    assert sorted(above + trained) == sorted(gradients)  # every variable is accounted for
    assert ("embedding/input_bias" in trained) is tied
    assert ("head/softmax_w" in trained) is not tied
    for path in above:
        assert gradients[path] is None or not np.any(gradients[path]), path
    for path in trained:
        assert gradients[path] is not None and np.any(gradients[path]), path


# --- Variational dropout inside the model. ---

def _identity_head(lm):
    """Makes logits[..., :HIDDEN] exactly the top layer's (dropped) outputs."""
    lm.head.softmax_w.assign(np.eye(HIDDEN, VOCAB, dtype=np.float32))
    lm.head.softmax_b.assign(np.zeros(VOCAB, np.float32))


def test_variational_masks_drop_the_same_units_at_every_step_and_window():
    config = _tiny_config(False, num_layers=2, dropout_style="variational", keep_prob_embed=0.5,
                          keep_output=((0.5,), (0.5, 0.5)), keep_state=((0.5,), (0.5, 0.5)))
    lm = build_model(config)
    _identity_head(lm)
    plan = DropoutPlan.for_depth(config, 2)
    masks = steps.sample_masks(config, plan, (1, 0, 0), BATCH)
    for depth in (1, 2):
        output_mask, state_mask = (np.asarray(mask) for mask in masks[depth - 1])
        assert 0 < np.count_nonzero(output_mask) < output_mask.size
        without_output_mask = list(masks)
        without_output_mask[depth - 1] = (None, masks[depth - 1][1])
        state = lm.initial_state(BATCH, depth)
        for window in range(2):  # two consecutive windows, state carried, same masks
            ids, _ = _batch(window)
            seed = tf.constant([window, 9])
            previous = state
            logits, state = lm(ids, previous, depth=depth, dropout=plan, seed=seed, masks=masks)
            top = logits.numpy()[..., :HIDDEN]
            expected_zeros = np.broadcast_to(output_mask[:, np.newaxis, :] == 0, top.shape)
            np.testing.assert_array_equal(top == 0, expected_zeros)
            # The kept units are the outputs without the output mask, times 1/keep.
            plain = lm(ids, previous, depth=depth, dropout=plan, seed=seed,
                       masks=without_output_mask)[0].numpy()[..., :HIDDEN]
            np.testing.assert_allclose(top, plain * output_mask[:, np.newaxis, :], rtol=1e-6, atol=0)
            # The h carried into the next window is the state-masked h; c is never masked.
            cell, hidden = (value.numpy() for value in state[depth - 1])
            np.testing.assert_array_equal(hidden == 0, state_mask == 0)
            assert np.all(cell != 0)


def test_zaremba_dropout_drops_fresh_units_at_every_step():
    config = _tiny_config(False, num_layers=2, keep_prob_embed=0.5,
                          keep_output=((0.5,), (0.5, 0.5)), keep_state=((1.0,), (1.0, 1.0)))
    lm = build_model(config)
    _identity_head(lm)
    ids, _ = _batch(time=20)
    plan = DropoutPlan.for_depth(config, 2)
    logits, _ = lm(ids, lm.initial_state(BATCH), dropout=plan, seed=tf.constant([4, 5]))
    dropped = logits.numpy()[..., :HIDDEN] == 0
    assert 0.3 < dropped.mean() < 0.7
    same_as_first_step = np.all(dropped == dropped[:, :1], axis=1)
    assert not np.all(same_as_first_step)
    eval_logits, _ = lm(ids, lm.initial_state(BATCH))
    assert not np.any(eval_logits.numpy()[..., :HIDDEN] == 0)


def test_cudnn_eligible_per_layer():
    config = _tiny_config(True, num_layers=2, dropout_style="variational",
                          keep_output=((0.5,), (0.5, 0.5)), keep_state=((0.5,), (1.0, 0.5)))
    lm = build_model(config)
    masks = steps.sample_masks(config, DropoutPlan.for_depth(config, 2), (0, 0, 0), BATCH)
    assert model.cudnn_eligible(lm) == [True, True]
    assert model.cudnn_eligible(lm, masks) == [True, False]
    for rnn_mode in ("basic", "block"):
        assert model.cudnn_eligible(build_model(dataclasses.replace(config, rnn_mode=rnn_mode))) \
            == [False, False]


# --- grow. ---

@pytest.mark.parametrize("tied", [True, False])
def test_grow_copies_values_and_initializes_the_new_layer(tied):
    source = _tiny_model(tied, depth=2)
    _randomize_model(source, 20)  # trained values, not the seeded initial ones
    copied = _values(source)
    direct = _values(_tiny_model(tied, depth=3))
    grown = {init: model.grow(source, 3, init) for init in ("random", "copy_below")}
    for init, target in grown.items():
        values = _values(target)
        assert target.num_layers == 3 and set(copied) < set(values)
        for path, value in copied.items():
            np.testing.assert_array_equal(values[path], value, err_msg=f"{init} {path}")
    new_random = [v.numpy() for v in grown["random"].layer_variables(2)]
    new_copy = [v.numpy() for v in grown["copy_below"].layer_variables(2)]
    below = [v.numpy() for v in source.layer_variables(1)]
    for random_value, copy_value, below_value, path in zip(
            new_random, new_copy, below, [v.path for v in grown["random"].layer_variables(2)]):
        np.testing.assert_array_equal(copy_value, below_value)
        np.testing.assert_array_equal(random_value, direct[path])  # the seeded init of layer 3
    assert not np.array_equal(new_random[0], below[0]) and not np.array_equal(new_random[1], below[1])


@pytest.mark.parametrize("tied", [True, False])
def test_directly_built_model_equals_grown_model(tied):
    grown = model.grow(model.grow(_tiny_model(tied, depth=1), 2), 3)
    direct = _tiny_model(tied)
    assert [w.path for w in grown.weights] == [w.path for w in direct.weights]
    for mine, theirs in zip(grown.weights, direct.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    # Every layer has its own seeds: no two layers (nor kernel and recurrent kernel) start equal.
    kernels = [v.numpy() for index in range(LAYERS) for v in direct.layer_variables(index)[:2]]
    for index, kernel in enumerate(kernels):
        for other in kernels[index + 1:]:
            assert not np.array_equal(kernel, other)


def test_grown_model_owns_its_variables():
    source = _tiny_model(True, depth=2)
    before = source.embedding.embeddings.numpy().copy()
    target = model.grow(source, 3)
    target.embedding.embeddings.assign(np.zeros((VOCAB, HIDDEN), np.float32))
    target.lstm_layers[0].kernel.assign(np.zeros((HIDDEN, 4 * HIDDEN), np.float32))
    np.testing.assert_array_equal(source.embedding.embeddings.numpy(), before)
    assert np.any(source.lstm_layers[0].kernel.numpy())


def test_grow_errors():
    source = _tiny_model(True, depth=2)
    with pytest.raises(ValueError, match="Cannot grow a 2-layer model to depth 2"):
        model.grow(source, 2)
    with pytest.raises(ValueError, match="new_layer_init='zeros'"):
        model.grow(source, 3, "zeros")
    narrow = _tiny_model(False, depth=1, embedding_size=5)
    with pytest.raises(ValueError, match="copy_below' needs layer 1 and layer 2 of equal shapes"):
        model.grow(narrow, 2, "copy_below")
    assert model.grow(narrow, 2).lstm_layers[1].kernel.shape == (HIDDEN, 4 * HIDDEN)


# --- freeze and one train step. ---

def test_freeze_sets_trainable_variables():
    lm = _tiny_model(True)
    model.freeze(lm, [0])
    trainable = {v.path for v in lm.trainable_variables}
    frozen = {v.path for v in lm.layer_variables(0)}
    assert not trainable & frozen
    assert frozen <= {v.path for v in lm.non_trainable_variables}
    assert trainable == {v.path for v in lm.weights} - frozen
    model.freeze(lm, [])
    assert len(lm.trainable_variables) == len(lm.weights)


@pytest.mark.filterwarnings("ignore:Gradients do not exist for variables \\['lstm_3")  # unused layer 3
@pytest.mark.parametrize("tied", [True, False])
def test_one_train_step_moves_trainable_variables_only(tied):
    config = _tiny_config(tied)
    lm = build_model(config)
    model.freeze(lm, [0])
    depth = 2
    ids, targets = _batch()
    state = _random_state(depth)
    # The expected SGD step at lr 1: variable - clip_by_global_norm(gradient).
    with tf.GradientTape() as tape:
        cost = steps.sequence_cost(lm(ids, state, depth=depth)[0], targets, BATCH)
    gradients = tape.gradient(cost, lm.trainable_variables)
    clipped, norm = tf.clip_by_global_norm(gradients, config.max_grad_norm)
    expected = {v.path: v.numpy() - (0 if g is None else _dense(g))
                for v, g in zip(lm.trainable_variables, clipped)}
    before = _values(lm)
    step = steps.make_train_step(lm, keras.optimizers.SGD(learning_rate=1.0), config,
                                 DropoutPlan.for_depth(config, depth), depth)
    step_cost, new_state, step_norm = step.one(ids, targets, state, tf.constant([0, 0, 0], tf.int64), None)
    np.testing.assert_allclose(step_cost.numpy(), cost.numpy(), rtol=1e-6)
    np.testing.assert_allclose(step_norm.numpy(), norm.numpy(), rtol=1e-5)
    assert len(new_state) == depth and all(type(layer_state) is LSTMState for layer_state in new_state)
    assert step.many is not None and step.counters is None
    after = _values(lm)
    frozen = {v.path for v in lm.layer_variables(0)}
    unused = {v.path for v in lm.layer_variables(2)}
    for path in frozen | unused:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    moved = set(after) - frozen - unused
    assert {v.path for v in lm.layer_variables(1)} < moved and "embedding/embeddings" in moved
    assert any(path.startswith("head/") for path in moved)
    for path in moved:
        assert not np.array_equal(after[path], before[path]), path
        np.testing.assert_allclose(after[path], expected[path], rtol=0, atol=1e-6, err_msg=path)


# --- Serialization. ---

@pytest.mark.parametrize("tied", [True, False])
def test_language_model_config_round_trip(tied):
    lm = _tiny_model(tied, rnn_mode="basic", forget_bias=1.0)
    config = lm.get_config()
    restored = model.LanguageModel.from_config(config)
    assert restored.get_config() == config
    for mine, theirs in zip(lm.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(lm))
    assert type(revived) is model.LanguageModel and revived.get_config() == config


@pytest.mark.parametrize("tied", [True, False])
def test_language_model_keras_file_round_trip(tied, tmp_path):
    lm = _tiny_model(tied)
    _randomize_model(lm, 30)  # trained values, not the seeded initial ones
    path = tmp_path / "model.keras"
    lm.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is model.LanguageModel
    assert restored.get_config() == lm.get_config()
    assert [w.path for w in restored.weights] == [w.path for w in lm.weights]
    for mine, theirs in zip(lm.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy(), err_msg=mine.path)
    ids, _ = _batch()
    state = _random_state(LAYERS)
    for depth in (1, LAYERS):
        mine, theirs = lm(ids, state, depth=depth), restored(ids, state, depth=depth)
        for a, b in zip(tf.nest.flatten(mine), tf.nest.flatten(theirs)):
            np.testing.assert_array_equal(b.numpy(), a.numpy())


def _embedding_case(use_bias):
    layer = model.WordEmbedding(12, HIDDEN, 0.1, use_bias=use_bias, seed=7, name="embedding")
    ids = np.array([[0, 5, 11], [3, 3, 1]], np.int32)
    return layer, lambda target: target(ids)


@pytest.mark.parametrize("use_bias", [False, True])
def test_word_embedding_config_round_trip(use_bias):
    assert_config_round_trip(*_embedding_case(use_bias))


@pytest.mark.parametrize("use_bias", [False, True])
def test_word_embedding_keras_file_round_trip(use_bias, tmp_path):
    assert_keras_file_round_trip(*_embedding_case(use_bias), tmp_path / "layer.keras")


# --- Mixed precision. ---

def _cost_and_gradients(lm, ids, targets, state, plan=None, seed=None):
    with tf.GradientTape() as tape:
        summed, new_state = lm.summed_cost(tf.constant(ids), tf.constant(targets), state, dropout=plan,
                                           seed=seed)
    gradients = tape.gradient(summed, lm.trainable_variables)
    return float(summed), new_state, [_dense(gradient) for gradient in gradients]


@pytest.mark.parametrize("precision, tolerance", [("mixed_bfloat16", 2e-2), ("mixed_float16", 3e-3)])
@pytest.mark.parametrize("tied", [True, False])
def test_mixed_precision_tracks_float32(precision, tolerance, tied):
    """Same variables (float32), products in 16 bits: cost, state and gradients stay close to the
    float32 model's, and the carried state stays float32."""
    full = _tiny_model(tied)
    _randomize_model(full, 3)
    mixed = _tiny_model(tied, precision=precision)
    for source, target in zip(full.weights, mixed.weights, strict=True):
        assert target.dtype == "float32"
        target.assign(source)
    ids, targets = _batch(4)
    state = tuple((tf.constant(c), tf.constant(h)) for c, h in _random_state(LAYERS))
    expected_cost, expected_state, expected_gradients = _cost_and_gradients(full, ids, targets, state)
    cost, new_state, gradients = _cost_and_gradients(mixed, ids, targets, state)
    assert cost == pytest.approx(expected_cost, rel=tolerance)
    for (cell, hidden), (expected_cell, expected_hidden) in zip(new_state, expected_state):
        assert cell.dtype == hidden.dtype == tf.float32
        np.testing.assert_allclose(cell.numpy(), expected_cell.numpy(), atol=10 * tolerance)
        np.testing.assert_allclose(hidden.numpy(), expected_hidden.numpy(), atol=10 * tolerance)
    for gradient, expected in zip(gradients, expected_gradients, strict=True):
        assert gradient.dtype == np.float32
        scale = np.abs(expected).max()
        np.testing.assert_allclose(gradient, expected, atol=10 * tolerance * scale)
        cosine = np.sum(gradient * expected) / (np.linalg.norm(gradient) * np.linalg.norm(expected))
        assert cosine > 0.999
    logits, _ = mixed(tf.constant(ids), state)
    assert logits.dtype == tf.float32


@pytest.mark.parametrize("style", ["zaremba", "variational"])
def test_mixed_precision_with_dropout(style):
    """Dropout (per element or masks) runs on the 16-bit activations."""
    keep = configs.uniform_table(LAYERS, 0.5)
    config = _tiny_config(True, precision="mixed_bfloat16", dropout_style=style, keep_output=keep,
                          keep_state=keep if style == "variational" else configs.uniform_table(LAYERS, 1.0))
    lm = build_model(config)
    plan = DropoutPlan.for_depth(config, LAYERS)
    masks = steps.sample_masks(config, plan, (1, 0, 0), BATCH)
    ids, targets = _batch(5)
    with tf.GradientTape() as tape:
        summed, state = lm.summed_cost(tf.constant(ids), tf.constant(targets), lm.initial_state(BATCH),
                                       dropout=plan, seed=tf.constant([1, 2]), masks=masks)
    gradients = tape.gradient(summed, lm.trainable_variables)
    assert np.isfinite(float(summed)) and all(g is not None for g in gradients)
    assert all(cell.dtype == tf.float32 for cell, _ in state)
