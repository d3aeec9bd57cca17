"""Compiled evaluation: window by window, in chunks, and the joining of windows."""
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.data import ptb
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train import steps
from gradual_rnn.train.models import build_model
from train.tiny import tiny_config


def test_eval_step_equals_python_loop_over_windows(tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size)
    model = build_model(config)
    inputs, targets = ptb.window_arrays(tiny_corpus.valid, 4, 5)
    evaluate = evaluation.make_eval_step(model, 2)
    nll, count, _ = evaluate(tf.constant(inputs), tf.constant(targets),
                             tf.ones(inputs.shape), model.initial_state(4))
    state, total = model.initial_state(4), 0.0
    for x, y in zip(inputs, targets):
        logits, state = model(tf.constant(x), state)
        total += float(steps.sequence_cost(logits, tf.constant(y), 4)) * 4
    assert float(count) == inputs.size
    assert float(nll) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("batch_size, num_steps", [(1, 1), (2, 3)])
def test_eval_step_chunks_equal_window_by_window(tiny_corpus, batch_size, num_steps):
    """Windows joined into long chunks give the window-by-window numbers, including the exact
    layout's zero-weighted padding and a tail of windows shorter than one chunk."""
    model = build_model(tiny_config(vocab_size=tiny_corpus.vocab_size))
    exact = ptb.exact_windows(tiny_corpus.test, batch_size, num_steps)
    windows = exact.inputs.shape[0]
    chunk_tokens = 7 * batch_size * num_steps
    assert windows % 7 and windows > 7
    assert (exact.weights.sum() < exact.weights.size) == (batch_size > 1)  # padding at batch 2
    arguments = [tf.constant(array) for array in (exact.inputs, exact.targets, exact.weights)]
    window_by_window = evaluation.make_eval_step(model, 2, chunk_tokens=1)
    chunked = evaluation.make_eval_step(model, 2, chunk_tokens=chunk_tokens)
    expected = window_by_window(*arguments, model.initial_state(batch_size))
    actual = chunked(*arguments, model.initial_state(batch_size))
    assert float(actual[1]) == float(expected[1]) == exact.weights.sum()
    assert float(actual[0]) == pytest.approx(float(expected[0]), rel=1e-6)
    for mine, wanted in zip(tf.nest.flatten(actual[2]), tf.nest.flatten(expected[2])):
        np.testing.assert_allclose(mine.numpy(), wanted.numpy(), rtol=0, atol=1e-6)


def test_merge_windows_joins_consecutive_windows_per_row():
    array = np.arange(5 * 2 * 3).reshape(5, 2, 3)  # [windows, batch, steps]
    merged = evaluation.merge_windows(tf.constant(array), 2).numpy()
    assert merged.shape == (2, 2, 6)
    np.testing.assert_array_equal(merged[1, 1], np.concatenate([array[2, 1], array[3, 1]]))
