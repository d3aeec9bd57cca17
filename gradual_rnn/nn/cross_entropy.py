"""Sparse softmax cross-entropy: the loss of every token and, for training, its gradient.

For logits `x` (one row per token) and target `t`:

    loss     = log(sum(exp(x - max))) - (x[t] - max)    = -log softmax(x)[t]
    backprop = softmax(x) - one_hot(t)                  (the gradient of the loss with respect to x)

Training needs both. `softmax` is one fused kernel (oneDNN's on a CPU), and the loss is read off it:
`log(sum(exp(x - max)))` is `-log` of the row's largest probability (at least 1 / vocab, so it never
underflows, even where the target's probability does), and `x[t] - max` comes from the logits.
Evaluation needs only the loss, from the logits, one pass.

Both agree with TensorFlow's `SparseSoftmaxCrossEntropyWithLogits` kernel to float32 rounding (a few
units in the last place), not bit for bit: the kernel takes its logarithm from the C library, this
module from TensorFlow's vectorised ops, one code path on every device. tests/nn/test_cross_entropy.py
states the tolerances against the kernel and a float64 NumPy reference. A target outside the
vocabulary gives a NaN loss (the kernel raises instead).
"""
import tensorflow as tf

def _targets_in_range(targets, logits):
    """(whether each target is a word of the vocabulary, the targets with the others set to 0)."""
    in_range = tf.logical_and(targets >= 0, targets < tf.shape(logits, out_type=targets.dtype)[-1])
    return in_range, tf.where(in_range, targets, tf.zeros_like(targets))


def _exact_losses(logits, safe_targets):
    """`log(sum(exp(x - max))) - (x[t] - max)` per row: accurate for any logits, and in the order of
    TensorFlow's kernel (the maximum is taken out before the target is subtracted, so no rounding
    of a large `logsumexp` is left in the loss)."""
    shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    picked = tf.gather(shifted, safe_targets, batch_dims=len(safe_targets.shape))
    return _log(tf.reduce_sum(tf.exp(shifted), axis=-1)) - picked


def _log(values):
    """The natural logarithm of float32 `values` (one per row), computed in float64 and rounded once:
    float32's vectorised logarithm is off by one unit in the last place often enough, and always the
    same way, to move a perplexity by 5e-7."""
    return tf.cast(tf.math.log(tf.cast(values, tf.float64)), values.dtype)


def _nan_outside(losses, in_range):
    return tf.where(in_range, losses, tf.constant(float("nan"), losses.dtype))


def sparse_cross_entropy(logits, targets):
    """Per-token cross-entropy of `<float32>[..., vocab]` logits against `<int>[...]` targets (for
    evaluation: no gradient is defined through it; training uses `sparse_cross_entropy_and_backprop`)."""
    in_range, safe_targets = _targets_in_range(targets, logits)
    return _nan_outside(_exact_losses(logits, safe_targets), in_range)


def sparse_cross_entropy_and_backprop(logits, targets):
    """`(losses <float32>[rows], backprop <float32>[rows, vocab])` of `[rows, vocab]` logits and
    `[rows]` targets: each row's loss and its gradient `softmax(logits) - one_hot(targets)`."""
    in_range, safe_targets = _targets_in_range(targets, logits)
    probabilities = tf.nn.softmax(logits)
    # log(sum(exp(x - max))) is -log of the largest probability, which is at least 1 / vocab: read off
    # the softmax, it never underflows, whatever the target's probability.
    log_sums = -_log(tf.reduce_max(probabilities, axis=-1))
    picked = tf.gather(logits, safe_targets, batch_dims=1)
    losses = log_sums - (picked - tf.reduce_max(logits, axis=-1))
    rows = tf.range(tf.shape(targets, out_type=targets.dtype)[0], dtype=targets.dtype)
    backprop = tf.tensor_scatter_nd_sub(probabilities, tf.stack([rows, safe_targets], axis=1),
                                        tf.ones_like(losses))
    return _nan_outside(losses, in_range), backprop
