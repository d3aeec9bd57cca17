"""The references' training cost and their perplexity as a Keras loss and a Keras metric, for
`compile` / `fit` / `evaluate`."""
import keras
import tensorflow as tf

from gradual_rnn.nn.base import PACKAGE


def _token_losses(targets, logits):
    """Cross-entropy of every token, `<float32>[batch, time]`."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(targets, tf.int32),
                                                          logits=tf.cast(logits, tf.float32))


@keras.saving.register_keras_serializable(package=PACKAGE)
class WindowCrossEntropy(keras.losses.Loss):
    """The window cost of both references (Zaremba et al. 2014; the GL code): the cross-entropy
    summed over the time steps of a window and averaged over its batch, so that its gradient grows
    with the window length, as the package's trainer's does (`train/steps.py`).

    call(targets `<int>[batch, time]`, logits `<float>[batch, time, vocab]`) -> `<float32>[batch]`,
    each sequence's sum over time; Keras's default reduction, `sum_over_batch_size`, averages these
    over the batch. (Keras's `SparseCategoricalCrossentropy` would average over time too.)
    """

    def __init__(self, name: str = "window_cross_entropy", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return tf.reduce_sum(_token_losses(y_true, y_pred), axis=-1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Perplexity(keras.metrics.Metric):
    """`exp(summed negative log-likelihood / token count)` over every token since the last reset:
    the sums are kept (in float64) and the perplexity is computed once, in `result`.

    update_state(targets `<int>[batch, time]`, logits `<float>[batch, time, vocab]`,
    sample_weight `[batch, time]` or None: 0 for padding).
    """

    def __init__(self, name: str = "perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_nll = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total_nll")
        self.token_count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="token_count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        losses = tf.cast(_token_losses(y_true, y_pred), tf.float64)
        weights = tf.ones_like(losses) if sample_weight is None else tf.cast(sample_weight, tf.float64)
        weights = tf.broadcast_to(weights, tf.shape(losses))
        self.total_nll.assign_add(tf.reduce_sum(losses * weights))
        self.token_count.assign_add(tf.reduce_sum(weights))

    def result(self):
        return tf.exp(self.total_nll / tf.maximum(self.token_count, 1.0))

    def reset_state(self):
        for variable in (self.total_nll, self.token_count):
            variable.assign(0.0)
