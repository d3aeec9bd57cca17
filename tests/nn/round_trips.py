"""Serialization checks shared by the tests of every layer: a config round trip (and Keras's registry
of serializable objects), and a `.keras` file round trip of trained values."""
import keras
import numpy as np
import tensorflow as tf


def randomize(layer, seed, scale=0.5):
    """Assigns every variable of `layer` fresh nonzero uniform values (biases included)."""
    rng = np.random.RandomState(seed)
    for weight in layer.weights:
        weight.assign(rng.uniform(-scale, scale, weight.shape).astype(np.float32))


def assert_config_round_trip(layer, call):
    """`from_config(get_config())` gives the same config and, from the same seed, the same initial
    values; so does Keras's registry. `call(target)` runs a layer on its test inputs."""
    config = layer.get_config()
    restored = type(layer).from_config(config)
    assert restored.get_config() == config
    # Same seed, same initial values (a layer makes its weights when built, at its first call).
    call(layer)
    call(restored)
    for mine, theirs in zip(layer.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    # And through Keras's registry of serializable objects.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is type(layer) and revived.get_config() == config


def assert_keras_file_round_trip(layer, call, path):
    """A layer with trained values, saved to the `.keras` file `path` and loaded in safe mode: same
    type, config, variable paths and values, and the same outputs bit for bit."""
    call(layer)
    randomize(layer, 11)  # trained values, not the seeded initial ones
    keras.saving.save_model(layer, path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    assert [w.path for w in restored.weights] == [w.path for w in layer.weights]
    for mine, theirs in zip(layer.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
    for mine, theirs in zip(tf.nest.flatten(call(layer)), tf.nest.flatten(call(restored)), strict=True):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
