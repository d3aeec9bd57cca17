"""Registered Keras layers: the TF1 BasicLSTMCell LSTM (two compute paths) and variational dropout.

Gate math (TF1 `BasicLSTMCell`, Zaremba et al. 2014; the GL code uses the same cell)::

    z = x W + h R + b                       split into gates i, j, f, o
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)
    h' = tanh(c') * sigmoid(o)

TF1 stores one kernel `[x, h] -> [i, j, f, o]`. These layers keep their weights in Keras's layout
(`kernel [input, 4 units]`, `recurrent_kernel [units, 4 units]`, gates ordered i, f, c(=j), o) so that
the same variables feed both paths; `tf1_to_keras_gates` / `keras_to_tf1_gates` map the gate order.
"""
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

PACKAGE = "gradual_rnn"

# TF1 (i, j, f, o) and Keras (i, f, c=j, o) differ by swapping the middle blocks, both ways.
_SWAP_MIDDLE_GATES = (0, 2, 1, 3)


def _permute_gate_blocks(weights, order):
    blocks = np.split(np.asarray(weights), 4, axis=-1)
    return np.concatenate([blocks[index] for index in order], axis=-1)


def tf1_to_keras_gates(weights):
    """Reorders the last axis from TF1's (i, j, f, o) to Keras's (i, f, c, o)."""
    return _permute_gate_blocks(weights, _SWAP_MIDDLE_GATES)


def keras_to_tf1_gates(weights):
    """Reorders the last axis from Keras's (i, f, c, o) to TF1's (i, j, f, o)."""
    return _permute_gate_blocks(weights, _SWAP_MIDDLE_GATES)


def lstm_gate_step(projected_input, cell, hidden, recurrent_kernel, forget_bias):
    """One BasicLSTMCell step on a precomputed input projection `x W + b`, `[batch, 4 units]`.

    Returns the new `(cell, hidden)`, each `[batch, units]`. Gates in Keras order (i, f, c, o).
    """
    gates = projected_input + tf.matmul(hidden, recurrent_kernel)
    input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
    if forget_bias:
        forget_gate = forget_gate + forget_bias
    cell = cell * tf.sigmoid(forget_gate) + tf.sigmoid(input_gate) * tf.tanh(candidate)
    return cell, tf.tanh(cell) * tf.sigmoid(output_gate)


def detach_where(detach, tensor):
    """`tensor` with its gradient blocked when the scalar bool `detach` is true (value unchanged)."""
    if detach is None:
        return tensor
    return tf.where(detach, tf.stop_gradient(tensor), tensor)


def uniform_initializer(init_scale: float, seed: Optional[int]):
    return keras.initializers.RandomUniform(-init_scale, init_scale, seed=seed)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicLSTM(keras.layers.Layer):
    """An LSTM layer over one window with the TF1 BasicLSTMCell math and explicit state.

    call(inputs `<float>[batch, time, input]`, state `(c, h)` each `<float>[batch, units]`,
    recurrent_mask `<float>[batch, units]` or None) -> (outputs `<float>[batch, time, units]`,
    new state `(c, h)`).

    `recurrent_mask` is the variational state mask of Gal & Ghahramani as the GL code applies it: the
    h fed back at every step (and returned as state, to be carried into the next window) is
    `h * recurrent_mask`, where the mask already holds `bernoulli(keep) / keep`. c is never masked.
    The outputs are the unmasked h of every step.

    Two paths compute the same function from the same variables:
      * `basic`: the input projection of all time steps as one matrix multiply, then only the
        recurrent part step by step. Needed whenever there is a recurrent mask.
      * `cudnn`: `keras.layers.LSTM` with tanh / sigmoid, bias, no recurrent dropout, not unrolled:
        the arguments for which Keras runs its fused cuDNN kernel on a GPU (its generic loop on
        a CPU). Only with forget_bias 0 and no recurrent mask.
    `rnn_mode='auto'` takes `cudnn` whenever the call allows it and `basic` otherwise.
    """

    def __init__(self, units: int, init_scale: float = 0.1, forget_bias: float = 0.0,
                 rnn_mode: str = "auto", seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if rnn_mode not in ("auto", "cudnn", "basic"):
            raise ValueError(f"rnn_mode={rnn_mode!r} is not one of ('auto', 'cudnn', 'basic').")
        if rnn_mode == "cudnn" and forget_bias:
            raise ValueError("rnn_mode='cudnn' needs forget_bias=0: the fused kernel adds no constant "
                             "to the forget gate. Use rnn_mode='basic' or 'auto'.")
        self.units = units
        self.init_scale = init_scale
        self.forget_bias = forget_bias
        self.rnn_mode = rnn_mode
        self.seed = seed
        second_seed = None if seed is None else seed + 1
        self.lstm = keras.layers.LSTM(
            units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
            kernel_initializer=uniform_initializer(init_scale, seed),
            recurrent_initializer=uniform_initializer(init_scale, second_seed),
            bias_initializer="zeros", unit_forget_bias=False, recurrent_dropout=0.0, unroll=False,
            use_cudnn="auto", return_sequences=True, return_state=True, name="lstm")

    def build(self, input_shape):
        self.lstm.build(input_shape)

    @property
    def kernel(self):
        return self.lstm.cell.kernel

    @property
    def recurrent_kernel(self):
        return self.lstm.cell.recurrent_kernel

    @property
    def bias(self):
        return self.lstm.cell.bias

    def uses_cudnn_path(self, recurrent_mask=None) -> bool:
        """Whether a call with this recurrent mask runs on keras.layers.LSTM (cuDNN-eligible)."""
        if self.rnn_mode == "basic":
            return False
        if recurrent_mask is not None:
            if self.rnn_mode == "cudnn":
                raise ValueError("rnn_mode='cudnn' cannot apply a recurrent (state) mask; "
                                 "use rnn_mode='auto' or 'basic', or keep_state=1.0.")
            return False
        return not self.forget_bias

    def call(self, inputs, state, recurrent_mask=None, detach=None, training=False):
        """detach: None, or `<bool>[time]` for h-detach (Kanuparthi et al. 2019): where true, the
        gradient through h_{t-1} into the gates of step t is blocked (values unchanged); it needs
        the basic path."""
        if detach is None and self.uses_cudnn_path(recurrent_mask):
            cell, hidden = state
            outputs, hidden, cell = self.lstm(inputs, initial_state=[hidden, cell], training=training)
            return outputs, (cell, hidden)
        return self._basic_call(inputs, state, recurrent_mask, detach)

    def _basic_call(self, inputs, state, recurrent_mask, detach=None):
        num_steps = inputs.shape[1]
        if num_steps is None:
            raise ValueError("BasicLSTM's basic path needs a static number of time steps.")
        kernel = tf.convert_to_tensor(self.kernel)
        recurrent_kernel = tf.convert_to_tensor(self.recurrent_kernel)
        projected = tf.einsum("bti,ig->btg", inputs, kernel) + tf.convert_to_tensor(self.bias)
        cell, hidden = state
        outputs = []
        for step in range(num_steps):
            gate_hidden = hidden if detach is None else detach_where(detach[step], hidden)
            cell, hidden = lstm_gate_step(projected[:, step], cell, gate_hidden, recurrent_kernel,
                                          self.forget_bias)
            outputs.append(hidden)
            if recurrent_mask is not None:
                hidden = hidden * recurrent_mask
        return tf.stack(outputs, axis=1), (cell, hidden)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, init_scale=self.init_scale, forget_bias=self.forget_bias,
                      rnn_mode=self.rnn_mode, seed=self.seed)
        return config


def sample_variational_masks(seed, batch_size: int, units: int,
                             keep_output: Sequence[float], keep_state: Sequence[float]):
    """Samples the GL code's per-layer masks: `bernoulli(keep) / keep`, `<float32>[batch, units]`.

    seed: `<int>[2]`, for stateless sampling (reproducible, and what a checkpoint's RNG state
    restores). Returns one `(output_mask, state_mask)` pair per layer; a mask whose keep is 1.0 is
    None (no masking, so that layer may take the cuDNN-eligible path).
    """
    masks = []
    for layer, (keep_out, keep_st) in enumerate(zip(keep_output, keep_state)):
        pair = []
        for kind, keep in enumerate((keep_out, keep_st)):
            if keep >= 1.0:
                pair.append(None)
                continue
            layer_seed = tf.random.experimental.stateless_fold_in(seed, 2 * layer + kind)
            uniform = tf.random.stateless_uniform([batch_size, units], seed=layer_seed)
            pair.append(tf.cast(uniform < keep, tf.float32) / keep)
        masks.append(tuple(pair))
    return masks


def stateless_dropout(inputs, keep: float, seed):
    """Per-element dropout (fresh for every element and step), seeded: `x * bernoulli(keep) / keep`."""
    if keep >= 1.0:
        return inputs
    return tf.nn.experimental.stateless_dropout(inputs, rate=1.0 - keep, seed=seed)


@keras.saving.register_keras_serializable(package=PACKAGE)
class TiedSoftmaxHead(keras.layers.Layer):
    """Logits from the transposed embedding and one shared output bias (Press & Wolf weight tying).

    call(outputs `<float>[batch, time, units]`, embedding `<float>[vocab, units]`) ->
    logits `<float>[batch, time, vocab]`. Owns only the output bias `[vocab]`, shared by every head.
    """

    def __init__(self, vocab_size: int, init_scale: float, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.init_scale = init_scale
        self.seed = seed
        self.output_bias = self.add_weight(
            shape=(vocab_size,), initializer=uniform_initializer(init_scale, seed), name="output_bias")

    def call(self, outputs, embedding):
        logits = tf.einsum("btu,vu->btv", outputs, tf.convert_to_tensor(embedding))
        return logits + tf.convert_to_tensor(self.output_bias)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, init_scale=self.init_scale, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftmaxHead(keras.layers.Layer):
    """The tutorial's untied softmax: `logits = outputs softmax_w + softmax_b`.

    call(outputs `<float>[batch, time, units]`) -> logits `<float>[batch, time, vocab]`.
    """

    def __init__(self, vocab_size: int, units: int, init_scale: float, seed: Optional[int] = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.units = units
        self.init_scale = init_scale
        self.seed = seed
        second_seed = None if seed is None else seed + 1
        self.softmax_w = self.add_weight(shape=(units, vocab_size), name="softmax_w",
                                         initializer=uniform_initializer(init_scale, seed))
        self.softmax_b = self.add_weight(shape=(vocab_size,), name="softmax_b",
                                         initializer=uniform_initializer(init_scale, second_seed))

    def call(self, outputs):
        logits = tf.einsum("btu,uv->btv", outputs, tf.convert_to_tensor(self.softmax_w))
        return logits + tf.convert_to_tensor(self.softmax_b)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, units=self.units, init_scale=self.init_scale,
                      seed=self.seed)
        return config

