"""Compiled evaluation: the summed negative log-likelihood of windows that run back to back."""
import tensorflow as tf
from absl import logging

from gradual_rnn.nn import cross_entropy
from gradual_rnn.nn.language_model import LanguageModel
from gradual_rnn.train.progress import perplexity


EVAL_CHUNK_TOKENS = 512


def merge_windows(array, group: int):
    """`[windows, batch, steps]` -> `[windows // group, batch, group * steps]`: consecutive windows
    of each batch row joined (the tail of `windows % group` windows is left out)."""
    windows, batch, steps = array.shape
    merged = windows // group
    grouped = tf.reshape(array[:merged * group], [merged, group, batch, steps])
    return tf.reshape(tf.transpose(grouped, [0, 2, 1, 3]), [merged, batch, group * steps])


def make_eval_step(model: LanguageModel, depth: int, jit_compile: bool = False,
                   chunk_tokens: int = EVAL_CHUNK_TOKENS):
    """A compiled `evaluate(inputs, targets, weights, state) -> (nll_sum, token_count, state)`.

    inputs, targets, weights: `[windows, batch, num_steps]`, consecutive windows run in one call (a
    graph loop), so evaluating at batch 1, one step per window, costs no Python per window. weights
    are 1 for scored tokens, 0 for padding (exact evaluation). Without dropout the state simply
    flows from window to window, so the loop runs `chunk_tokens // (batch * num_steps)` windows at a
    time as one longer window: the same numbers as window by window (up to float rounding), but the
    input projections and the softmax become large matrix products. For the references' test pass
    (batch 1, one step) that is 512 tokens per softmax product instead of one; windows of 512
    tokens or more (batch 20 x 35 steps) are run as they are.
    """

    def window_nll(inputs, targets, weights, state):
        logits, state = model(inputs, state, depth=depth)
        losses = cross_entropy.sparse_cross_entropy(logits, targets)
        return tf.cast(tf.reduce_sum(losses * weights), tf.float64), state

    def loop(inputs, targets, weights, nll, state):
        def body(index, nll, state):
            window_sum, state = window_nll(inputs[index], targets[index], weights[index], state)
            return index + 1, nll + window_sum, state

        _, nll, state = tf.while_loop(lambda index, *_: index < tf.shape(inputs)[0], body,
                                      (tf.constant(0), nll, state))
        return nll, state

    def evaluate(inputs, targets, weights, state):
        windows, batch, steps = inputs.shape
        known = None not in (windows, batch, steps)
        group = max(1, chunk_tokens // (batch * steps)) if known else 1
        nll = tf.constant(0.0, tf.float64)
        if group == 1:
            nll, state = loop(inputs, targets, weights, nll, state)
        else:
            merged = [merge_windows(array, group) for array in (inputs, targets, weights)]
            if merged[0].shape[0]:
                nll, state = loop(*merged, nll, state)
            tail = windows % group
            if tail:
                rest = [merge_windows(array[windows - tail:], tail) for array in (inputs, targets, weights)]
                window_sum, state = window_nll(rest[0][0], rest[1][0], rest[2][0], state)
                nll += window_sum
        return nll, tf.reduce_sum(tf.cast(weights, tf.float64)), state

    return tf.function(evaluate, jit_compile=jit_compile, autograph=False)


def make_window_costs(model: LanguageModel, depth: int, jit_compile: bool = False,
                      chunk_tokens: int = EVAL_CHUNK_TOKENS):
    """A compiled `window_costs(inputs, targets, state) -> (costs, state)`: the cost of every window
    as both references fetch it, `<float32>[windows]`, the sum over the window's steps of the
    batch-mean cross-entropy (their `run_epoch` sums these in float64 for the perplexity).

    inputs, targets: `[windows, batch, num_steps]`, run back to back from `state`, without dropout;
    as in `make_eval_step`, `chunk_tokens // (batch * num_steps)` consecutive windows are joined
    (`merge_windows`) into one longer window, whose per-step costs are then cut back into windows.
    """

    def merged_costs(inputs, targets, state, steps: int):
        """`<int>[batch, g * steps]` -> (the costs of its g windows `<float32>[g]`, new state)."""
        logits, state = model(inputs, state, depth=depth)
        losses = tf.cast(cross_entropy.sparse_cross_entropy(logits, targets), tf.float32)
        per_step = tf.reduce_mean(losses, axis=0)
        return tf.reduce_sum(tf.reshape(per_step, [-1, steps]), axis=1), state

    def window_costs(inputs, targets, state):
        windows, batch, steps = inputs.shape
        group = max(1, chunk_tokens // (batch * steps))
        merged = [merge_windows(array, group) for array in (inputs, targets)]
        chunks, parts = merged[0].shape[0], []

        def body(index, costs, state):
            chunk_costs, state = merged_costs(merged[0][index], merged[1][index], state, steps)
            return index + 1, costs.write(index, chunk_costs), state

        if chunks:
            costs = tf.TensorArray(tf.float32, size=chunks, element_shape=[group])
            _, costs, state = tf.while_loop(lambda index, *_: index < chunks, body, (tf.constant(0), costs, state))
            parts.append(costs.concat())
        tail = windows % group
        if tail:
            rest = [merge_windows(array[windows - tail:], tail)[0] for array in (inputs, targets)]
            tail_costs, state = merged_costs(rest[0], rest[1], state, steps)
            parts.append(tail_costs)
        return tf.concat(parts, axis=0), state

    return tf.function(window_costs, jit_compile=jit_compile, autograph=False)


def _perplexity(step, model, depth: int, windows) -> float:
    inputs, targets, weights = windows
    nll, count, _ = step(tf.constant(inputs), tf.constant(targets), tf.constant(weights),
                         model.initial_state(inputs.shape[1], depth))
    return perplexity(float(nll), float(count))


class Evaluator:
    """Validation and test perplexities of head `depth` of `model`, on a run's window layouts.

    `valid()` scores the validation windows at the training shape; `test()` returns the faithful
    test perplexity (the references' windows, whose tail is left out) and the exact one (every
    token scored once). Each pass starts from the zero state and carries it from window to window.
    """

    def __init__(self, model: LanguageModel, depth: int, windows, jit_compile: bool = False):
        self.model, self.depth, self.windows = model, depth, windows
        self.step = make_eval_step(model, depth, jit_compile)

    def valid(self) -> float:
        return _perplexity(self.step, self.model, self.depth, self.windows.valid)

    def test(self):
        faithful = _perplexity(self.step, self.model, self.depth, self.windows.test)
        exact = _perplexity(self.step, self.model, self.depth, self.windows.exact_test)
        logging.info("test perplexity %.3f (exact, every token: %.3f)", faithful, exact)
        return faithful, exact
