"""Compiled train and eval steps (from factories), learning-rate rules and the test rule.

Cost of one window (both references): `sum over time and batch of cross-entropy / batch_size`,
i.e. summed over the time steps and averaged over the batch, so its gradient grows with num_steps.
Gradients are clipped by their global norm, then a plain SGD step (unless another optimizer is asked
for). Perplexity of a pass: `exp(total negative log-likelihood / number of scored tokens)`, which is
the references' `exp(sum of window costs / (windows * num_steps))`.
"""
import contextlib
import dataclasses
import math
from typing import List, Optional

import keras
import tensorflow as tf

from gradual_rnn import layers as lstm_layers
from gradual_rnn import techniques
from gradual_rnn.configs import Config
from gradual_rnn.model import DropoutPlan, LanguageModel


def window_seed(base_seed: int, key):
    """A stateless seed `<int32>[2]` for one window from `key` = (phase, epoch, window).

    Seeds are derived, not drawn, so a resumed run sees exactly the noise an uninterrupted one would.
    """
    seed = tf.stack([tf.constant(base_seed % (2 ** 31), tf.int32), tf.constant(0, tf.int32)])
    for index in range(3):
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(key[index], tf.int32))
    return seed


def sequence_cost(logits, targets, batch_size):
    """`sum(cross-entropy) / batch_size` over a `[batch, time]` window (SPEC §2)."""
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(losses) / tf.cast(batch_size, losses.dtype)


def loss_scale(optimizer):
    """The dynamic loss scale of a `LossScaleOptimizer` (mixed_float16), else None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.convert_to_tensor(optimizer.dynamic_scale)
    return None


def clip_gradients(gradients, max_grad_norm: float, scale=None):
    """Clips by the global norm (the references' rule) -> (clipped, norm). With a loss scale the
    gradients are scaled: the threshold is scaled alike and the norm is reported unscaled; the
    optimizer unscales the clipped gradients (and skips the step if any is not finite)."""
    if scale is None:
        return tf.clip_by_global_norm(gradients, max_grad_norm)
    clipped, norm = tf.clip_by_global_norm(gradients, max_grad_norm * scale)
    return clipped, norm / scale


def window_gradients(model, variables, config: Config, dropout, depth: int, seed, window, batch_size,
                     scale=None):
    """Cost (SPEC §2, divided by `batch_size`), new state and gradients of one window.

    window: (inputs, targets, state, masks). Shared by the one-device and the distributed steps.
    scale: a loss scale (mixed_float16) the gradients are multiplied by, or None. With
    `config.activity_l1`, the gradients are those of cost + the L1 activity penalty; the returned
    cost is the cross-entropy cost alone.
    """
    trace = [] if config.omega else None
    with tf.GradientTape() as tape:
        with tf.GradientTape() if trace is not None else contextlib.nullcontext() as inner:
            cost, objective, new_state = _window_cost(model, config, dropout, depth, seed, window,
                                                      batch_size, trace)
        if trace:
            objective += config.omega * window_omega(inner, cost, trace)
        scaled = objective if scale is None else objective * scale
    return cost, new_state, tape.gradient(scaled, variables)


def _window_cost(model, config: Config, dropout, depth: int, seed, window, batch_size, trace=None):
    """(cost of SPEC §2 divided by `batch_size`, cost + the L1 activity penalty if
    `config.activity_l1`, new state). trace: see `LanguageModel.top_outputs`."""
    inputs, targets, state, masks = window
    activity = [] if config.activity_l1 else None
    summed, new_state = model.summed_cost(inputs, targets, state, depth=depth, dropout=dropout, seed=seed,
                                          masks=masks, detach=detach_steps(config, seed, depth, inputs.shape[1]),
                                          activity=activity, trace=trace)
    cost = summed / tf.cast(batch_size, summed.dtype)
    if not activity:
        return cost, cost, new_state
    # Bengio et al. (2013) §3.4: L1 on the hidden outputs, per sequence like the cost.
    return cost, cost + config.activity_l1 * tf.add_n(activity) / tf.cast(batch_size, summed.dtype), new_state


def window_omega(tape, cost, trace):
    """Pascanu et al.'s Ω (eq. 9) of one window, summed over the layers: for each layer the mean over
    steps k = 1..T-1 and sequences of `(||∂E/∂h_{k+1} ∂h_{k+1}/∂h_k|| / ||∂E/∂h_{k+1}|| - 1)²`,
    ∂E/∂h_{k+1} (total derivatives, from `tape`) held constant, as in the paper. The LSTM's step
    Jacobian is taken with c_k held fixed (`techniques.vanishing_gradient_regularizer_from_step`)."""
    hiddens = [hidden for layer in trace for hidden in layer.hiddens]
    gradients = iter(tape.gradient(cost, hiddens, unconnected_gradients=tf.UnconnectedGradients.ZERO))
    total = 0.0
    for layer in trace:
        layer_gradients = [next(gradients) for _ in layer.hiddens]
        previous = list(zip(layer.cells[:-1], layer.hiddens[:-1]))
        total += techniques.vanishing_gradient_regularizer_from_step(
            lambda index, state, layer=layer: layer.step(index + 1, state), previous, layer_gradients[1:])
    return total


def make_train_step(model: LanguageModel, optimizer: keras.optimizers.Optimizer, config: Config,
                    plan: DropoutPlan, depth: int, jit_compile: bool = False):
    """A compiled `step(inputs, targets, state, key, masks) -> (cost, new_state, gradient_norm)`.

    inputs, targets: `<int32>[batch, num_steps]`; state: `(c, h)` per layer 1..depth; key:
    `<int64>[3]` (phase, epoch, window) for the dropout seed; masks: variational masks or None.
    The incoming state is a plain input, not a function of any variable on the tape, so no gradient
    crosses the window boundary (truncated backpropagation through time).
    """
    variables = model.trainable_variables
    optimizer.build(variables)
    dropout = None if plan.is_identity else plan
    if config.sampling:
        return make_sampled_train_step(model, optimizer, config, dropout, depth, jit_compile)

    def step(inputs, targets, state, key, masks):
        seed = window_seed(config.seed, key)
        scale = loss_scale(optimizer)
        cost, new_state, gradients = window_gradients(model, variables, config, dropout, depth, seed,
                                                      (inputs, targets, state, masks), tf.shape(inputs)[0],
                                                      scale)
        if is_plain_sgd(optimizer):
            gradient_norm = apply_clipped_sgd(optimizer, gradients, variables, config.max_grad_norm)
        else:
            clipped, gradient_norm = clip_gradients(gradients, config.max_grad_norm, scale)
            optimizer.apply_gradients(zip(clipped, variables))
        return cost, new_state, gradient_norm

    return tf.function(step, jit_compile=jit_compile)


def sampled_window(model, variables, config: Config, dropout, depth: int, seed, window, batch_size):
    """Cost, new state, gradients (of cost + any L1 activity penalty), and Chernodub & Nowicki's Q
    and ∂S/∂W_rec of one window.

    δ(t) = ∂E/∂h_t (total derivatives) of the layers' outputs, all layers together; k is the last
    step of the window and h = num_steps - 1, so δ(k-h) is the first step's. Q = log10(||δ(k)|| /
    ||δ(k-h)||) (their eq. 16) and S = ½||δ(k-h)||², differentiated with respect to the recurrent
    kernels (second order, through `BasicLSTM.stepwise`).
    """
    trace = []
    with tf.GradientTape(persistent=True) as tape:
        with tf.GradientTape() as inner:
            cost, objective, new_state = _window_cost(model, config, dropout, depth, seed, window,
                                                      batch_size, trace)
        ends = [layer.hiddens[0] for layer in trace] + [layer.hiddens[-1] for layer in trace]
        deltas = inner.gradient(cost, ends, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        first, last = tf.concat(deltas[:depth], -1), tf.concat(deltas[depth:], -1)
        half_square = 0.5 * tf.reduce_sum(tf.square(first))
    gradients = tape.gradient(objective, variables)
    kernels = [layer.recurrent_kernel for layer in model.lstm_layers[:depth]]
    d_kernels = tape.gradient(half_square, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return cost, new_state, gradients, techniques.q_factor(last, first), d_kernels


def make_sampled_train_step(model, optimizer, config: Config, dropout, depth: int, jit_compile: bool):
    """The train step with Chernodub & Nowicki's Algorithm 1: the clipped update is applied only when
    `techniques.sampling_rule(Q, dS)` says so. dS = Σ ⟨∂S/∂W_rec, dW_rec⟩ with dW_rec = -lr × the
    clipped gradient (their Lemma 1, the plain SGD correction). The step function's `used` and
    `seen` variables count the windows trained on and offered."""
    variables = model.trainable_variables
    kernel_ids = {id(layer.recurrent_kernel) for layer in model.lstm_layers[:depth]}
    kernel_positions = [index for index, variable in enumerate(variables) if id(variable) in kernel_ids]
    used, seen = tf.Variable(0, dtype=tf.int64), tf.Variable(0, dtype=tf.int64)

    def step(inputs, targets, state, key, masks):
        seed = window_seed(config.seed, key)
        cost, new_state, gradients, q, d_kernels = sampled_window(
            model, variables, config, dropout, depth, seed, (inputs, targets, state, masks),
            tf.shape(inputs)[0])
        clipped, gradient_norm = clip_gradients(gradients, config.max_grad_norm)
        rate = tf.cast(tf.convert_to_tensor(optimizer.learning_rate), tf.float32)
        ds = tf.add_n([tf.reduce_sum(d_kernel * -rate * clipped[position])
                       for d_kernel, position in zip(d_kernels, kernel_positions)])
        use = techniques.sampling_rule(q, ds, config.q_min, config.q_max, None, config.sampling_convention)

        def apply():
            optimizer.apply_gradients(zip(clipped, variables))
            return tf.constant(1, tf.int64)

        used.assign_add(tf.cond(use, apply, lambda: tf.constant(0, tf.int64)))
        seen.assign_add(1)
        return cost, new_state, gradient_norm

    compiled = tf.function(step, jit_compile=jit_compile)
    compiled.used, compiled.seen = used, seen
    return compiled


def is_plain_sgd(optimizer) -> bool:
    """Keras SGD without momentum (both references' optimizer), not wrapped for loss scaling."""
    return type(optimizer) is keras.optimizers.SGD and not optimizer.momentum


def apply_clipped_sgd(optimizer, gradients, variables, max_grad_norm: float):
    """The references' clipping and plain SGD step, one pass over each variable; returns the norm.

    TF1 did `clip_by_global_norm` and then `GradientDescentOptimizer`, i.e.
    `w -= lr * (g * max_norm / max(norm, max_norm))`. Here the clip factor goes into the step size
    and `ApplyGradientDescent` (the kernel TF1 ran) updates in place, so no clipped copy of the
    gradients is made: the same update up to float rounding, at one memory pass per variable
    instead of three. Embedding gradients (IndexedSlices) are scattered. As with
    `clip_by_global_norm`, a non-finite norm makes the step NaN (caught by the trainer). The
    optimizer's iteration count advances as Keras's `apply_gradients` would advance it.
    """
    norm = tf.linalg.global_norm([g for g in gradients if g is not None])
    factor = tf.where(tf.math.is_finite(norm), max_grad_norm / tf.maximum(norm, max_grad_norm),
                      tf.constant(float("nan")))
    rate = tf.cast(tf.convert_to_tensor(optimizer.learning_rate), tf.float32) * factor
    for gradient, variable in zip(gradients, variables):
        if gradient is None:
            continue
        if isinstance(gradient, tf.IndexedSlices):
            tf.raw_ops.ResourceScatterSub(resource=variable.handle, indices=gradient.indices,
                                          updates=gradient.values * rate)
        else:
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=rate, delta=gradient)
    optimizer.iterations.assign_add(1)
    return norm


def make_optimizer(config: Config) -> keras.optimizers.Optimizer:
    """Plain SGD (both references), or simplified Nesterov momentum (Bengio et al. 2013, eq. 7),
    which Keras's `SGD(nesterov=True)` computes exactly for a constant momentum. With
    mixed_float16, wrapped in Keras's dynamic `LossScaleOptimizer` (its scale is checkpointed)."""
    optimizer = keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum,
                                     nesterov=config.optimizer == "nesterov")
    if config.precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def detach_steps(config: Config, seed, depth: int, num_steps: int):
    """h-detach coins, one `<bool>[num_steps]` per layer, or None when h-detach is off."""
    if not config.h_detach:
        return None
    return [tf.random.stateless_uniform([num_steps], seed=tf.random.experimental.stateless_fold_in(
        seed, 1000 + layer)) < config.h_detach for layer in range(depth)]


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
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
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

    return tf.function(evaluate, jit_compile=jit_compile)


def perplexity(nll_sum: float, token_count: float) -> float:
    """`exp(nll_sum / token_count)`, infinite rather than an error when it overflows."""
    try:
        return math.exp(nll_sum / token_count)
    except OverflowError:
        return math.inf


def tutorial_learning_rate(config: Config, epoch: int) -> float:
    """Zaremba's schedule: full rate for `full_lr_epochs` epochs, then x decay per epoch (0-based)."""
    return config.learning_rate * config.learning_rate_decay ** max(epoch + 1 - config.full_lr_epochs, 0)


def plateau_learning_rate(config: Config, current: float, valid_history: List[float]) -> float:
    """The GL code's rule, applied before each epoch: decay when validation rose (history > 2)."""
    if len(valid_history) > 2 and valid_history[-1] > valid_history[-2]:
        return current * config.learning_rate_decay
    return current


def learning_rate_for_epoch(config: Config, epoch: int, current: Optional[float],
                            valid_history: List[float]) -> float:
    """The learning rate of `epoch` (0-based, within a phase); `current` is None at a phase start."""
    if config.learning_rate_schedule == "tutorial":
        return tutorial_learning_rate(config, epoch)
    if current is None:
        return config.learning_rate
    return plateau_learning_rate(config, current, valid_history)


@dataclasses.dataclass
class BestValidation:
    """The GL code's global best validation perplexity and the test perplexity scored at it."""

    valid: float = 10000.0
    test: Optional[float] = None
    exact_test: Optional[float] = None
    phase: Optional[int] = None
    epoch: Optional[int] = None

    def improves(self, valid_perplexity: float) -> bool:
        return valid_perplexity < self.valid


def sample_masks(config: Config, plan: DropoutPlan, key, batch_size: int):
    """The variational masks of a phase for one refresh (`key` = (phase, epoch, window))."""
    if plan.style != "variational":
        return None
    seed = window_seed(config.seed + 1, key)
    return lstm_layers.sample_variational_masks(seed, batch_size, config.hidden_size,
                                                plan.keep_output, plan.keep_state)
