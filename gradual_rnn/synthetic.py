"""Any task × unit × technique on the synthetic long-term benchmarks, and its command line.

    python -m gradual_rnn.synthetic --task=temporal_order --length=50 --unit=srn --clip=1 --omega=2
    python -m gradual_rnn.synthetic --task=adding --length=100 --sampling --seeds=0,1,2
    python -m gradual_rnn.synthetic --task=copying --length=100 --unit=lstm --h_detach=0.25

One compiled train step per run from `make_train_step` (the shape of `training.make_train_step`):
forward and cost on a tape; gradients of the cost with respect to the variables and to every hidden
state; Ω's gradient added to W_rec's; clipping; the sampling rule; the optimizer step.
Judged as the papers do (see `tasks.TaskSpec`): the test error of the best-on-validation network,
success when it is below 1% (Pascanu et al.), accuracy = 1 - error (Chernodub & Nowicki; copying:
the digits recalled, Kanuparthi et al.).
"""
import argparse
import dataclasses
import json
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn import tasks as task_lib
from gradual_rnn import techniques
from gradual_rnn import units as unit_lib

UNITS = ("srn", "relu", "leaky", "lstm")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Everything that decides a synthetic run's numbers."""

    task: str = "temporal_order"
    length: int = 50
    unit: str = "srn"
    hidden_size: int = 50
    num_layers: int = 1
    initialization: str = "sparse_spectral"
    init_scale: float = 0.01
    leak_range: Tuple[float, float] = (0.02, 0.2)
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    clip: Optional[float] = None
    omega: float = 0.0
    omega_squared: bool = False
    l1: float = 0.0
    h_detach: float = 0.0
    sampling: bool = False
    q_min: float = -1.0
    q_max: float = 1.0
    max_abs_ds: Optional[float] = None
    sampling_convention: str = "text"
    horizon: Optional[int] = None
    batch_size: int = 20
    steps: int = 2000
    eval_every: int = 100
    valid_size: int = 1000
    test_size: int = 10000
    stop_when_solved: bool = True
    seed: int = 0

    @property
    def is_srn(self) -> bool:
        return self.unit != "lstm"


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
    """Fraction of wrong test samples: squared error > 0.04, wrong class, or (copying) wrong digit."""
    if task.output == "last_linear":
        return float(np.mean(np.sum((predictions - targets) ** 2, -1) > task.wrong_threshold))
    if task.output == "last_softmax":
        return float(np.mean(np.argmax(predictions, -1) != targets))
    digits = task_lib.COPY_DIGITS
    return float(np.mean(np.argmax(predictions[:, -digits:], -1) != targets[:, -digits:]))


def make_optimizer(config: SyntheticConfig) -> keras.optimizers.Optimizer:
    if config.optimizer == "nesterov":
        return techniques.simplified_nesterov(config.learning_rate, config.momentum)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(config.learning_rate, momentum=config.momentum)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(config.learning_rate)
    return keras.optimizers.SGD(config.learning_rate)


def make_train_step(model: SequenceModel, optimizer: keras.optimizers.Optimizer, task, config):
    """A compiled `step(inputs, targets, seed) -> metrics` (a dict of scalars).

    seed: `<int32>[2]`, for the h-detach coins. The metrics hold 'loss', 'gradient_norm' (before
    clipping), one 'gradient_norm/<layer>' per layer, and for SRNs 'q_factor', 'omega' and 'used'
    (1 when the sampling rule kept the minibatch).
    """
    variables = model.trainable_variables
    optimizer.build(variables)
    groups = model.variable_groups()
    first = model.recurrent[0]
    recurrent_index = next((i for i, v in enumerate(variables) if v is first.recurrent_kernel), None) \
        if config.is_srn else None
    horizon = config.horizon or (task_lib.sequence_length(task, config.length) - 1)

    def step(inputs, targets, seed):
        detach = None
        if config.h_detach > 0:
            detach = tf.stack([techniques.sample_detach_steps(
                tf.random.experimental.stateless_fold_in(seed, layer), inputs.shape[1], config.h_detach)
                for layer in range(config.num_layers)])
        with tf.GradientTape() as tape:
            predictions, trace = model(inputs, detach=detach)
            loss = task_cost(task, predictions, targets)
            cost = loss + sum(techniques.l1_activation_penalty(layer[2], config.l1) for layer in trace) \
                if config.l1 else loss
        projected, states, _ = trace[0]
        hidden = [first.output(state) for state in states[1:]] if config.is_srn else []
        everything = tape.gradient(cost, variables + hidden)
        gradients, hidden_gradients = everything[:len(variables)], everything[len(variables):]
        metrics = {"loss": loss}
        if config.is_srn:
            gradients = _add_omega(gradients, recurrent_index, first, projected, states, hidden_gradients,
                                   config, metrics)
            local = techniques.srn_local_gradients(first, projected, states, hidden_gradients)
            metrics["q_factor"] = techniques.q_factor(local[-1], local[-1 - horizon])
        clipped, norm = techniques.clip_by_norm_rescale(gradients, config.clip)
        metrics["gradient_norm"] = norm
        for name, value in techniques.grouped_norms(gradients, groups).items():
            metrics[f"gradient_norm/{name}"] = value
        use = tf.constant(True)
        if config.sampling:
            update = -config.learning_rate * clipped[recurrent_index]
            metrics["ds"] = techniques.srn_ds(first, projected, states, hidden_gradients[-1], update, horizon)
            use = techniques.sampling_rule(metrics["q_factor"], metrics["ds"], config.q_min, config.q_max,
                                           config.max_abs_ds, config.sampling_convention)
        tf.cond(use, lambda: _apply(optimizer, clipped, variables), lambda: tf.no_op())
        metrics["used"] = tf.cast(use, tf.float32)
        return metrics

    return tf.function(step)


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
    return tf.function(lambda inputs: model(inputs)[0])


def evaluate(predict, task, inputs: np.ndarray, targets: np.ndarray, chunk: int = 1000) -> float:
    predictions = np.concatenate([predict(tf.constant(inputs[i:i + chunk])).numpy()
                                  for i in range(0, len(inputs), chunk)])
    return error_rate(task, predictions, targets)


def run(config: SyntheticConfig, logdir: Optional[str] = None) -> Dict:
    """Trains one network; returns the test error at the best validation error, and more."""
    task = task_lib.get_task(config.task)
    keras.utils.set_random_seed(config.seed)
    model = SequenceModel(config, task)
    optimizer = make_optimizer(config)
    train_step, predict = make_train_step(model, optimizer, task, config), make_predict(model)
    valid = task_lib.fixed_set(task, config.length, config.valid_size, config.seed + 10_000)
    test = task_lib.fixed_set(task, config.length, config.test_size, config.seed + 20_000)
    writer = tf.summary.create_file_writer(logdir) if logdir else tf.summary.create_noop_writer()
    stream = task_lib.dataset(task, config.length, config.batch_size, config.seed, config.steps)
    best = {"valid_error": 1.0, "test_error": None, "step": 0}
    used, start = 0.0, time.time()
    with writer.as_default():
        for step, (inputs, targets) in enumerate(stream, start=1):
            metrics = train_step(inputs, targets, tf.constant([config.seed, step], tf.int32))
            used += float(metrics["used"])
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=step)
            if step % config.eval_every and step != config.steps:
                continue
            valid_error = evaluate(predict, task, *valid)
            tf.summary.scalar("valid/error", valid_error, step=step)
            logging.info("step %d: loss %.4f, gradient norm %.3g, valid error %.4f", step,
                         float(metrics["loss"]), float(metrics["gradient_norm"]), valid_error)
            if valid_error < best["valid_error"] or best["test_error"] is None:
                best = {"valid_error": valid_error, "test_error": evaluate(predict, task, *test), "step": step}
            if config.stop_when_solved and valid_error < task.success_error:
                break
    return dict(best, accuracy=1.0 - best["test_error"], success=best["test_error"] < task.success_error,
                steps=step, used_fraction=used / step, seconds=time.time() - start, seed=config.seed)


def summarize(results: Sequence[Dict]) -> Dict:
    """Success rate (Pascanu), best and mean accuracy (Chernodub) over seeds."""
    accuracies = [r["accuracy"] for r in results]
    return {"seeds": len(results), "success_rate": float(np.mean([r["success"] for r in results])),
            "best_accuracy": float(np.max(accuracies)), "mean_accuracy": float(np.mean(accuracies)),
            "mean_steps": float(np.mean([r["steps"] for r in results]))}


def parse_args(argv: Sequence[str]) -> Tuple[SyntheticConfig, List[int], Optional[str]]:
    parser = argparse.ArgumentParser(prog="python -m gradual_rnn.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(SyntheticConfig):
        if field.name in ("seed", "leak_range"):
            continue
        default = field.default
        if isinstance(default, bool):
            parser.add_argument(f"--{field.name}", action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = float if field.name in ("clip", "max_abs_ds") else (int if field.name == "horizon" else type(default))
            parser.add_argument(f"--{field.name}", type=kind, default=default)
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds; one run per seed.")
    parser.add_argument("--logdir", default=None, help="TensorBoard folder (one subfolder per seed).")
    args = vars(parser.parse_args(argv))
    seeds = [int(s) for s in args.pop("seeds").split(",")]
    logdir = args.pop("logdir")
    config = SyntheticConfig(**args)
    if config.task not in task_lib.TASKS or config.unit not in UNITS or config.optimizer not in OPTIMIZERS:
        parser.error(f"--task in {sorted(task_lib.TASKS)}, --unit in {UNITS}, --optimizer in {OPTIMIZERS}")
    if config.sampling and not config.is_srn or (config.omega and not config.is_srn):
        parser.error("--sampling and --omega are defined for the SRN units (srn, relu, leaky).")
    return config, seeds, logdir


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    config, seeds, logdir = parse_args(sys.argv[1:] if argv is None else argv)
    logging.set_verbosity(logging.INFO)
    results = []
    for seed in seeds:
        seed_logdir = f"{logdir}/seed_{seed}" if logdir else None
        result = run(dataclasses.replace(config, seed=seed), seed_logdir)
        logging.info("seed %d: %s", seed, json.dumps(result))
        results.append(result)
    summary = dict(summarize(results), config=dataclasses.asdict(config), runs=results)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
