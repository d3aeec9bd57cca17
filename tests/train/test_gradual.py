"""Gradual learning of a Keras stack with `fit` (train/gradual.py): the phases as data, a 3-layer
stack trained in 3 phases (each phase starts from the weights the previous one left, a fresh
optimizer, its own dropout), freezing the lower layers, and the errors."""
import keras
import numpy as np
import pytest

from gradual_rnn.data import ptb
from gradual_rnn.nn import VariationalLSTM
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train.gradual import GradualLearning, gradual_phases

VOCAB, UNITS = 10, 8


def test_gradual_phases_are_the_paper_schedule():
    phases = gradual_phases(3, epochs=(2, 2, 5), keep_embed=0.9,
                            keep_output=((0.5,), (0.6, 0.5), (0.7, 0.6, 0.5)), keep_state=0.8)
    assert [(p.index, p.depth, p.epochs, p.trainable_layers, p.grows_model) for p in phases] == [
        (1, 1, 2, (0,), False), (2, 2, 2, (0, 1), True), (3, 3, 5, (0, 1, 2), True)]
    assert phases[1].dropout == DropoutPlan("variational", 0.9, (0.6, 0.5), (0.8, 0.8))
    assert [p.trainable_layers for p in gradual_phases(3, freeze_lower_layers=True)] == [(0,), (1,), (2,)]
    with pytest.raises(ValueError, match="row 2 has 1 values"):
        gradual_phases(2, keep_output=((0.5,), (0.5,)))
    with pytest.raises(ValueError, match="epochs has 2 values for 3 phases"):
        gradual_phases(3, epochs=(1, 1))


class WeightLog(keras.callbacks.Callback):
    """The weights of every layer of each phase's model, at the start and the end of the phase."""

    def __init__(self):
        super().__init__()
        self.begin, self.end, self.optimizers, self.keeps = [], [], [], []

    def _weights(self):
        return {layer.name: [weight.numpy().copy() for weight in layer.weights] for layer in self.model.layers}

    def on_train_begin(self, logs=None):
        self.begin.append(self._weights())
        self.optimizers.append((self.model.optimizer, int(self.model.optimizer.iterations)))
        self.keeps.append([(layer.keep_output, layer.keep_state) for layer in self.model.layers
                           if isinstance(layer, VariationalLSTM)])

    def on_train_end(self, logs=None):
        self.end.append(self._weights())


def _gradual(freeze=False, epochs=1):
    layers = [VariationalLSTM(UNITS, return_sequences=True, stateful=True, mask_policy="fixed", init_scale=0.5,
                              seed=10 * index, name=f"lstm_{index + 1}") for index in range(3)]
    phases = gradual_phases(3, epochs=epochs, keep_embed=0.9, keep_output=0.8,
                            keep_state=((0.9,), (0.9, 0.8), (0.9, 0.8, 0.7)), freeze_lower_layers=freeze)
    return GradualLearning(keras.layers.Embedding(VOCAB, UNITS, name="embedding"), layers,
                           head_factory=lambda depth: keras.layers.Dense(VOCAB, name=f"head_{depth}"),
                           optimizer_factory=lambda phase: keras.optimizers.SGD(1.0, global_clipnorm=5.0),
                           phases=phases, compile_options=dict(jit_compile=False), mask_seed=3)


def _windows():
    ids = np.array([3 * index % VOCAB for index in range(200)], np.int32)
    return ptb.make_dataset(ids, 4, 8)


def _same(first, second):
    return all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_three_layers_in_three_phases():
    keras.utils.set_random_seed(1)
    log = WeightLog()
    gradual = _gradual()
    histories = gradual.fit(_windows(), callbacks=[log])
    assert len(histories) == 3 and all(np.isfinite(h.history["loss"][0]) for h in histories)
    names = [[name for name in weights if not name.startswith("dropout")] for weights in log.begin]
    assert names == [["embedding", "lstm_1", "head_1"], ["embedding", "lstm_1", "lstm_2", "head_2"],
                     ["embedding", "lstm_1", "lstm_2", "lstm_3", "head_3"]]
    # Phase 2 starts from the weights phase 1 left (layer 1 and the embedding), then trains them.
    for name in ("embedding", "lstm_1"):
        assert _same(log.end[0][name], log.begin[1][name]), name
        assert not _same(log.begin[1][name], log.end[1][name]), name
    assert _same(log.end[1]["lstm_2"], log.begin[2]["lstm_2"])
    # A fresh optimizer every phase (the learning rate starts again), and the phase's own dropout.
    assert len({id(optimizer) for optimizer, _ in log.optimizers}) == 3
    assert [iterations for _, iterations in log.optimizers] == [0, 0, 0]
    assert log.keeps == [[(0.8, 0.9)], [(0.8, 0.9), (0.8, 0.8)], [(0.8, 0.9), (0.8, 0.8), (0.8, 0.7)]]


@pytest.mark.slow
def test_freezing_keeps_the_lower_layers():
    keras.utils.set_random_seed(2)
    log = WeightLog()
    _gradual(freeze=True).fit(_windows(), callbacks=[log])
    assert _same(log.begin[2]["lstm_1"], log.end[2]["lstm_1"])
    assert _same(log.begin[2]["lstm_2"], log.end[2]["lstm_2"])
    for name in ("embedding", "lstm_3", "head_3"):
        assert not _same(log.begin[2][name], log.end[2][name]), name


def test_errors():
    embedding = keras.layers.Embedding(VOCAB, UNITS)
    heads = lambda depth: keras.layers.Dense(VOCAB)  # noqa: E731
    sgd = lambda phase: keras.optimizers.SGD(1.0)  # noqa: E731
    with pytest.raises(ValueError, match="needs return_sequences=True"):
        GradualLearning(embedding, [VariationalLSTM(UNITS)], heads, sgd)
    gradual = GradualLearning(embedding, [keras.layers.LSTM(UNITS, return_sequences=True)], heads, sgd,
                              phases=gradual_phases(1, keep_output=0.5))
    with pytest.raises(ValueError, match="has no variational dropout to set"):
        gradual.fit(_windows())
