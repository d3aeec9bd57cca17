"""Softmax heads (untied, as in the tutorial; tied to the embedding, as in the GL paper) and the fused
softmax cost that training differentiates."""
from typing import Optional

import keras
import tensorflow as tf

from gradual_rnn.nn import cross_entropy
from gradual_rnn.nn.base import PACKAGE, compute_dtype, uniform_initializer


def summed_softmax_cost(outputs, kernel, bias, targets, transposed: bool):
    """`sum(cross-entropy)` of the logits `outputs kernel + bias` (kernel `[units, vocab]`, or
    `[vocab, units]` with `transposed`) against `targets`, with the softmax and its gradient fused.

    outputs: `<float>[batch, time, units]`; targets: `<int>[batch, time]`. Products run in the dtype
    of outputs and kernel, the softmax in the dtype of bias (float32). The same value and
    gradients as autodiff of `sparse_softmax_cross_entropy_with_logits` (bit for bit: see
    `nn/cross_entropy.py`), but the backward pass
    reuses the `[tokens, vocab]` softmax-minus-one-hot that the forward kernel already produced and
    scales the small products by the incoming scalar instead of the large buffer: one vocabulary-
    sized buffer and one pass over it fewer per window.
    """
    units = outputs.shape[-1]
    flat_targets = tf.reshape(targets, [-1])

    @tf.custom_gradient
    def fused(outputs, kernel, bias):
        flat = tf.reshape(outputs, [-1, units])
        logits = tf.nn.bias_add(tf.cast(tf.matmul(flat, kernel, transpose_b=transposed), bias.dtype), bias)
        losses, backprop = cross_entropy.sparse_cross_entropy_and_backprop(logits, flat_targets)

        def backward(upstream):
            d_bias = tf.reduce_sum(backprop, axis=0) * upstream
            low = tf.cast(backprop, kernel.dtype)
            upstream = tf.cast(upstream, kernel.dtype)
            d_outputs = tf.matmul(low, kernel, transpose_b=not transposed) * upstream
            if transposed:
                d_kernel = tf.matmul(low, flat, transpose_a=True) * upstream
            else:
                d_kernel = tf.matmul(flat, low, transpose_a=True) * upstream
            return tf.reshape(d_outputs, tf.shape(outputs)), d_kernel, d_bias

        return tf.reduce_sum(losses), backward

    return fused(outputs, kernel, bias)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TiedSoftmaxHead(keras.layers.Layer):
    """Logits from the transposed embedding and one shared output bias (Press & Wolf weight tying).

    call(outputs `<float>[batch, time, units]`, embedding `<float>[vocab, units]`) ->
    logits `<float>[batch, time, vocab]`. Owns only the output bias `[vocab]`, shared by every head.
    """

    def __init__(self, vocab_size: int, init_scale: float, seed: Optional[int] = None,
                 precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.product_dtype, self.precision = compute_dtype(precision), precision
        self.vocab_size = vocab_size
        self.init_scale = init_scale
        self.seed = seed
        self.output_bias = None

    def build(self, input_shape=None):
        self.output_bias = self.add_weight(shape=(self.vocab_size,), name="output_bias",
                                           initializer=uniform_initializer(self.init_scale, self.seed))

    def call(self, outputs, embedding):
        logits = tf.einsum("btu,vu->btv", tf.cast(outputs, self.product_dtype),
                           tf.cast(tf.convert_to_tensor(embedding), self.product_dtype))
        return tf.cast(logits, tf.float32) + tf.convert_to_tensor(self.output_bias)

    def summed_cost(self, outputs, embedding, targets):
        """`sum(cross-entropy)` of `call(outputs, embedding)` against `targets` (fused softmax)."""
        return summed_softmax_cost(tf.cast(outputs, self.product_dtype),
                                   tf.cast(tf.convert_to_tensor(embedding), self.product_dtype),
                                   tf.convert_to_tensor(self.output_bias), targets, transposed=True)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, init_scale=self.init_scale, seed=self.seed,
                      precision=self.precision)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftmaxHead(keras.layers.Layer):
    """The tutorial's untied softmax: `logits = outputs softmax_w + softmax_b`.

    call(outputs `<float>[batch, time, units]`) -> logits `<float>[batch, time, vocab]`.
    """

    def __init__(self, vocab_size: int, units: int, init_scale: float, seed: Optional[int] = None,
                 precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.product_dtype, self.precision = compute_dtype(precision), precision
        self.vocab_size = vocab_size
        self.units = units
        self.init_scale = init_scale
        self.seed = seed
        self.softmax_w, self.softmax_b = None, None

    def build(self, input_shape=None):
        second_seed = None if self.seed is None else self.seed + 1
        self.softmax_w = self.add_weight(shape=(self.units, self.vocab_size), name="softmax_w",
                                         initializer=uniform_initializer(self.init_scale, self.seed))
        self.softmax_b = self.add_weight(shape=(self.vocab_size,), name="softmax_b",
                                         initializer=uniform_initializer(self.init_scale, second_seed))

    def call(self, outputs):
        logits = tf.einsum("btu,uv->btv", tf.cast(outputs, self.product_dtype),
                           tf.cast(tf.convert_to_tensor(self.softmax_w), self.product_dtype))
        return tf.cast(logits, tf.float32) + tf.convert_to_tensor(self.softmax_b)

    def summed_cost(self, outputs, targets):
        """`sum(cross-entropy)` of `call(outputs)` against `targets` (fused softmax)."""
        return summed_softmax_cost(tf.cast(outputs, self.product_dtype),
                                   tf.cast(tf.convert_to_tensor(self.softmax_w), self.product_dtype),
                                   tf.convert_to_tensor(self.softmax_b), targets, transposed=False)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, units=self.units, init_scale=self.init_scale,
                      seed=self.seed, precision=self.precision)
        return config
