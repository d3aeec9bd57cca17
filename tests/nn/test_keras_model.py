"""LanguageModel (nn/language_model.py) as a standard Keras model: a call without state gives logits,
`predict`, `compile` + `fit` (one step equals the package's own train step), the model's own
dropout switched by `training`, stateful streams, and a `.keras` round trip of all of it."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.nn import LanguageModel, WindowCrossEntropy
from gradual_rnn.nn import language_model
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import steps
from gradual_rnn.train.gradual import RefreshMasks, ResetStates
from gradual_rnn.train.models import build_model

VOCAB, HIDDEN, LAYERS, BATCH, TIME = 30, 8, 2, 4, 5


def _ids(seed=0, time=TIME):
    rng = np.random.RandomState(seed)
    return (rng.randint(0, VOCAB, (BATCH, time)).astype(np.int32),
            rng.randint(0, VOCAB, (BATCH, time)).astype(np.int32))


def _model(**changes):
    return LanguageModel(**dict(dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, init_scale=0.1,
                                     tied_weights=True, embedding_bias=True, seed=3), **changes))


@pytest.mark.parametrize("tied", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_one_fit_step_equals_the_package_train_step(tied):
    """SGD at learning rate 1 with the references' clipping by global norm, one window: `fit`
    (WindowCrossEntropy, `global_clipnorm`) moves every weight as `make_train_step(...).one` does."""
    config = configs.Config(name="tiny", num_layers=LAYERS, hidden_size=HIDDEN, num_steps=TIME,
                            batch_size=BATCH, vocab_size=VOCAB, init_scale=0.1, max_grad_norm=0.5, seed=3,
                            tied_weights=tied, embedding_bias=tied)
    ids, targets = _ids()
    package, keras_model = build_model(config), build_model(config)
    before = [weight.numpy() for weight in package.weights]
    step = steps.make_train_step(package, keras.optimizers.SGD(learning_rate=1.0), config,
                                 DropoutPlan.for_depth(config, LAYERS), LAYERS)
    cost, _, norm = step.one(ids, targets, package.initial_state(BATCH), tf.constant([1, 0, 0], tf.int64), None)
    assert float(norm) > config.max_grad_norm  # the clipping is at work
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0, global_clipnorm=config.max_grad_norm),
                        loss=WindowCrossEntropy(), jit_compile=False)
    history = keras_model.fit(ids, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0).history
    assert history["loss"][0] == pytest.approx(float(cost), rel=1e-6)
    for start, mine, theirs in zip(before, package.weights, keras_model.weights, strict=True):
        assert not np.array_equal(mine.numpy(), start), mine.path
        np.testing.assert_allclose(theirs.numpy(), mine.numpy(), rtol=0, atol=1e-6, err_msg=mine.path)


def test_a_call_without_state_gives_logits_and_predict_agrees():
    model = _model()
    ids, _ = _ids(1)
    logits = model(ids)
    expected, state = model(ids, model.initial_state(BATCH))
    assert logits.shape == (BATCH, TIME, VOCAB) and len(state) == LAYERS
    np.testing.assert_array_equal(logits.numpy(), expected.numpy())
    np.testing.assert_allclose(model.predict(ids, verbose=0), expected.numpy(), rtol=0, atol=1e-6)
    with_state, _ = model(ids, model.initial_state(BATCH), depth=1)
    np.testing.assert_array_equal(model(ids, depth=1).numpy(), with_state.numpy())


@pytest.mark.parametrize("style, keep_embed", [("variational", 0.8), ("variational", 1.0), ("zaremba", 0.8)])
def test_own_dropout_is_switched_by_training(style, keep_embed):
    keep_state = 0.6 if style == "variational" else 1.0
    model = _model(keep_embed=keep_embed, keep_output=(0.5, 0.7), keep_state=keep_state, dropout_style=style,
                   init_scale=0.5)
    plain = _model(init_scale=0.5)
    ids, _ = _ids(2)
    np.testing.assert_array_equal(model(ids, training=False).numpy(), plain(ids).numpy())
    first, second = model(ids, training=True).numpy(), model(ids, training=True).numpy()
    assert not np.array_equal(first, second)  # new masks and element dropout at every call
    assert not np.allclose(first, plain(ids).numpy(), atol=1e-3)
    assert language_model.ModelDropout(style, keep_embed, (0.5, 0.7), (keep_state,) * 2) == model.own_dropout


def test_stateful_model_carries_the_state_of_its_streams():
    model, reference = _model(stateful=True), _model()
    ids, _ = _ids(3, time=2 * TIME)
    expected, _ = reference(ids, reference.initial_state(BATCH))
    first, second = model(ids[:, :TIME]), model(ids[:, TIME:])
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), expected.numpy(), rtol=0, atol=1e-6)
    model.reset_state()
    np.testing.assert_allclose(model(ids[:, :TIME]).numpy(), first.numpy(), rtol=0, atol=1e-6)


def test_grow_takes_the_per_layer_dropout_of_the_new_depth():
    source = _model(num_layers=1, keep_output=(0.5,), keep_state=(0.6,))
    with pytest.raises(ValueError, match="keep_output has 1 values for 2 layers"):
        language_model.grow(source, 2)
    grown = language_model.grow(source, 2, keep_output=(0.5, 0.4), keep_state=(0.6, 0.6))
    assert grown.own_dropout.keep_output == (0.5, 0.4)
    np.testing.assert_array_equal(grown.lstm_layers[0].kernel.numpy(), source.lstm_layers[0].kernel.numpy())


def _dropout_model():
    return _model(keep_embed=0.9, keep_output=(0.5, 0.7), keep_state=0.8, mask_policy="fixed", stateful=True,
                  init_scale=0.5)


def test_keras_file_round_trip_of_a_stateful_model_with_dropout(tmp_path):
    model = _dropout_model()
    for index, weight in enumerate(model.weights):  # trained values, not the seeded initial ones
        weight.assign(np.random.RandomState(index).uniform(-0.5, 0.5, weight.shape).astype(np.float32))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is LanguageModel and restored.get_config() == model.get_config()
    ids, _ = _ids(4)
    for _ in range(2):  # the second window starts from the state the first left
        np.testing.assert_array_equal(restored(ids).numpy(), model(ids).numpy())


@pytest.mark.slow
def test_fit_trains_with_the_model_own_dropout_and_stateful_streams():
    model = _dropout_model()
    ids, targets = _ids(5, time=8 * TIME)
    windows = [(ids[:, start:start + TIME], targets[:, start:start + TIME])
               for start in range(0, 8 * TIME, TIME)]
    inputs, outputs = (np.concatenate(parts) for parts in zip(*windows))  # window w of every stream, in order
    model.compile(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=5.0), loss=WindowCrossEntropy(),
                  jit_compile=False)
    history = model.fit(inputs, outputs, batch_size=BATCH, epochs=4, shuffle=False, verbose=0,
                        callbacks=[ResetStates(), RefreshMasks(seed=1)]).history
    assert history["loss"][-1] < history["loss"][0]
