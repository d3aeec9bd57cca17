"""The cross-entropy (nn/cross_entropy.py) against a float64 NumPy reference and TensorFlow's kernel,
values and gradient, on ordinary, huge-magnitude and -inf-heavy logits.

Tolerances: a loss within 5e-7 × max(1, loss) of the float64 reference and of the kernel; the
gradient (softmax - one-hot) within 1e-6 absolute of both. The kernel itself is 1e-7 and 5.6e-7 from
the float64 reference on these cases: float32 rounds exp(x - max) to a few units in its last place."""
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.nn import cross_entropy

LOSS_TOLERANCE, BACKPROP_TOLERANCE = 5e-7, 1e-6


def reference(logits, targets):
    """float64 NumPy: (losses, softmax - one_hot); -inf logits have probability 0."""
    x = np.asarray(logits, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        exponentials = np.exp(shifted)
    sums = exponentials.sum(axis=-1)
    rows = np.arange(len(targets))
    losses = np.log(sums) - shifted[rows, targets]
    backprop = exponentials / sums[:, None]
    backprop[rows, targets] -= 1.0
    return losses, backprop


def _kernel(logits, targets):
    return tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=targets)


def _case(kind, rows, vocab, seed):
    rng = np.random.default_rng(seed)
    if kind == "ordinary":
        logits = rng.standard_normal((rows, vocab)) * 3.0
    elif kind == "nearly uniform":
        logits = rng.standard_normal((rows, vocab)) * 0.01
    elif kind == "one dominant":
        logits = rng.standard_normal((rows, vocab)) * 30.0
    elif kind == "huge":  # targets' probabilities underflow float32: the exact path
        logits = rng.standard_normal((rows, vocab)) * 1e4
    else:  # "-inf heavy": most of every row is -inf, as after a mask; the targets stay finite
        logits = np.where(rng.random((rows, vocab)) < 0.9, -np.inf, rng.standard_normal((rows, vocab)) * 5)
    targets = rng.integers(0, vocab, rows)
    if kind == "-inf heavy":
        logits[np.arange(rows), targets] = rng.standard_normal(rows)
    return logits.astype(np.float32), targets.astype(np.int32)


def _close(actual, expected, tolerance):
    scale = np.maximum(1.0, np.abs(expected))
    assert np.all(np.abs(np.asarray(actual, np.float64) - expected) <= tolerance * scale), \
        float(np.max(np.abs(actual - expected) / scale))


@pytest.mark.parametrize("kind, rows, vocab", [("ordinary", 400, 10000), ("nearly uniform", 40, 10000),
                                               ("one dominant", 64, 10000), ("huge", 50, 1003),
                                               ("-inf heavy", 64, 2000), ("ordinary", 3, 1)])
def test_losses_and_backprop_match_float64_and_the_kernel(kind, rows, vocab):
    logits, targets = _case(kind, rows, vocab, rows + vocab)
    expected_losses, expected_backprop = reference(logits, targets)
    losses, backprop = tf.function(cross_entropy.sparse_cross_entropy_and_backprop)(
        tf.constant(logits), tf.constant(targets))
    _close(losses.numpy(), expected_losses, LOSS_TOLERANCE)
    assert np.max(np.abs(backprop.numpy() - expected_backprop)) <= BACKPROP_TOLERANCE
    kernel_losses, kernel_backprop = _kernel(tf.constant(logits), tf.constant(targets))
    finite = np.isfinite(kernel_losses.numpy())  # the kernel itself overflows on -inf rows
    _close(losses.numpy()[finite], kernel_losses.numpy()[finite].astype(np.float64), LOSS_TOLERANCE)
    assert np.max(np.abs(backprop.numpy() - kernel_backprop.numpy())[finite]) <= BACKPROP_TOLERANCE
    assert np.max(np.abs(kernel_backprop.numpy() - expected_backprop)[finite]) <= BACKPROP_TOLERANCE
    _close(cross_entropy.sparse_cross_entropy(tf.constant(logits), tf.constant(targets)).numpy(),
           expected_losses, LOSS_TOLERANCE)


def test_a_target_probability_that_underflows_still_gives_the_exact_loss():
    logits = tf.constant([[0.0, 200.0, -200.0]])
    losses, backprop = cross_entropy.sparse_cross_entropy_and_backprop(logits, tf.constant([2]))
    assert float(losses[0]) == pytest.approx(400.0, rel=1e-6)  # -log(p[target]) would be inf
    np.testing.assert_allclose(backprop.numpy(), [[0.0, 1.0, -1.0]], atol=1e-7)


def test_it_is_the_gradient_of_the_loss():
    logits, targets = _case("ordinary", 8, 50, 3)
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=variable))
    _, backprop = cross_entropy.sparse_cross_entropy_and_backprop(tf.constant(logits), tf.constant(targets))
    np.testing.assert_allclose(backprop.numpy(), tape.gradient(loss, variable).numpy(), atol=BACKPROP_TOLERANCE)


def test_losses_of_a_window_shaped_batch():
    """Evaluation passes `[batch, time, vocab]` logits and `[batch, time]` targets, int64 too."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((4, 5, 300)).astype(np.float32) * 4
    targets = rng.integers(0, 300, (4, 5))
    expected, _ = reference(logits.reshape(20, 300), targets.reshape(20))
    losses = cross_entropy.sparse_cross_entropy(tf.constant(logits), tf.constant(targets)).numpy()
    _close(losses.reshape(20), expected, LOSS_TOLERANCE)


def test_targets_outside_the_vocabulary_give_nan_not_a_plausible_loss():
    logits = tf.zeros([3, 5])
    losses = cross_entropy.sparse_cross_entropy(logits, tf.constant([0, 5, -1]))
    assert losses.numpy()[0] == pytest.approx(np.log(5.0))
    assert np.isnan(losses.numpy()[1:]).all()
    trained, _ = cross_entropy.sparse_cross_entropy_and_backprop(logits, tf.constant([0, 5, -1]))
    assert np.isnan(trained.numpy()[1:]).all() and trained.numpy()[0] == pytest.approx(np.log(5.0))
