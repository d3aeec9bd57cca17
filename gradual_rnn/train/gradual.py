"""Gradual learning of any stack of Keras recurrent layers with `fit` (Aharoni, Rattner & Permuter
2017, §3.1).

Gradual Learning (GL) trains a deep recurrent network one layer at a time. Phase k stacks layers
1..k on the embedding, puts head k on top and trains that model; phase k+1 grows it by the next
layer and a new head, and layers 1..k start from the weights phase k left (they are the same layer
objects). Every phase compiles a fresh optimizer (the learning rate starts again from its initial
value), sets its own dropout (layer-wise adjusted dropout, LAD, §3.3) and may freeze the layers
below the new one::

    phase 1:  embedding ─► layer 1 ─► head 1
    phase 2:  embedding ─► layer 1 ─► layer 2 ─► head 2          (layer 1 carried over)
    phase 3:  embedding ─► layer 1 ─► layer 2 ─► layer 3 ─► head 3

    gradual = GradualLearning(
        embedding=keras.layers.Embedding(vocab_size, 32),
        layers=[VariationalLSTM(32, return_sequences=True, stateful=True) for _ in range(3)],
        head_factory=lambda depth: keras.layers.Dense(vocab_size),
        optimizer_factory=lambda phase: keras.optimizers.SGD(1.0, global_clipnorm=5.0),
        phases=gradual_phases(3, epochs=2, keep_output=0.7, keep_state=0.8))
    histories = gradual.fit(train_windows, validation_data=valid_windows)

The phases are data (`gradual_rnn.phases.Phase`): `gradual_phases` makes them from plain values, as
`phases.make_phases` makes a run's from its Config. A dataset yields windows `(ids, targets)`, each
`<int32>[batch, time]`; with stateful layers, consecutive windows of the same streams in order, as
`gradual_rnn.data.ptb.make_dataset` lays them out. docs/keras.md walks through an example.
"""
from typing import Callable, List, Optional, Sequence, Union

import keras
import tensorflow as tf

from gradual_rnn.nn.objectives import Perplexity, WindowCrossEntropy
from gradual_rnn.phases import DropoutPlan, Phase

KeepTable = Union[float, Sequence[Sequence[float]]]


def _keep_row(name: str, table: KeepTable, depth: int):
    """Row `depth` of a keep table (one row per phase, one value per layer 1..depth), or a float
    for every layer of every phase."""
    if isinstance(table, (int, float)):
        return (float(table),) * depth
    row = tuple(float(keep) for keep in table[depth - 1])
    if len(row) != depth:
        raise ValueError(f"{name}: row {depth} has {len(row)} values; phase {depth} trains {depth} layers.")
    return row


def gradual_phases(num_layers: int, epochs: Union[int, Sequence[int]] = 1, keep_embed: float = 1.0,
                   keep_output: KeepTable = 1.0, keep_state: KeepTable = 1.0,
                   freeze_lower_layers: bool = False) -> List[Phase]:
    """The GL phases of a `num_layers` stack: phase k trains layers 1..k on head k.

    epochs: per phase, or one number for all. keep_output, keep_state: a float, or a table whose
    row k holds the keep probabilities of layers 1..k in phase k (LAD, as the configs' tables).
    keep_embed: per-element dropout after the embedding. freeze_lower_layers: phase k trains layer k
    only (the embedding and the heads always train).
    """
    epoch_counts = [epochs] * num_layers if isinstance(epochs, int) else list(epochs)
    if len(epoch_counts) != num_layers:
        raise ValueError(f"epochs has {len(epoch_counts)} values for {num_layers} phases.")
    phases = []
    for depth in range(1, num_layers + 1):
        plan = DropoutPlan("variational", float(keep_embed), _keep_row("keep_output", keep_output, depth),
                           _keep_row("keep_state", keep_state, depth))
        trainable = (depth - 1,) if freeze_lower_layers else tuple(range(depth))
        phases.append(Phase(depth, depth, epoch_counts[depth - 1], plan, trainable, grows_model=depth > 1))
    return phases


def _stateful_layers(model):
    """Every layer of `model` (recursing into nested models) that holds a state between calls."""
    for layer in model.layers:
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
            yield layer
        if isinstance(layer, keras.Model):
            yield from _stateful_layers(layer)


def _fixed_mask_layers(model):
    for layer in model.layers:
        if getattr(layer, "mask_policy", None) == "fixed":
            yield layer
        if isinstance(layer, keras.Model):
            yield from _fixed_mask_layers(layer)


class ResetStates(keras.callbacks.Callback):
    """Forgets the state of every stateful layer at the start of each epoch and of each evaluation
    (validation runs its own streams from zeros)."""

    def _reset(self):
        for layer in _stateful_layers(self.model):
            layer.reset_state()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset()

    def on_test_begin(self, logs=None):
        self._reset()


class RefreshMasks(keras.callbacks.Callback):
    """New variational masks at the start of each epoch for every layer with `mask_policy='fixed'`
    (the GL code's per-epoch masks): with `seed`, layer j's masks of epoch e come from the stateless
    seed `fold_in(fold_in([seed, 0], e), j)`, reproducibly; without, from each layer's generator."""

    def __init__(self, seed: Optional[int] = None):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        for index, layer in enumerate(_fixed_mask_layers(self.model)):
            if self.seed is None:
                layer.refresh_masks()
                continue
            epoch_seed = tf.random.experimental.stateless_fold_in(
                tf.constant([self.seed % (2 ** 31), 0], tf.int32), epoch)
            layer.refresh_masks(tf.random.experimental.stateless_fold_in(epoch_seed, index))


class GradualLearning:
    """Trains `layers` gradually with `fit` (see the module docstring).

    embedding: the Keras layer from ids `<int>[batch, time]` to vectors (e.g. keras.layers.Embedding).
    layers: Keras recurrent layers with `return_sequences=True`, bottom first. Dropout below 1 in a
    phase needs layers with variational dropout (`VariationalLSTM`: its `set_dropout`).
    head_factory: `depth -> layer` giving head k (logits `[batch, time, vocab]`), made once per phase.
    optimizer_factory: `phase -> keras optimizer`, a fresh one per phase (the learning-rate reset);
        e.g. SGD with `global_clipnorm`, the references' clipping.
    phases: from `gradual_phases` (default: one epoch per phase, no dropout).
    loss: default `WindowCrossEntropy()` (the references' cost); metrics_factory: `() -> list` of
    fresh metrics per phase (default `[Perplexity()]`); compile_options: more `compile` arguments
    (e.g. `jit_compile=False`); mask_seed: see `RefreshMasks`.
    """

    def __init__(self, embedding: keras.layers.Layer, layers: Sequence[keras.layers.Layer],
                 head_factory: Callable[[int], keras.layers.Layer],
                 optimizer_factory: Callable[[Phase], keras.optimizers.Optimizer],
                 phases: Optional[Sequence[Phase]] = None, loss: Optional[keras.losses.Loss] = None,
                 metrics_factory: Optional[Callable[[], list]] = None, compile_options: Optional[dict] = None,
                 mask_seed: Optional[int] = None):
        for index, layer in enumerate(layers):
            if not getattr(layer, "return_sequences", True):
                raise ValueError(f"Layer {index + 1} ({layer.name}) needs return_sequences=True: "
                                 "every layer feeds a sequence to the next one and to its head.")
        self.embedding, self.layers = embedding, list(layers)
        self.head_factory, self.optimizer_factory = head_factory, optimizer_factory
        self.phases = list(phases) if phases is not None else gradual_phases(len(self.layers))
        if self.phases[-1].depth > len(self.layers):
            raise ValueError(f"Phase {self.phases[-1].index} trains {self.phases[-1].depth} layers; "
                             f"{len(self.layers)} were given.")
        self.loss = loss if loss is not None else WindowCrossEntropy()
        self.metrics_factory = metrics_factory or (lambda: [Perplexity()])
        self.compile_options = dict(compile_options or {})
        self.mask_seed = mask_seed
        self.heads = {}  # depth -> head layer

    def head(self, depth: int) -> keras.layers.Layer:
        """Head `depth`, made by `head_factory` on first use."""
        if depth not in self.heads:
            self.heads[depth] = self.head_factory(depth)
        return self.heads[depth]

    def model(self, depth: Optional[int] = None, keep_embed: float = 1.0) -> keras.Sequential:
        """The built stack of phase `depth` (default: the last phase's) on ids `<int32>[batch, time]`
        of any time length: embedding, per-element dropout when `keep_embed < 1`, layers 1..depth,
        head `depth`. The layers are shared with every other phase's model."""
        depth = self.phases[-1].depth if depth is None else depth
        dropout = [keras.layers.Dropout(1.0 - keep_embed)] if keep_embed < 1.0 else []
        return keras.Sequential([keras.Input((None,), dtype="int32"), self.embedding, *dropout,
                                 *self.layers[:depth], self.head(depth)], name=f"gradual_depth_{depth}")

    def fit(self, dataset, validation_data=None, callbacks: Sequence[keras.callbacks.Callback] = (),
            verbose: int = 0) -> List[keras.callbacks.History]:
        """Trains every phase in order; one Keras `History` per phase."""
        return [self.fit_phase(phase, dataset, validation_data, callbacks, verbose) for phase in self.phases]

    def fit_phase(self, phase: Phase, dataset, validation_data=None,
                  callbacks: Sequence[keras.callbacks.Callback] = (),
                  verbose: int = 0) -> keras.callbacks.History:
        """One phase: its dropout and trainable layers set, a fresh compile, `fit` for its epochs."""
        self._configure_layers(phase)
        model = self.model(phase.depth, phase.dropout.keep_embed)
        model.compile(optimizer=self.optimizer_factory(phase), loss=self.loss,
                      metrics=self.metrics_factory(), **self.compile_options)
        callbacks = [ResetStates(), RefreshMasks(self.mask_seed), *callbacks]
        return model.fit(dataset, epochs=phase.epochs, validation_data=validation_data,
                         callbacks=callbacks, verbose=verbose, shuffle=False)

    def _configure_layers(self, phase: Phase) -> None:
        plan = phase.dropout
        for index, layer in enumerate(self.layers[:phase.depth]):
            keeps = plan.keep_output[index], plan.keep_state[index]
            if hasattr(layer, "set_dropout"):
                layer.set_dropout(*keeps)
            elif min(keeps) < 1.0:
                raise ValueError(f"Layer {index + 1} ({layer.name}) has no variational dropout to set "
                                 f"(phase {phase.index} keeps {keeps}); use VariationalLSTM.")
            layer.trainable = index in phase.trainable_layers
