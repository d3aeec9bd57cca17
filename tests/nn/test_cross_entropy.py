"""The vectorized cross-entropy (nn/cross_entropy.py) against TensorFlow's kernel: equal bit for bit."""
import ctypes
import ctypes.util

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.nn import cross_entropy


def _kernel(logits, targets):
    return tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=targets)


@pytest.mark.parametrize("rows, vocab, scale", [
    (400, 10000, 3.0),   # small's [batch * steps, vocab] at a typical spread
    (40, 10000, 0.01),   # nearly uniform rows: row sums near the vocabulary size
    (64, 10000, 30.0),   # one dominant logit: row sums near 1
    (37, 1003, 5.0),     # sizes that are not multiples of the vector width
    (3, 1, 1.0),         # a one-word vocabulary: loss 0, backprop 0
])
def test_losses_and_backprop_equal_the_kernel_bit_for_bit(rows, vocab, scale):
    rng = np.random.default_rng(rows + vocab)
    logits = tf.constant((rng.standard_normal((rows, vocab)) * scale).astype(np.float32))
    targets = tf.constant(rng.integers(0, vocab, rows).astype(np.int32))
    expected_losses, expected_backprop = _kernel(logits, targets)
    losses, backprop = tf.function(cross_entropy.sparse_cross_entropy_and_backprop)(logits, targets)
    np.testing.assert_array_equal(losses.numpy(), expected_losses.numpy())
    np.testing.assert_array_equal(backprop.numpy(), expected_backprop.numpy())
    np.testing.assert_array_equal(cross_entropy.sparse_cross_entropy(logits, targets).numpy(),
                                  expected_losses.numpy())


def test_losses_of_a_window_shaped_batch_equal_the_kernel():
    """Evaluation passes `[batch, time, vocab]` logits and `[batch, time]` targets, int64 too."""
    rng = np.random.default_rng(7)
    logits = tf.constant(rng.standard_normal((4, 5, 300)).astype(np.float32) * 4)
    targets = tf.constant(rng.integers(0, 300, (4, 5)))
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    np.testing.assert_array_equal(cross_entropy.sparse_cross_entropy(logits, targets).numpy(), expected.numpy())


def test_targets_outside_the_vocabulary_give_nan_not_a_plausible_loss():
    logits = tf.zeros([3, 5])
    losses = cross_entropy.sparse_cross_entropy(logits, tf.constant([0, 5, -1]))
    assert losses.numpy()[0] == pytest.approx(np.log(5.0))
    assert np.isnan(losses.numpy()[1:]).all()


def test_c_library_log_equals_the_c_library():
    """The kernel takes its logarithm from the C library's `logf`; ours reproduces it on the range a
    row sum takes (1 to the vocabulary size) and beyond, where `tf.math.log` rounds differently."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    libm.logf.restype, libm.logf.argtypes = ctypes.c_float, [ctypes.c_float]
    rng = np.random.default_rng(11)
    values = np.concatenate([
        rng.uniform(1.0, 2.0, 20000), np.exp(rng.uniform(0.0, np.log(1e5), 40000)),
        rng.uniform(1e-30, 1.0, 5000), [1.0, 2.0, 0.5, 10000.0, 1.0000001, 3.4028235e38]]).astype(np.float32)
    expected = np.array([libm.logf(float(value)) for value in values], np.float32)
    ours = cross_entropy.c_library_log(tf.constant(values)).numpy()
    np.testing.assert_array_equal(ours, expected)
    assert np.sum(tf.math.log(values).numpy() != expected) > 1000  # the reason this function exists


def test_special_inputs_of_the_logarithm_follow_tensorflow():
    values = tf.constant([0.0, -1.0, float("inf"), float("nan"), 1e-45])
    np.testing.assert_array_equal(cross_entropy.c_library_log(values).numpy(), tf.math.log(values).numpy())
