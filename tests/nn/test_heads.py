"""The softmax heads (nn/heads.py): the fused softmax cost and its gradient against autodiff (eager,
tf.function, XLA), and serialization of both heads."""
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.nn import heads
from nn.round_trips import assert_config_round_trip, assert_keras_file_round_trip

BATCH, TIME, UNITS = 3, 5, 6
EXECUTION_MODES = ("eager", "function", "xla")


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("mode", EXECUTION_MODES)
def test_fused_softmax_cost_matches_autodiff(transposed, mode):
    rng = np.random.RandomState(3)
    vocab = 12
    outputs = tf.constant(rng.uniform(-1, 1, (BATCH, TIME, UNITS)).astype(np.float32))
    kernel_shape = (vocab, UNITS) if transposed else (UNITS, vocab)
    kernel = tf.constant(rng.uniform(-1, 1, kernel_shape).astype(np.float32))
    bias = tf.constant(rng.uniform(-1, 1, (vocab,)).astype(np.float32))
    targets = tf.constant(rng.randint(0, vocab, (BATCH, TIME)).astype(np.int32))

    def plain(outputs, kernel, bias):
        logits = tf.einsum("btu,vu->btv" if transposed else "btu,uv->btv", outputs, kernel) + bias
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))

    def fused(outputs, kernel, bias):
        return heads.summed_softmax_cost(outputs, kernel, bias, targets, transposed)

    def gradients(function):
        def run(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                cost = 3.0 * function(*tensors)  # a non-unit upstream gradient
            return [cost] + tape.gradient(cost, list(tensors))
        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        return run(outputs, kernel, bias)

    for mine, wanted in zip(gradients(fused), gradients(plain), strict=True):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=1e-6, atol=1e-5)


# --- Serialization. ---

def _tied_head_case():
    layer = heads.TiedSoftmaxHead(12, 0.1, seed=5, name="tied_head")
    rng = np.random.RandomState(0)
    outputs = rng.uniform(-1, 1, (2, 3, UNITS)).astype(np.float32)
    embedding = rng.uniform(-1, 1, (12, UNITS)).astype(np.float32)
    return layer, lambda target: target(outputs, embedding)


def _head_case():
    layer = heads.SoftmaxHead(12, UNITS, 0.1, seed=6, name="softmax_head")
    outputs = np.random.RandomState(1).uniform(-1, 1, (2, 3, UNITS)).astype(np.float32)
    return layer, lambda target: target(outputs)


HEAD_CASES = {"TiedSoftmaxHead": _tied_head_case, "SoftmaxHead": _head_case}


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_head_config_round_trip(case):
    assert_config_round_trip(*HEAD_CASES[case]())


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_head_keras_file_round_trip(case, tmp_path):
    assert_keras_file_round_trip(*HEAD_CASES[case](), tmp_path / "layer.keras")
