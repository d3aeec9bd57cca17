"""Any task × unit × technique on the synthetic long-term benchmarks: the model, its train step, its
evaluation and the run loop. The command line is `gradual_rnn.cli.synthetic`.

One compiled train step per run from `make_sequence_train_step` (the shape of the PTB trainer's
`train.steps.make_train_step`): forward and cost on a tape; gradients of the cost with respect to
the variables and to every hidden state; Ω's gradient added to W_rec's; clipping (the PTB trainer's
`train.steps.clip_gradients`); the sampling rule; the optimizer step.
Judged as the papers do (see `tasks.TaskSpec`): the test error of the best-on-validation network,
success when it is below 1% (Pascanu et al.), accuracy = 1 - error (Chernodub & Nowicki; copying:
the digits recalled, Kanuparthi et al.).

A run whose gradient norm turns non-finite, or whose loss, as a perplexity, is not finite or above a
hundred times a uniform guess's (the package's one rule, `gradual_rnn.train.progress.diverged`), has
diverged: it stops at that step, and its result says so (`diverged: true`, `diverged_at_step`) with null errors and accuracy. Results are
written as strict JSON (`to_json`): no NaN or Infinity ever reaches the output.
"""
import json
import math
import time
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn.synthetic import tasks as task_lib
from gradual_rnn.synthetic import techniques
from gradual_rnn.synthetic import units as unit_lib
from gradual_rnn.synthetic.config import SyntheticConfig
from gradual_rnn.train import regularizers
from gradual_rnn.train import steps
from gradual_rnn.train.progress import DIVERGENCE_FACTOR


def build_unit(config: SyntheticConfig, index: int):
    seed = config.seed * 1000 + index
    if config.unit == "lstm":
        return unit_lib.LSTMUnit(config.hidden_size, config.init_scale, seed=seed, name=f"unit_{index + 1}")
    return unit_lib.SimpleRecurrent(
        config.hidden_size, "relu" if config.unit == "relu" else "tanh", config.initialization,
        config.init_scale, leak_range=config.leak_range if config.unit == "leaky" else None, seed=seed,
        name=f"unit_{index + 1}")


class SequenceModel(keras.Model):
    """call(inputs `<float>[batch, time, input]`, detach `<bool>[layers, time]` or None) ->
    (predictions `[batch, outputs]` or `[batch, time, outputs]`, trace).

    trace: per layer `(projected, states, outputs)` from `units.unroll`, for Ω, Q and L1.
    """

    def __init__(self, config: SyntheticConfig, task: task_lib.TaskSpec, **kwargs):
        super().__init__(**kwargs)
        self.recurrent = [build_unit(config, index) for index in range(config.num_layers)]
        self.every_step = task.output == "sequence_softmax"
        initializer = keras.initializers.RandomNormal(0.0, config.init_scale, seed=config.seed)
        self.readout = keras.layers.Dense(task.output_size, kernel_initializer=initializer, name="readout")
        input_size = task.input_size
        for unit in self.recurrent:
            unit.build((None, None, input_size))
            input_size = config.hidden_size
        self.readout.build((None, config.hidden_size))

    def call(self, inputs, detach=None):
        trace = []
        outputs = inputs
        for index, unit in enumerate(self.recurrent):
            projected = unit.project(outputs)
            outputs, states = unit_lib.unroll(unit, outputs, None if detach is None else detach[index])
            trace.append((projected, states, outputs))
        readout_input = outputs if self.every_step else outputs[:, -1]
        return self.readout(readout_input), trace

    def variable_groups(self) -> List[Tuple[str, List[int]]]:
        """`(layer name, indices into trainable_variables)` for per-layer gradient norms."""
        position = {id(v): i for i, v in enumerate(self.trainable_variables)}
        return [(layer.name, [position[id(v)] for v in layer.trainable_variables])
                for layer in self.recurrent + [self.readout]]


def task_cost(task: task_lib.TaskSpec, predictions, targets):
    """Pascanu's costs: mean squared error, or mean cross-entropy (per sequence, per step)."""
    if task.output == "last_linear":
        return tf.reduce_mean(tf.reduce_sum(tf.square(predictions - targets), -1))
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=predictions))


def error_rate(task: task_lib.TaskSpec, predictions: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of wrong test samples: squared error > 0.04, wrong class, or (copying) wrong digit.

    A prediction with a non-finite entry is wrong (NaN compares false and would otherwise pass).
    """
    finite = np.all(np.isfinite(predictions), axis=-1)
    if task.output == "last_linear":
        return float(np.mean((np.sum((predictions - targets) ** 2, -1) > task.wrong_threshold) | ~finite))
    if task.output == "last_softmax":
        return float(np.mean((np.argmax(predictions, -1) != targets) | ~finite))
    digits = task_lib.COPY_DIGITS
    wrong = np.argmax(predictions[:, -digits:], -1) != targets[:, -digits:]
    return float(np.mean(wrong | ~finite[:, -digits:]))


def make_sequence_optimizer(config: SyntheticConfig) -> keras.optimizers.Optimizer:
    """Plain SGD, SGD with momentum, simplified Nesterov momentum (Bengio et al.) or Adam."""
    if config.optimizer == "nesterov":
        return techniques.simplified_nesterov(config.learning_rate, config.momentum)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    return keras.optimizers.SGD(config.learning_rate)


def make_sequence_train_step(model: SequenceModel, optimizer: keras.optimizers.Optimizer,
                             task: task_lib.TaskSpec, config: SyntheticConfig):
    """A compiled `step(inputs, targets, seed) -> metrics` (a dict of scalars).

    seed: `<int32>[2]`, for the h-detach coins. The metrics hold 'loss', 'gradient_norm' (before
    clipping), one 'gradient_norm/<layer>' per layer, and for SRNs 'q_factor', 'omega' and 'used'
    (1 when the sampling rule kept the minibatch), and with sampling 'ds'.
    """
    variables = model.trainable_variables
    optimizer.build(variables)
    groups = model.variable_groups()
    first = model.recurrent[0]
    recurrent_index = _index_of(variables, first.recurrent_kernel) if config.is_srn else None
    horizon = config.horizon if config.horizon is not None else config.time_steps - 1
    max_norm = math.inf if config.clip is None else config.clip

    def step(inputs, targets, seed):
        detach = _detach_steps(config, seed, inputs.shape[1])
        loss, trace, gradients, hidden_gradients = _gradients(model, task, config, inputs, targets, detach)
        projected, states, _ = trace[0]
        metrics = {"loss": loss}
        if config.is_srn:
            gradients = _add_omega(gradients, recurrent_index, first, projected, states, hidden_gradients,
                                   config, metrics)
            local = techniques.srn_local_gradients(first, projected, states, hidden_gradients)
            metrics["q_factor"] = regularizers.q_factor(local[-1], local[-1 - horizon])
        clipped, metrics["gradient_norm"] = steps.clip_gradients(gradients, max_norm)
        for name, value in techniques.grouped_norms(gradients, groups).items():
            metrics[f"gradient_norm/{name}"] = value
        use = tf.constant(True)
        if config.sampling:
            update = -config.learning_rate * clipped[recurrent_index]
            metrics["ds"] = techniques.srn_ds(first, projected, states, hidden_gradients[-1], update, horizon)
            use = regularizers.sampling_rule(metrics["q_factor"], metrics["ds"], config.q_min, config.q_max,
                                             config.max_abs_ds, config.sampling_convention)
        tf.cond(use, lambda: _apply(optimizer, clipped, variables), lambda: tf.no_op())
        metrics["used"] = tf.cast(use, tf.float32)
        return metrics

    return tf.function(step, autograph=False)


def _index_of(variables, variable) -> int:
    return next(index for index, candidate in enumerate(variables) if candidate is variable)


def _detach_steps(config: SyntheticConfig, seed, num_steps: int):
    """h-detach's coins, `<bool>[layers, time]` (one seed per layer), or None when it is off."""
    if config.h_detach <= 0:
        return None
    return tf.stack([techniques.sample_detach_steps(tf.random.experimental.stateless_fold_in(seed, layer),
                                                    num_steps, config.h_detach)
                     for layer in range(config.num_layers)])


def _gradients(model: SequenceModel, task, config: SyntheticConfig, inputs, targets, detach):
    """(loss, trace, gradients of the cost (+ L1) for the variables, ∂cost/∂h_t of the first layer
    for t = 1..T (SRNs only; empty for the LSTM))."""
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        predictions, trace = model(inputs, detach=detach)
        loss = task_cost(task, predictions, targets)
        cost = loss
        if config.l1:
            cost += sum(techniques.l1_activation_penalty(layer[2], config.l1) for layer in trace)
    first = model.recurrent[0]
    hidden = [first.output(state) for state in trace[0][1][1:]] if config.is_srn else []
    everything = tape.gradient(cost, variables + hidden)
    return loss, trace, everything[:len(variables)], everything[len(variables):]


def _apply(optimizer, gradients, variables):
    optimizer.apply_gradients(zip(gradients, variables))
    return tf.no_op()


def _add_omega(gradients, index, unit, projected, states, hidden_gradients, config, metrics):
    """Adds `omega * ∂Ω/∂W_rec` to W_rec's gradient (Pascanu et al.), records Ω."""
    with tf.GradientTape() as tape:
        omega = techniques.srn_vanishing_gradient_regularizer(unit, projected, states, hidden_gradients,
                                                              squared=config.omega_squared)
    metrics["omega"] = omega
    if not config.omega:
        return gradients
    gradients = list(gradients)
    gradients[index] = gradients[index] + config.omega * tape.gradient(omega, unit.recurrent_kernel)
    return gradients


def make_predict(model: SequenceModel):
    return tf.function(lambda inputs: model(inputs)[0], autograph=False)


def evaluate(predict, task, inputs: np.ndarray, targets: np.ndarray, chunk: int = 1000) -> float:
    predictions = np.concatenate([predict(tf.constant(inputs[i:i + chunk])).numpy()
                                  for i in range(0, len(inputs), chunk)])
    return error_rate(task, predictions, targets)


class _Judge:
    """The fixed validation and test sets of a run, and the best-on-validation record."""

    def __init__(self, config: SyntheticConfig, task, predict):
        self.task, self.predict = task, predict
        self.valid = task_lib.fixed_set(task, config.length, config.valid_size, config.seed + 10_000)
        self.test = task_lib.fixed_set(task, config.length, config.test_size, config.seed + 20_000)
        self.best = {"valid_error": 1.0, "test_error": None, "step": 0}

    def validate(self, step: int) -> float:
        """Validation error now; the test error too when the validation error is the best so far."""
        valid_error = evaluate(self.predict, self.task, *self.valid)
        if valid_error < self.best["valid_error"] or self.best["test_error"] is None:
            test_error = evaluate(self.predict, self.task, *self.test)
            self.best = {"valid_error": valid_error, "test_error": test_error, "step": step}
        return valid_error


def uniform_guess_loss(task) -> float:
    """The loss of a guess that knows nothing: log(classes) for a softmax output; for the squared
    error of 'last_linear' tasks, the error of predicting 0 for targets in [0, 1] at most (1)."""
    return math.log(task.output_size) if task.output != "last_linear" else 1.0


def has_diverged(metrics, task) -> bool:
    """The package's divergence rule (`gradual_rnn.train.progress.diverged`): the loss, as a
    perplexity exp(loss), is not finite or above a hundred times that of a uniform guess; or the
    gradient norm is not finite."""
    if not math.isfinite(float(metrics["gradient_norm"])):
        return True
    loss, baseline = float(metrics["loss"]), uniform_guess_loss(task)
    if not math.isfinite(loss):
        return True
    return loss - baseline > math.log(DIVERGENCE_FACTOR)


def _train(config: SyntheticConfig, task, train_step, judge: _Judge) -> Dict:
    """The update loop: validation every `eval_every` updates and at the end; stops when solved
    (with `stop_when_solved`) or diverged. Returns the steps done, the fraction used, and where it
    diverged (None)."""
    stream = task_lib.dataset(task, config.length, config.batch_size, config.seed, config.steps)
    used, step = 0.0, 0
    for step, (inputs, targets) in enumerate(stream, start=1):
        metrics = train_step(inputs, targets, tf.constant([config.seed, step], tf.int32))
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=step)
        if has_diverged(metrics, task):
            logging.warning("step %d: loss %s, gradient norm %s: diverged, stopping.", step,
                            float(metrics["loss"]), float(metrics["gradient_norm"]))
            return {"steps": step, "used": used, "diverged_at_step": step}
        used += float(metrics["used"])
        if step % config.eval_every and step != config.steps:
            continue
        valid_error = judge.validate(step)
        tf.summary.scalar("valid/error", valid_error, step=step)
        logging.info("step %d: loss %.4f, gradient norm %.3g, valid error %.4f", step,
                     float(metrics["loss"]), float(metrics["gradient_norm"]), valid_error)
        if config.stop_when_solved and valid_error < task.success_error:
            break
    return {"steps": step, "used": used, "diverged_at_step": None}


def run(config: SyntheticConfig, logdir: Optional[str] = None) -> Dict:
    """Trains one network; returns the test error at the best validation error, and more.

    Keys: valid_error, test_error, step (of the best validation), accuracy, success, steps,
    used_fraction, seconds, seed, diverged, diverged_at_step. A diverged run has null
    valid_error, test_error, step and accuracy, and success False.
    """
    task = task_lib.get_task(config.task)
    keras.utils.set_random_seed(config.seed)
    model = SequenceModel(config, task)
    train_step = make_sequence_train_step(model, make_sequence_optimizer(config), task, config)
    judge = _Judge(config, task, make_predict(model))
    writer = tf.summary.create_file_writer(logdir) if logdir else tf.summary.create_noop_writer()
    start = time.time()
    with writer.as_default():
        progress = _train(config, task, train_step, judge)
    diverged = progress["diverged_at_step"] is not None
    best = {"valid_error": None, "test_error": None, "step": None} if diverged else judge.best
    accuracy = None if best["test_error"] is None else 1.0 - best["test_error"]
    success = accuracy is not None and best["test_error"] < task.success_error
    return dict(best, accuracy=accuracy, success=success, steps=progress["steps"],
                used_fraction=progress["used"] / progress["steps"], seconds=time.time() - start,
                seed=config.seed, diverged=diverged, diverged_at_step=progress["diverged_at_step"])


def summarize(results: Sequence[Dict]) -> Dict:
    """Success rate (Pascanu) over every seed; best and mean accuracy (Chernodub) over the seeds
    that did not diverge (None when all did); how many diverged."""
    accuracies = [r["accuracy"] for r in results if r["accuracy"] is not None]
    return {"seeds": len(results), "success_rate": float(np.mean([r["success"] for r in results])),
            "best_accuracy": float(np.max(accuracies)) if accuracies else None,
            "mean_accuracy": float(np.mean(accuracies)) if accuracies else None,
            "mean_steps": float(np.mean([r["steps"] for r in results])),
            "diverged": sum(bool(r["diverged"]) for r in results)}


def _finite_or_none(value):
    """`value` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def to_json(record) -> str:
    """One line of strict JSON (`json.loads` parses it with its defaults): non-finite floats are null."""
    return json.dumps(_finite_or_none(record), allow_nan=False)
