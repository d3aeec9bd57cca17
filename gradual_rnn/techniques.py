"""The seed techniques, as pieces that plug into a `tf.GradientTape` train step.

* `clip_by_norm_rescale` — gradient-norm clipping, Pascanu, Mikolov & Bengio (2013), Algorithm 1:
  `if ||g|| >= threshold: g <- threshold / ||g|| * g`, the norm taken over all parameters.
* `srn_vanishing_gradient_regularizer` — Pascanu et al.'s Ω::

      Ω = Σ_k ( ||∂E/∂x_{k+1} · ∂x_{k+1}/∂x_k|| / ||∂E/∂x_{k+1}|| - 1 )²

  averaged, as their code does, over the (step, sequence) pairs whose ||∂E/∂x_{k+1}||² exceeds
  `bound` (1e-20). As in the paper and their code, ∂E/∂x_{k+1} and the activations are constants;
  only the explicit W_rec of the Jacobian is differentiated. (Their code compares squared norms:
  `squared=True`.) `vanishing_gradient_regularizer_from_step` is the same value for any unit (e.g.
  the LSTM of PTB) via a vector-Jacobian product; its gradient also flows through the activations.
* `l1_activation_penalty` — L1 penalty on hidden outputs, meant with rectifiers (Bengio et al. 2013,
  §3.4).
* `simplified_nesterov` — Bengio et al. (2013) §3.5, eq. (6)-(7) with constant μ:
  `v_t = μ v_{t-1} - ε ∇f(Θ_{t-1})`, `Θ_t = Θ_{t-1} + μ² v_{t-1} - (1 + μ) ε ∇f(Θ_{t-1})`.
  `keras.optimizers.SGD(momentum=μ, nesterov=True)` does `m <- μ m - ε g; θ += μ m - ε g`, which
  expands to exactly that update (tests/test_techniques.py checks it against a hand computation),
  so it is used as is. A momentum *schedule* μ_t would need μ_t μ_{t-1} and (1 + μ_t): not offered.
* `sample_detach_steps` — h-detach (Kanuparthi et al. 2019): which steps block h_{t-1} (see units).
* `q_factor`, `srn_ds`, `sampling_rule` — sampling-based gradient regularization (Chernodub &
  Nowicki 2016): Q = log10(||δ(k)|| / ||δ(k-h)||) (16), the Lemma-1 differential dS of
  S = ½||δ(k-h)||² along this minibatch's correction dW_rec, and the minibatch rule of their
  Algorithm 1.
"""
from typing import List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from gradual_rnn import configs


# --- Gradient-norm clipping (Pascanu et al., Algorithm 1) -------------------------------------------

def global_norm(gradients) -> tf.Tensor:
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients if g is not None]))


def clip_by_norm_rescale(gradients: Sequence[tf.Tensor], threshold: Optional[float]):
    """`(gradients rescaled to norm threshold when their global norm >= threshold, the norm)`.

    threshold None: no clipping (the norm is still returned).
    """
    norm = global_norm(gradients)
    if threshold is None:
        return list(gradients), norm
    scale = tf.where(norm >= threshold, threshold / norm, tf.ones_like(norm))
    return [None if g is None else g * scale for g in gradients], norm


def grouped_norms(gradients, groups: Sequence[Tuple[str, Sequence[int]]]):
    """`{name: norm of the gradients at those indices}`, e.g. one entry per layer for TensorBoard."""
    return {name: global_norm([gradients[i] for i in indices]) for name, indices in groups}


# --- The vanishing-gradient regularizer Ω (Pascanu et al.) ------------------------------------------

def _activation_derivative(preactivation, activation: str):
    if activation == "tanh":
        return 1.0 - tf.square(tf.tanh(preactivation))
    return tf.cast(preactivation > 0, preactivation.dtype)


def srn_backward(state_gradient, derivative, recurrent_kernel, leak=None):
    """`∂E/∂h_t · ∂h_t/∂h_{t-1}` for the SRN with f'(a_t) = derivative held fixed, `[batch, units]`."""
    if leak is None:
        return tf.matmul(state_gradient * derivative, recurrent_kernel, transpose_b=True)
    direct = tf.matmul(state_gradient * (1.0 - leak) * derivative, recurrent_kernel, transpose_b=True)
    return direct + leak * state_gradient


def _srn_derivatives(unit, projected, states):
    """f'(a_t) for t = 1..T as constants, from the projected inputs and the previous states."""
    kernel = tf.stop_gradient(tf.convert_to_tensor(unit.recurrent_kernel))
    return [_activation_derivative(tf.stop_gradient(projected[:, t] + tf.matmul(states[t], kernel)),
                                   unit.activation) for t in range(len(states) - 1)]


def _omega_from_ratios(back_norms, forward_norms, bound, squared):
    """Pascanu's averaging of (ratio - 1)² over the (step, sequence) pairs with ||δ||² >= bound."""
    total, count = 0.0, 0.0
    for back, forward in zip(back_norms, forward_norms):
        valid = forward >= bound
        ratio = back / tf.where(valid, forward, tf.ones_like(forward))
        if not squared:
            ratio = tf.sqrt(ratio)
        total += tf.reduce_sum(tf.where(valid, tf.square(ratio - 1.0), tf.zeros_like(ratio)))
        count += tf.reduce_sum(tf.cast(valid, ratio.dtype))
    return total / tf.maximum(count, 1.0)


def srn_vanishing_gradient_regularizer(unit, projected, states, state_gradients, bound: float = 1e-20,
                                       squared: bool = False):
    """Ω for a `units.SimpleRecurrent`, differentiable with respect to its recurrent kernel only.

    projected: the unit's `project(inputs)`, `[batch, T, units]`; states: the T + 1 states from
    `units.unroll`; state_gradients: ∂E/∂h_t for t = 1..T (total derivatives, from the tape).
    """
    derivatives = _srn_derivatives(unit, projected, [tf.stop_gradient(s) for s in states])
    leak = None if unit.leak is None else tf.convert_to_tensor(unit.leak)
    kernel = tf.convert_to_tensor(unit.recurrent_kernel)
    back_norms, forward_norms = [], []
    for gradient, derivative in zip(state_gradients, derivatives):
        gradient = tf.stop_gradient(tf.zeros_like(derivative) if gradient is None else gradient)
        back_norms.append(tf.reduce_sum(tf.square(srn_backward(gradient, derivative, kernel, leak)), -1))
        forward_norms.append(tf.reduce_sum(tf.square(gradient), -1))
    return _omega_from_ratios(back_norms, forward_norms, bound, squared)


def vanishing_gradient_regularizer_from_step(step_fn, previous_states, state_gradients,
                                             bound: float = 1e-20, squared: bool = False):
    """Ω for any unit: `step_fn(t, previous_state) -> h_t`; the Jacobian product is a VJP.

    previous_states: h_{t-1} (or (c, h)) for t = 1..T; state_gradients: ∂E/∂h_t. The value equals
    the SRN closed form; its gradient also flows through the activations (not the paper's constants).
    """
    back_norms, forward_norms = [], []
    for t, (previous, gradient) in enumerate(zip(previous_states, state_gradients)):
        previous = tf.nest.map_structure(tf.stop_gradient, previous)
        gradient = tf.stop_gradient(gradient)
        with tf.GradientTape() as tape:
            tape.watch(previous)
            hidden = step_fn(t, previous)
        back = tape.gradient(hidden, tf.nest.flatten(previous)[-1], output_gradients=gradient)
        back_norms.append(tf.reduce_sum(tf.square(back), -1))
        forward_norms.append(tf.reduce_sum(tf.square(gradient), -1))
    return _omega_from_ratios(back_norms, forward_norms, bound, squared)


# --- L1 on hidden outputs (Bengio et al. §3.4) -------------------------------------------------------

def l1_activation_penalty(outputs, weight: float):
    """`weight * Σ|h| / batch` over `<float>[batch, time, units]` (the cost's per-sequence scale)."""
    return weight * tf.reduce_sum(tf.abs(outputs)) / tf.cast(tf.shape(outputs)[0], outputs.dtype)


# --- Simplified Nesterov momentum (Bengio et al. §3.5) ----------------------------------------------

def simplified_nesterov(learning_rate: float, momentum: float) -> keras.optimizers.Optimizer:
    """Keras SGD with Nesterov momentum: exactly eq. (7) of Bengio et al. for a constant μ."""
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=True)


# --- h-detach (Kanuparthi et al. 2019) ---------------------------------------------------------------

def sample_detach_steps(seed, num_steps: int, probability: float):
    """`<bool>[num_steps]`: step t blocks the gradient of h_{t-1} with `probability` (one coin per
    step for the whole minibatch, as the authors' code). seed: `<int32>[2]` (stateless)."""
    return tf.random.stateless_uniform([num_steps], seed=seed) < probability


# --- Sampling-based gradient regularization (Chernodub & Nowicki 2016) ------------------------------

def q_factor(last_delta, first_delta):
    """Q = log10(||δ(k)|| / ||δ(k-h)||), the norms over the whole minibatch (eq. 16)."""
    ratio = tf.norm(last_delta) / tf.maximum(tf.norm(first_delta), 1e-30)
    return tf.math.log(ratio) / tf.math.log(10.0)


def srn_local_gradients(unit, projected, states, state_gradients) -> List[tf.Tensor]:
    """δ(t) = ∂E/∂a_t for t = 1..T: ∂E/∂h_t ⊙ (1 - α) ⊙ f'(a_t)."""
    derivatives = _srn_derivatives(unit, projected, states)
    leak = 1.0 if unit.leak is None else 1.0 - tf.convert_to_tensor(unit.leak)
    return [tf.zeros_like(d) if g is None else g * leak * d
            for g, d in zip(state_gradients, derivatives)]


def srn_ds(unit, projected, states, last_state_gradient, recurrent_update, horizon: int):
    """dS of Lemma 1: the change of S = ½||δ(k-h)||² along `recurrent_update` (dW_rec), first order.

    δ(k) = ∂E/∂a_k at the last step k = T, carried back `horizon` steps through W_rec with the
    activation derivatives held fixed (as in the Lemma); S is differentiated with respect to W_rec.
    """
    derivatives = _srn_derivatives(unit, projected, [tf.stop_gradient(s) for s in states])
    leak = None if unit.leak is None else tf.convert_to_tensor(unit.leak)
    kernel = tf.convert_to_tensor(unit.recurrent_kernel)
    with tf.GradientTape() as tape:
        tape.watch(kernel)
        gradient = tf.stop_gradient(last_state_gradient)
        last = len(derivatives) - 1
        for t in range(last, last - horizon, -1):
            gradient = srn_backward(gradient, derivatives[t], kernel, leak)
        first = derivatives[last - horizon] * (1.0 if leak is None else 1.0 - leak)
        half_square = 0.5 * tf.reduce_sum(tf.square(gradient * first))
    return tf.reduce_sum(tape.gradient(half_square, kernel) * recurrent_update)


SAMPLING_CONVENTIONS = configs.SAMPLING_CONVENTIONS


def sampling_rule(q, ds, q_min: float = -1.0, q_max: float = 1.0, max_abs_ds: Optional[float] = None,
                  convention: str = "text"):
    """Algorithm 1 of Chernodub & Nowicki: whether to train on this minibatch (a bool tensor).

    Skip when |dS| > max_abs_ds (their "skip minibatches with large |dS|"; None: never). Otherwise
    use it when Q is in the safe range [q_min, q_max], or when it moves the norm back towards it.
    The paper is not self-consistent here. With Q = log10(||δ(k)|| / ||δ(k-h)||) (eq. 16), Q > q_max
    means vanishing gradients, and its text says to then keep only batches that *increase* ||δ(k-h)||
    (dS > 0):
      * convention 'text' (default): use if (Q > q_max and dS > 0) or (Q < q_min and dS < 0);
      * convention 'printed': Algorithm 1 as printed, use if (Q < q_min and dS > 0) or
        (Q > q_max and dS < 0) — the same rule if Q were defined the other way up.
    """
    if convention not in SAMPLING_CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not one of {SAMPLING_CONVENTIONS}.")
    grow_below = convention == "printed"  # printed: below the range, grow ||δ(k-h)||
    below = tf.logical_and(q < q_min, ds > 0 if grow_below else ds < 0)
    above = tf.logical_and(q > q_max, ds < 0 if grow_below else ds > 0)
    use = tf.logical_or(tf.logical_and(q >= q_min, q <= q_max), tf.logical_or(below, above))
    if max_abs_ds is not None:
        use = tf.logical_and(use, tf.abs(ds) <= max_abs_ds)
    return use
