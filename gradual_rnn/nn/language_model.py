"""The word language model of both references: embedding -> stack of LSTM layers -> softmax head(s).

Untied (the tutorial, Zaremba et al. 2014): one `softmax_w`, `softmax_b` read from the top layer.
Tied (the GL paper): every layer k has a head `E^T` with one shared output bias, and the embedding
has a bias `b_embed_in` added after the lookup.

A call may name its depth k: it computes layers 1..k only and returns head k's logits (and the new
state of layers 1..k). Gradual learning grows a depth-k model from a depth-(k-1) one with `grow`.
"""
from typing import Iterable, NamedTuple, Optional, Sequence, Tuple, Union

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
_DROPOUT_SEED = 20  # the model's own per-element dropout (embedding; Zaremba outputs)
DROPOUT_STYLES = ("zaremba", "variational")


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
        self.embeddings, self.input_bias = None, None

    def build(self, input_shape=None):
        initializer = base.uniform_initializer
        self.embeddings = self.add_weight(shape=(self.vocab_size, self.units), name="embeddings",
                                          initializer=initializer(self.init_scale, self.seed))
        if self.use_bias:
            bias_seed = None if self.seed is None else self.seed + 1
            self.input_bias = self.add_weight(shape=(self.units,), name="input_bias",
                                              initializer=initializer(self.init_scale, bias_seed))

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


class ModelDropout(NamedTuple):
    """What a training call drops (the fields `gradual_rnn.phases.DropoutPlan` has too).

    style 'zaremba': per-element dropout on the embedding and on each layer's output (Zaremba et al.
    2014). style 'variational': per-element dropout on the embedding; per-layer masks on each layer's
    output and fed-back state (Gal & Ghahramani; the GL code). keep_output, keep_state: per layer.
    """

    style: str
    keep_embed: float
    keep_output: Tuple[float, ...]
    keep_state: Tuple[float, ...]

    @property
    def is_identity(self) -> bool:
        return self.keep_embed >= 1.0 and all(k >= 1.0 for k in self.keep_output + self.keep_state)


Keep = Union[float, Sequence[float]]


def _per_layer(name: str, keep: Keep, num_layers: int) -> Tuple[float, ...]:
    values = (float(keep),) * num_layers if isinstance(keep, (int, float)) else tuple(map(float, keep))
    if len(values) != num_layers:
        raise ValueError(f"{name} has {len(values)} values for {num_layers} layers.")
    return values


@keras.saving.register_keras_serializable(package=base.PACKAGE)
class LanguageModel(keras.Model):
    """A Keras model: `model(ids, training=...)` -> logits `<float32>[batch, time, vocab]`.

    call(ids `<int>[batch, time]`, state=None, depth=None, dropout=None, seed=None, masks=None,
         detach=None, training=None)
      -> logits of head `depth` (default: the top), or, when `state` is given,
         `(logits, new state of layers 1..depth)`.

    state: one `LSTMState` (c, h) per layer, each `<float>[batch, hidden]` (at least `depth` of them).
    Without it every layer starts from zeros, or, with `stateful=True`, from the state the previous
    call of the same batch size left (`VariationalLSTM`'s stateful semantics: consecutive windows of
    the same streams, no gradient across windows; `reset_state()` forgets it).

    Dropout: with `training=True` and no explicit `dropout`, the model's own (the constructor's
    `keep_*` and `dropout_style`; none by default): per-element on the embedding, masks drawn by the
    layers (`mask_policy`) or per-element outputs (Zaremba), from the model's and the layers' seed
    generators. The package's trainer passes its own instead, which win whatever `training` says:
    dropout: a plan with the fields of `ModelDropout` (e.g. `gradual_rnn.phases.DropoutPlan`);
    seed: `<int>[2]` for its per-element dropout; masks: for variational dropout, one
    `(output_mask, state_mask)` per layer (None entries skip); detach: for h-detach, one
    `<bool>[time]` per layer (see `lstm.VariationalLSTM`), or None.

    `compile(loss=WindowCrossEntropy())` + `fit` train it on windows `(ids, targets)`, `predict`
    gives logits. Its weights depend on its sizes only, so the constructor builds it.
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, init_scale: float,
                 embedding_size: Optional[int] = None, tied_weights: bool = False,
                 embedding_bias: bool = False, forget_bias: float = 0.0, rnn_mode: str = "auto",
                 seed: int = 0, precision: str = "float32", keep_embed: float = 1.0,
                 keep_output: Keep = 1.0, keep_state: Keep = 1.0, dropout_style: str = "variational",
                 mask_policy: str = "per_call", stateful: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.precision = precision
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.embedding_size = hidden_size if embedding_size is None else embedding_size
        self.init_scale, self.tied_weights, self.embedding_bias = init_scale, tied_weights, embedding_bias
        self.forget_bias, self.rnn_mode, self.seed = forget_bias, rnn_mode, seed
        if tied_weights and self.embedding_size != hidden_size:
            raise ValueError(f"Tied weights need embedding_size == hidden_size, got "
                             f"{self.embedding_size} and {hidden_size}.")
        self.keep_embed, self.keep_output, self.keep_state = keep_embed, keep_output, keep_state
        self.dropout_style, self.mask_policy, self.stateful = dropout_style, mask_policy, stateful
        self.own_dropout = self._own_dropout()
        self.embedding = WordEmbedding(vocab_size, self.embedding_size, init_scale, embedding_bias,
                                       seed + _EMBEDDING_SEED, name="embedding")
        self.lstm_layers = [self._new_layer(index) for index in range(num_layers)]
        if tied_weights:
            self.head = heads.TiedSoftmaxHead(vocab_size, init_scale, seed + _HEAD_SEED,
                                              precision=precision, name="head")
        else:
            self.head = heads.SoftmaxHead(vocab_size, hidden_size, init_scale, seed + _HEAD_SEED,
                                          precision=precision, name="head")
        self.seed_generator = None
        if self._needs_element_seed():
            self.seed_generator = keras.random.SeedGenerator(seed + _DROPOUT_SEED,
                                                             name="dropout_seed_generator")
        # Built here, outside the model's name scope, so that the variable paths stay `embedding/...`,
        # `lstm_K/...`, `head/...` as in every earlier release.
        self.embedding.build((None, None))
        for index, layer in enumerate(self.lstm_layers):
            layer.build((None, None, self.embedding_size if index == 0 else hidden_size))
        self.head.build((None, None, hidden_size))
        self.build(None)

    def _own_dropout(self) -> Optional[ModelDropout]:
        if self.dropout_style not in DROPOUT_STYLES:
            raise ValueError(f"dropout_style={self.dropout_style!r} is not one of {DROPOUT_STYLES}.")
        plan = ModelDropout(self.dropout_style, float(self.keep_embed),
                            _per_layer("keep_output", self.keep_output, self.num_layers),
                            _per_layer("keep_state", self.keep_state, self.num_layers))
        if plan.style == "zaremba" and any(keep < 1.0 for keep in plan.keep_state):
            raise ValueError("keep_state < 1 needs dropout_style='variational'.")
        return None if plan.is_identity else plan

    def _needs_element_seed(self) -> bool:
        plan = self.own_dropout
        return plan is not None and (plan.keep_embed < 1.0 or plan.style == "zaremba")

    def _new_layer(self, index: int) -> lstm.VariationalLSTM:
        variational = self.own_dropout is not None and self.own_dropout.style == "variational"
        keep_output, keep_state = ((self.own_dropout.keep_output[index], self.own_dropout.keep_state[index])
                                   if variational else (1.0, 1.0))
        return lstm.VariationalLSTM(
            self.hidden_size, keep_output=keep_output, keep_state=keep_state, mask_policy=self.mask_policy,
            forget_bias=self.forget_bias, init_scale=self.init_scale, return_sequences=True,
            return_state=True, stateful=self.stateful, rnn_mode=self.rnn_mode,
            seed=self.seed + _LAYER_SEED_STRIDE * (index + 1), precision=self.precision,
            name=f"lstm_{index + 1}")

    def initial_state(self, batch_size: int, depth: Optional[int] = None):
        """A zero `LSTMState` for each of layers 1..depth, each `<float32>[batch_size, hidden]`."""
        zeros = tf.zeros([batch_size, self.hidden_size])
        return tuple(lstm.LSTMState(zeros, zeros) for _ in range(depth or self.num_layers))

    def reset_state(self) -> None:
        """Forgets the state held between calls (`stateful=True`)."""
        for layer in self.lstm_layers:
            layer.reset_state()

    reset_states = reset_state

    def call(self, ids, state=None, depth=None, dropout=None, seed=None, masks=None, detach=None,
             training=None):
        if dropout is None and training and self.own_dropout is not None:
            dropout = self.own_dropout
            seed = self.seed_generator.next() if self.seed_generator is not None else None
        outputs, new_state = self.top_outputs(ids, state, depth, dropout, seed, masks, detach,
                                              training=training)
        logits = self._logits(outputs)
        return logits if state is None else (logits, new_state)

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
                    masks=None, detach=None, activity=None, trace=None, training=None):
        """(outputs of layer `depth` after its dropout, `<float>[batch, time, hidden]`, new state).

        activity: None, or a list that receives `sum(|h|)` (float32) of each layer's outputs, before
        dropout, for the L1 activity penalty. trace: None, or a list that receives each layer's
        `lstm.StepTrace`; the layers then run `VariationalLSTM.stepwise` (for Ω; no h-detach)."""
        depth = self.num_layers if depth is None else depth
        if not 1 <= depth <= self.num_layers:
            raise ValueError(f"depth={depth} is outside 1..{self.num_layers}.")
        outputs = self.embedding(ids)
        if dropout is not None and dropout.keep_embed < 1.0:
            outputs = dropout_lib.stateless_dropout(outputs, dropout.keep_embed, fold_seed(seed, 0))
        new_state = []
        for index in range(depth):
            layer = self.lstm_layers[index]
            layer_state = None if state is None else state[index]
            output_mask, state_mask = masks[index] if masks is not None else (None, None)
            if dropout is None or dropout.style != "variational":
                output_mask = None
            # The layer applies the output mask itself, unless the activity penalty needs the
            # outputs before it.
            applied_mask = output_mask if activity is None and trace is None else None
            if trace is not None:
                outputs, layer_state, layer_trace = layer.stepwise(outputs, layer_state,
                                                                   recurrent_mask=state_mask)
                trace.append(layer_trace)
            else:
                layer_masks = None if masks is None else (applied_mask, state_mask)
                outputs, layer_state = layer(outputs, layer_state, masks=layer_masks,
                                             detach=None if detach is None else detach[index],
                                             training=training)
            if activity is not None:
                activity.append(tf.reduce_sum(tf.abs(tf.cast(outputs, tf.float32))))
            if applied_mask is None:
                outputs = layer.drop_output(outputs, output_mask)
            if dropout is not None and dropout.style == "zaremba":
                outputs = dropout_lib.stateless_dropout(outputs, dropout.keep_output[index],
                                                        fold_seed(seed, index + 1))
            new_state.append(layer_state)
        return outputs, tuple(new_state)

    def _logits(self, outputs):
        if self.tied_weights:
            return self.head(outputs, self.embedding.embeddings)
        return self.head(outputs)

    def layer_variables(self, index: int):
        """The variables of LSTM layer `index` (0-based)."""
        return self.lstm_layers[index].weights

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                      init_scale=self.init_scale, embedding_size=self.embedding_size,
                      tied_weights=self.tied_weights, embedding_bias=self.embedding_bias,
                      forget_bias=self.forget_bias, rnn_mode=self.rnn_mode, seed=self.seed,
                      precision=self.precision, keep_embed=self.keep_embed,
                      keep_output=_json_keep(self.keep_output), keep_state=_json_keep(self.keep_state),
                      dropout_style=self.dropout_style, mask_policy=self.mask_policy,
                      stateful=self.stateful)
        return config


def _json_keep(keep: Keep):
    return keep if isinstance(keep, (int, float)) else list(keep)


def _copy_weights(source_layer: keras.layers.Layer, target_layer: keras.layers.Layer) -> None:
    for source, target in zip(source_layer.weights, target_layer.weights, strict=True):
        target.assign(source)


def grow(source: LanguageModel, depth: int, new_layer_init: str = "random", **changes) -> LanguageModel:
    """A depth-`depth` model holding copies of every variable `source` has.

    The embedding (and its bias), the head(s) and layers 1..source.num_layers are copied; the new
    layers start from their seeded random init, or, with `new_layer_init='copy_below'`, as a copy
    of the layer below. changes: other constructor arguments of the grown model, e.g. its own
    per-layer `keep_output` (a per-layer table of the source does not fit the new depth).
    """
    if depth <= source.num_layers:
        raise ValueError(f"Cannot grow a {source.num_layers}-layer model to depth {depth}.")
    if new_layer_init not in ("random", "copy_below"):
        raise ValueError(f"new_layer_init={new_layer_init!r} is not 'random' or 'copy_below'.")
    config = dict(source.get_config(), num_layers=depth, **changes)
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
