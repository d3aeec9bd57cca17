"""The word language model of both references: embedding -> stack of LSTM layers -> softmax head(s).

Untied (the tutorial, Zaremba et al. 2014): one `softmax_w`, `softmax_b` read from the top layer.
Tied (the GL paper): every layer k has a head `E^T` with one shared output bias, and the embedding
has a bias `b_embed_in` added after the lookup.

A call names its depth k: it computes layers 1..k only and returns head k's logits and the new state
of layers 1..k. Gradual learning grows a depth-k model from a depth-(k-1) one with `grow`.
"""
from typing import Iterable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from gradual_rnn.nn import base
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.nn import heads
from gradual_rnn.nn import lstm
from gradual_rnn.nn.dropout import fold_seed

# Seed offsets per variable, so a variable's initial value does not depend on build order:
# a depth-k model built directly equals one grown from depth k-1 (with new_layer_init='random').
_EMBEDDING_SEED, _HEAD_SEED, _LAYER_SEED_STRIDE = 0, 10, 100


@keras.saving.register_keras_serializable(package=base.PACKAGE)
class WordEmbedding(keras.layers.Layer):
    """Embedding lookup `E[ids]` plus an optional bias (the GL code's `b_embed_in`).

    call(ids `<int>[batch, time]`) -> `<float>[batch, time, units]`.
    """

    def __init__(self, vocab_size: int, units: int, init_scale: float, use_bias: bool = False,
                 seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.units, self.init_scale = vocab_size, units, init_scale
        self.use_bias, self.seed = use_bias, seed
        initializer = base.uniform_initializer
        self.embeddings = self.add_weight(shape=(vocab_size, units), name="embeddings",
                                          initializer=initializer(init_scale, seed))
        self.input_bias = None
        if use_bias:
            self.input_bias = self.add_weight(shape=(units,), name="input_bias",
                                              initializer=initializer(init_scale, seed + 1 if seed is not None else None))

    def call(self, ids):
        embedded = tf.gather(tf.convert_to_tensor(self.embeddings), ids)
        if self.input_bias is not None:
            embedded = embedded + tf.convert_to_tensor(self.input_bias)
        return embedded

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, units=self.units, init_scale=self.init_scale,
                      use_bias=self.use_bias, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package=base.PACKAGE)
class LanguageModel(keras.Model):
    """call(ids `<int>[batch, time]`, state, depth=None, dropout=None, seed=None, masks=None)
    -> (logits `<float>[batch, time, vocab]` of head `depth`, new state of layers 1..depth).

    state: one `LSTMState` (c, h) per layer, each `<float>[batch, hidden]` (at least `depth` of them).
    dropout: for training, a plan with the fields `style` ('zaremba' or 'variational'), `keep_embed`,
    `keep_output` and `keep_state` (per layer), e.g. `gradual_rnn.phases.DropoutPlan`; None for
    evaluation. seed: `<int>[2]` for per-element dropout.
    masks: for variational dropout, one `(output_mask, state_mask)` per layer (None entries skip).
    detach: for h-detach, one `<bool>[time]` per layer (see `lstm.BasicLSTM.call`), or None.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, init_scale: float,
                 embedding_size: Optional[int] = None, tied_weights: bool = False,
                 embedding_bias: bool = False, forget_bias: float = 0.0, rnn_mode: str = "auto",
                 seed: int = 0, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.precision = precision
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.embedding_size = hidden_size if embedding_size is None else embedding_size
        self.init_scale, self.tied_weights, self.embedding_bias = init_scale, tied_weights, embedding_bias
        self.forget_bias, self.rnn_mode, self.seed = forget_bias, rnn_mode, seed
        if tied_weights and self.embedding_size != hidden_size:
            raise ValueError(f"Tied weights need embedding_size == hidden_size, got "
                             f"{self.embedding_size} and {hidden_size}.")
        self.embedding = WordEmbedding(vocab_size, self.embedding_size, init_scale, embedding_bias,
                                       seed + _EMBEDDING_SEED, name="embedding")
        self.lstm_layers = [self._new_layer(index) for index in range(num_layers)]
        if tied_weights:
            self.head = heads.TiedSoftmaxHead(vocab_size, init_scale, seed + _HEAD_SEED,
                                                    precision=precision, name="head")
        else:
            self.head = heads.SoftmaxHead(vocab_size, hidden_size, init_scale, seed + _HEAD_SEED,
                                                precision=precision, name="head")
        self.built = True

    def _new_layer(self, index: int) -> lstm.BasicLSTM:
        layer = lstm.BasicLSTM(self.hidden_size, self.init_scale, self.forget_bias, self.rnn_mode,
                                      seed=self.seed + _LAYER_SEED_STRIDE * (index + 1),
                                      precision=self.precision,
                                      name=f"lstm_{index + 1}")
        input_size = self.embedding_size if index == 0 else self.hidden_size
        layer.build((None, None, input_size))
        return layer

    def initial_state(self, batch_size: int, depth: Optional[int] = None):
        """A zero `LSTMState` for each of layers 1..depth, each `<float32>[batch_size, hidden]`."""
        zeros = tf.zeros([batch_size, self.hidden_size])
        return tuple(lstm.LSTMState(zeros, zeros) for _ in range(depth or self.num_layers))

    def call(self, ids, state, depth=None, dropout=None, seed=None,
             masks=None, detach=None):
        outputs, new_state = self.top_outputs(ids, state, depth, dropout, seed, masks, detach)
        return self._logits(outputs), new_state

    def summed_cost(self, ids, targets, state, depth=None, dropout=None,
                    seed=None, masks=None, detach=None, activity=None, trace=None):
        """(`sum(cross-entropy)` of head `depth` against targets `<int>[batch, time]`, new state),
        with the softmax and its gradient fused (`heads.summed_softmax_cost`): what training
        differentiates. Same arguments as `call`; `activity` and `trace`, see `top_outputs`."""
        outputs, new_state = self.top_outputs(ids, state, depth, dropout, seed, masks, detach, activity,
                                              trace)
        if self.tied_weights:
            return self.head.summed_cost(outputs, self.embedding.embeddings, targets), new_state
        return self.head.summed_cost(outputs, targets), new_state

    def top_outputs(self, ids, state, depth=None, dropout=None, seed=None,
                    masks=None, detach=None, activity=None, trace=None):
        """(outputs of layer `depth` after its dropout, `<float>[batch, time, hidden]`, new state).

        activity: None, or a list that receives `sum(|h|)` (float32) of each layer's outputs, before
        dropout, for the L1 activity penalty. trace: None, or a list that receives each layer's
        `lstm.StepTrace`; the layers then run `BasicLSTM.stepwise` (for Ω; no h-detach)."""
        depth = self.num_layers if depth is None else depth
        if not 1 <= depth <= self.num_layers:
            raise ValueError(f"depth={depth} is outside 1..{self.num_layers}.")
        outputs = self.embedding(ids)
        if dropout is not None:
            outputs = dropout_lib.stateless_dropout(outputs, dropout.keep_embed, fold_seed(seed, 0))
        new_state = []
        for index in range(depth):
            output_mask, state_mask = masks[index] if masks is not None else (None, None)
            layer_detach = None if detach is None else detach[index]
            if trace is not None:
                outputs, layer_state, layer_trace = self.lstm_layers[index].stepwise(
                    outputs, state[index], recurrent_mask=state_mask)
                trace.append(layer_trace)
            else:
                outputs, layer_state = self.lstm_layers[index](outputs, state[index],
                                                               recurrent_mask=state_mask, detach=layer_detach)
            if activity is not None:
                activity.append(tf.reduce_sum(tf.abs(tf.cast(outputs, tf.float32))))
            outputs = self._drop_output(outputs, index, dropout, seed, output_mask)
            new_state.append(layer_state)
        return outputs, tuple(new_state)

    def _drop_output(self, outputs, index, dropout, seed, output_mask):
        if dropout is None:
            return outputs
        if dropout.style == "variational":
            if output_mask is None:
                return outputs
            return outputs * tf.cast(output_mask, outputs.dtype)[:, tf.newaxis, :]
        return dropout_lib.stateless_dropout(outputs, dropout.keep_output[index], fold_seed(seed, index + 1))

    def _logits(self, outputs):
        if self.tied_weights:
            return self.head(outputs, self.embedding.embeddings)
        return self.head(outputs)

    def layer_variables(self, index: int):
        """The variables of LSTM layer `index` (0-based)."""
        return self.lstm_layers[index].weights

    def get_config(self):
        return dict(vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    init_scale=self.init_scale, embedding_size=self.embedding_size,
                    tied_weights=self.tied_weights, embedding_bias=self.embedding_bias,
                    forget_bias=self.forget_bias, rnn_mode=self.rnn_mode, seed=self.seed,
                    precision=self.precision, name=self.name)


def _copy_weights(source_layer: keras.layers.Layer, target_layer: keras.layers.Layer) -> None:
    for source, target in zip(source_layer.weights, target_layer.weights, strict=True):
        target.assign(source)


def grow(source: LanguageModel, depth: int, new_layer_init: str = "random") -> LanguageModel:
    """A depth-`depth` model holding copies of every variable `source` has.

    The embedding (and its bias), the head(s) and layers 1..source.num_layers are copied; the new
    layers start from their seeded random init, or, with `new_layer_init='copy_below'`, as a copy
    of the layer below.
    """
    if depth <= source.num_layers:
        raise ValueError(f"Cannot grow a {source.num_layers}-layer model to depth {depth}.")
    if new_layer_init not in ("random", "copy_below"):
        raise ValueError(f"new_layer_init={new_layer_init!r} is not 'random' or 'copy_below'.")
    config = dict(source.get_config(), num_layers=depth)
    target = LanguageModel(**config)
    _copy_weights(source.embedding, target.embedding)
    _copy_weights(source.head, target.head)
    for index in range(source.num_layers):
        _copy_weights(source.lstm_layers[index], target.lstm_layers[index])
    if new_layer_init == "copy_below":
        for index in range(source.num_layers, depth):
            _check_copyable(target, index)
            _copy_weights(target.lstm_layers[index - 1], target.lstm_layers[index])
    return target


def _check_copyable(model: LanguageModel, index: int) -> None:
    below, above = model.lstm_layers[index - 1], model.lstm_layers[index]
    if [w.shape for w in below.weights] != [w.shape for w in above.weights]:
        raise ValueError(f"new_layer_init='copy_below' needs layer {index} and layer {index + 1} of "
                         f"equal shapes (embedding_size == hidden_size).")


def freeze(model: LanguageModel, layer_indices: Iterable[int]) -> None:
    """Marks the LSTM layers `layer_indices` (0-based) non-trainable; the rest stay trainable."""
    frozen = set(layer_indices)
    for index, layer in enumerate(model.lstm_layers):
        layer.trainable = index not in frozen


def parameter_count(model: LanguageModel) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.weights))


def cudnn_eligible(model: LanguageModel, masks: Optional[Sequence] = None):
    """For each layer, whether a call with these masks is cuDNN-eligible: on a GPU, `rnn_mode='auto'`
    runs it on keras.layers.LSTM's fused kernel."""
    return [layer.cudnn_eligible(None if masks is None else masks[index][1])
            for index, layer in enumerate(model.lstm_layers)]
