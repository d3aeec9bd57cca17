"""Compiled train steps, from factories: one window's cost, gradients, clipping and update, and the
dropout noise of a window (seeded by the run's seed and the window's key).

Cost of one window (both references): `sum over time and batch of cross-entropy / batch_size`,
i.e. summed over the time steps and averaged over the batch, so its gradient grows with num_steps.
Gradients are clipped by their global norm, then a plain SGD step (unless another optimizer is asked
for). `max_grad_norm=inf` means no clipping.

Every factory returns a `TrainStep`. The trainer carries a `Carried` value from window to window:
the LSTM's `LSTMState` per layer and the variational masks of the current refresh (None without
them). The compiled functions take the state and the masks as separate arguments and return only
the new state: a graph with extra outputs may order float work differently, and this keeps the
compiled step exactly the one the golden numbers came from.
"""
import contextlib
import dataclasses
import math
from typing import Callable, NamedTuple, Optional, Tuple

import keras
import tensorflow as tf

from gradual_rnn.configs import Config
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.nn.dropout import window_seed
from gradual_rnn.nn.language_model import LanguageModel
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import regularizers


class Carried(NamedTuple):
    """What one window hands the next: the state of layers 1..depth (one `LSTMState` each) and
    the variational masks in force (one `(output_mask, state_mask)` per layer, or None)."""

    state: tuple
    masks: Optional[list] = None


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A phase's compiled training step.

    one(inputs, targets, state, key, masks) -> (cost, state, gradient_norm): one window; inputs and
    targets `<int32>[batch, num_steps]`, key `<int64>[3]` = (phase, epoch, window).
    many: None, or (inputs, targets, state, keys, masks) -> (costs `[K]`, state, norms `[K]`): K
    consecutive windows in one graph loop, inputs `<int32>[K, batch, num_steps]`, keys `[K, 3]`.
    counters: None, or the sampling rule's `(used, seen)` window counters (variables).
    """

    one: Callable
    many: Optional[Callable] = None
    counters: Optional[Tuple[tf.Variable, tf.Variable]] = None


def sample_masks(config: Config, plan: DropoutPlan, key, batch_size: int):
    """The variational masks of a phase for one refresh (`key` = (phase, epoch, window)), or None
    without variational dropout."""
    if plan.style != "variational":
        return None
    seed = window_seed(config.seed + 1, key)
    return dropout_lib.sample_variational_masks(seed, batch_size, config.hidden_size,
                                                plan.keep_output, plan.keep_state)


def detach_steps(config: Config, seed, depth: int, num_steps: int):
    """h-detach coins of a window, one `<bool>[num_steps]` per layer, or None when h-detach is off."""
    if not config.h_detach:
        return None
    return dropout_lib.detach_coins(config.h_detach, seed, depth, num_steps)


def sequence_cost(logits, targets, batch_size):
    """`sum(cross-entropy) / batch_size` over a `[batch, time]` window: the references' cost."""
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
    if math.isinf(max_grad_norm):
        norm = tf.linalg.global_norm([g for g in gradients if g is not None])
        return list(gradients), norm if scale is None else norm / scale
    if scale is None:
        return tf.clip_by_global_norm(gradients, max_grad_norm)
    clipped, norm = tf.clip_by_global_norm(gradients, max_grad_norm * scale)
    return clipped, norm / scale


def window_gradients(model, variables, config: Config, dropout, depth: int, seed, window, batch_size,
                     scale=None):
    """Cost (the references' window cost, divided by `batch_size`), new state and gradients of one window.

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
    """(the references' window cost divided by `batch_size`, cost + the L1 activity penalty if
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
    Jacobian is taken with c_k held fixed (`regularizers.vanishing_gradient_regularizer_from_step`)."""
    hiddens = [hidden for layer in trace for hidden in layer.hiddens]
    gradients = iter(tape.gradient(cost, hiddens, unconnected_gradients=tf.UnconnectedGradients.ZERO))
    total = 0.0
    for layer in trace:
        layer_gradients = [next(gradients) for _ in layer.hiddens]
        previous = list(zip(layer.cells[:-1], layer.hiddens[:-1]))
        total += regularizers.vanishing_gradient_regularizer_from_step(
            lambda index, state, layer=layer: layer.step(index + 1, state), previous, layer_gradients[1:])
    return total


def make_train_step(model: LanguageModel, optimizer: keras.optimizers.Optimizer, config: Config,
                    plan: DropoutPlan, depth: int, jit_compile: bool = False) -> TrainStep:
    """The compiled step of a phase that trains head `depth` with the dropout `plan` (see `TrainStep`).

    state: one `LSTMState` per layer 1..depth; masks: the variational masks or None; key: `<int64>[3]`
    (phase, epoch, window) for the dropout seed.
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

    # autograph=False here and in every compiled function of the package: their control flow is
    # explicit (tf.while_loop, tf.cond) and every Python `if` tests a Python value, so the graph is
    # the same, and tracing skips autograph's conversion of each function it calls.
    one = tf.function(step, jit_compile=jit_compile, autograph=False)
    # With Ω (second-order gradients through every step) the looped graph is rewritten
    # differently: golden window 12 came out 247.49397 instead of 247.49400 (1.2e-7 relative).
    # Ω runs one window per call, bit-identical to the 0.1.0 numbers.
    return TrainStep(one, many=None if config.omega else windows_call(step, jit_compile))


def windows_call(step, jit_compile: bool = False):
    """A compiled `(inputs, targets, state, keys, masks) -> (costs <float32>[K], state, norms [K])`
    that trains K consecutive windows in one graph loop: inputs, targets `<int32>[K, batch, steps]`,
    keys `<int64>[K, 3]`; each window's update is applied before the next window runs, and the
    state flows from window to window, so the numbers are those of K separate calls of `step`
    (the same kernels on the same shapes) without K host round trips."""

    def run(inputs, targets, state, keys, masks):
        count = tf.shape(inputs)[0]

        def body(index, state, costs, norms):
            cost, state, norm = step(inputs[index], targets[index], state, keys[index], masks)
            return (index + 1, state, costs.write(index, tf.cast(cost, tf.float32)),
                    norms.write(index, tf.cast(norm, tf.float32)))

        arrays = [tf.TensorArray(tf.float32, size=count) for _ in range(2)]
        _, state, costs, norms = tf.while_loop(lambda index, *_: index < count, body,
                                               (tf.constant(0), state, *arrays))
        return costs.stack(), state, norms.stack()

    compiled = tf.function(run, jit_compile=jit_compile, autograph=False)
    traced = False

    def call(inputs, targets, state, keys, masks):
        # One trace serves every K (calls end early at checkpoints, stops and epoch ends): the first
        # call traces for any K, so the next K does not trace again.
        nonlocal traced
        if not traced:
            compiled.get_concrete_function(_any_count(inputs), _any_count(targets), state, _any_count(keys), masks)
            traced = True
        return compiled(inputs, targets, state, keys, masks)

    return call


def _any_count(tensor):
    """The spec of `tensor` with any size on its first axis (the K windows of a call)."""
    return tf.TensorSpec([None, *tensor.shape[1:]], tensor.dtype)


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
    return cost, new_state, gradients, regularizers.q_factor(last, first), d_kernels


def make_sampled_train_step(model, optimizer, config: Config, dropout, depth: int,
                            jit_compile: bool) -> TrainStep:
    """The train step with Chernodub & Nowicki's Algorithm 1: the clipped update is applied only when
    `regularizers.sampling_rule(Q, dS)` says so. dS = Σ ⟨∂S/∂W_rec, dW_rec⟩ with dW_rec = -lr × the
    clipped gradient (their Lemma 1, the plain SGD correction). The step's `counters` count the
    windows trained on and offered; it runs one window a call."""
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
        use = regularizers.sampling_rule(q, ds, config.q_min, config.q_max, None, config.sampling_convention)

        def apply():
            optimizer.apply_gradients(zip(clipped, variables))
            return tf.constant(1, tf.int64)

        used.assign_add(tf.cond(use, apply, lambda: tf.constant(0, tf.int64)))
        seen.assign_add(1)
        return cost, new_state, gradient_norm

    return TrainStep(tf.function(step, jit_compile=jit_compile, autograph=False), counters=(used, seen))


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
    if math.isinf(max_grad_norm):  # no clipping; a non-finite gradient still makes the step NaN
        factor = tf.constant(1.0)
    else:
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
