"""Sparse softmax cross-entropy on the CPU: the same bits as TensorFlow's kernel, in a third of the time.

TensorFlow's `SparseSoftmaxCrossEntropyWithLogits` CPU kernel computes, per row of logits `x` with
target `t`: `m = max(x)`, `s = sum(exp(x - m))`, the loss `log(s) - (x[t] - m)` and the backprop
`exp(x - m) / s - one_hot(t)`. It evaluates the loss and the backprop through per-element generators
that Eigen cannot vectorize, and it computes them even when only the loss is wanted. At `small`
(`[400 x 10000]` logits) that kernel alone took 11-17 ms of a 65 ms training step
(docs/performance.md).

This module computes the same quantities with vectorized TensorFlow ops in the same order, so
each value carries the same float32 rounding: the max, the subtraction, the exponential (the same
Eigen code in both), the row sum (the same Eigen inner-dimension reduction), the division and the
subtraction of the one-hot are bit-identical. The one step that is not shared is the logarithm: the
kernel calls the C library's scalar `logf`, while `tf.math.log` is Eigen's vectorized logarithm,
which rounds differently in about 20% of cases. `c_library_log` computes glibc's `logf` (glibc 2.28
and later, the algorithm of its `e_logf.c`: a 16-entry table of `1/c` and `log(c)`, a degree-4
polynomial in `r = z/c - 1`, all in float64, one rounding to float32) for the row sums only.
Checked against the C library on 3 million values: no difference. tests/nn/test_cross_entropy.py
asserts equality with the kernel bit for bit.

On a GPU the kernel is a single fused CUDA kernel and float64 is slow, so there the kernel is used.
"""
import tensorflow as tf

# glibc's logf table (sysdeps/ieee754/flt-32/e_logf_data.c), as float64 hex literals: for each of
# the 16 subintervals of [0x3f330000, 2 * 0x3f330000) in float32 bits, 1/c and log(c) of a point c
# near its centre.
_LOGF_INVERSE_CENTRES = tuple(float.fromhex(value) for value in (
    "0x1.661ec79f8f3bep+0", "0x1.571ed4aaf883dp+0", "0x1.49539f0f010bp+0", "0x1.3c995b0b80385p+0",
    "0x1.30d190c8864a5p+0", "0x1.25e227b0b8eap+0", "0x1.1bb4a4a1a343fp+0", "0x1.12358f08ae5bap+0",
    "0x1.0953f419900a7p+0", "0x1p+0", "0x1.e608cfd9a47acp-1", "0x1.ca4b31f026aap-1",
    "0x1.b2036576afce6p-1", "0x1.9c2d163a1aa2dp-1", "0x1.886e6037841edp-1", "0x1.767dcf5534862p-1"))
_LOGF_LOG_CENTRES = tuple(float.fromhex(value) for value in (
    "-0x1.57bf7808caadep-2", "-0x1.2bef0a7c06ddbp-2", "-0x1.01eae7f513a67p-2", "-0x1.b31d8a68224e9p-3",
    "-0x1.6574f0ac07758p-3", "-0x1.1aa2bc79c81p-3", "-0x1.a4e76ce8c0e5ep-4", "-0x1.1973c5a611cccp-4",
    "-0x1.252f438e10c1ep-5", "0x0p+0", "0x1.aa5aa5df25984p-5", "0x1.c5e53aa362eb4p-4",
    "0x1.526e57720db08p-3", "0x1.bc2860d22477p-3", "0x1.1058bc8a07ee1p-2", "0x1.4043057b6ee09p-2"))
_LOGF_LN2 = float.fromhex("0x1.62e42fefa39efp-1")
# log1p(r) ~ r + C2 r^2 + C3 r^3 + C4 r^4
_LOGF_C4, _LOGF_C3, _LOGF_C2 = (float.fromhex(value) for value in (
    "-0x1.00ea348b88334p-2", "0x1.5575b0be00b6ap-2", "-0x1.ffffef20a4123p-2"))
_SUBINTERVAL_START = 0x3f330000  # float32 bits of about 0.6992: z = x / 2^k lies in [start, 2 start)
_EXPONENT_FIELD = -(1 << 23)  # int32 with the 9 sign-and-exponent bits set (0xff800000)


def c_library_log(values):
    """float32 natural log of positive normal float32 `values`, rounded exactly as glibc's `logf`.

    Zero, subnormal, negative, infinite and NaN inputs take `tf.math.log`'s value instead; row sums
    of a softmax (`>= 1`) never are. Elementwise; any shape.
    """
    bits = tf.bitcast(values, tf.int32)
    offset = bits - _SUBINTERVAL_START
    subinterval = tf.bitwise.bitwise_and(tf.bitwise.right_shift(offset, 19), 15)
    exponent = tf.cast(tf.bitwise.right_shift(offset, 23), tf.float64)  # arithmetic shift
    mantissa = tf.cast(tf.bitcast(bits - tf.bitwise.bitwise_and(offset, _EXPONENT_FIELD), tf.float32),
                       tf.float64)
    inverse_centre = tf.gather(tf.constant(_LOGF_INVERSE_CENTRES, tf.float64), subinterval)
    log_centre = tf.gather(tf.constant(_LOGF_LOG_CENTRES, tf.float64), subinterval)
    r = mantissa * inverse_centre - 1.0
    r_squared = r * r
    polynomial = (_LOGF_C4 * r_squared + (_LOGF_C3 * r + _LOGF_C2)) * r_squared
    result = tf.cast(polynomial + ((log_centre + exponent * _LOGF_LN2) + r), tf.float32)
    normal = tf.logical_and(values >= 1.1754944e-38, values <= 3.4028235e38)
    return tf.where(normal, result, tf.math.log(values))


def _use_tensorflow_kernel(logits) -> bool:
    """The kernel on GPUs (one fused CUDA kernel there) and for dtypes other than float32."""
    return logits.dtype != tf.float32 or bool(tf.config.list_logical_devices("GPU"))


def _shifted_and_sums(logits):
    shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
    exponentials = tf.exp(shifted)
    return shifted, exponentials, tf.reduce_sum(exponentials, axis=-1)


def sparse_cross_entropy(logits, targets):
    """Per-token cross-entropy of `<float>[..., vocab]` logits against `<int>[...]` targets: the
    values of `tf.nn.sparse_softmax_cross_entropy_with_logits`, bit for bit, without its backprop.
    A target outside the vocabulary gives NaN (the kernel raises instead). For evaluation: no
    gradient flows through it; training uses `sparse_cross_entropy_and_backprop`."""
    if _use_tensorflow_kernel(logits):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    shifted, _, sums = _shifted_and_sums(logits)
    return _losses(shifted, sums, *_targets_in_range(targets, logits))


def _targets_in_range(targets, logits):
    """(whether each target is a word of the vocabulary, the targets with the others set to 0)."""
    in_range = tf.logical_and(targets >= 0, targets < tf.shape(logits, out_type=targets.dtype)[-1])
    return in_range, tf.where(in_range, targets, tf.zeros_like(targets))


def _losses(shifted, sums, in_range, safe_targets):
    picked = tf.gather(shifted, safe_targets, batch_dims=len(safe_targets.shape))
    losses = c_library_log(sums) - picked
    return tf.where(in_range, losses, tf.constant(float("nan"), losses.dtype))


def sparse_cross_entropy_and_backprop(logits, targets):
    """`(losses [rows], backprop [rows, vocab])` of `[rows, vocab]` logits and `[rows]` targets: the
    two outputs of `tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits`, bit for bit. backprop is
    `softmax(logits) - one_hot(targets)`, the gradient of each row's loss. A target outside the
    vocabulary gives a NaN loss (the kernel raises instead); its backprop row is not meaningful."""
    if _use_tensorflow_kernel(logits):
        return tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=targets)
    shifted, exponentials, sums = _shifted_and_sums(logits)
    in_range, safe_targets = _targets_in_range(targets, logits)
    losses = _losses(shifted, sums, in_range, safe_targets)
    probabilities = exponentials / tf.expand_dims(sums, -1)
    rows = tf.range(tf.shape(targets, out_type=targets.dtype)[0], dtype=targets.dtype)
    target_cells = tf.stack([rows, safe_targets], axis=1)
    return losses, tf.tensor_scatter_nd_sub(probabilities, target_cells, tf.ones_like(sums))
