"""Data-parallel training on tf.distribute with stateful truncated backpropagation through time.

Each replica owns a fixed, contiguous block of the B batch streams (replica r: rows
`r*B/R .. (r+1)*B/R - 1`) and keeps their LSTM state and their rows of the variational masks from
window to window. The step keeps the references' window cost on any number of replicas:

    cost     = sum over all B streams and time of cross-entropy / B    (B: the global batch)
    gradient = all-reduce SUM of each replica's gradient of its share   (= the one-device gradient)
    clipping by the global norm of that summed gradient, then the optimizer update.

Keras's optimizer sums gradients across replicas inside `apply_gradients`; since they are already
summed and clipped here, each replica hands it `clipped / R`, which sums back to `clipped` (exactly
so when R is a power of two).

Per-element (Zaremba and embedding) dropout draws its noise per replica, so with per-element dropout
a distributed run is a different, equally valid sample than a one-device run; variational masks are
sliced from the global masks and match one device exactly.
"""
import json
import os
from typing import Optional

import tensorflow as tf

from gradual_rnn.configs import Config, ConfigError
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.train import steps


def make_strategy(num_gpus: int = 0, devices: Optional[list] = None,
                  timeout_seconds: Optional[float] = None) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several workers, MirroredStrategy over
    `devices` or `num_gpus` GPUs (> 1), otherwise the default (one-device) strategy.

    timeout_seconds: with several workers, a collective (all-reduce, gather) that waits longer than
    this, e.g. for a worker that died, fails with DeadlineExceeded instead of blocking for ever."""
    if _worker_count() > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if devices:
        return tf.distribute.MirroredStrategy(devices)
    if num_gpus > 1:
        return tf.distribute.MirroredStrategy([f"/gpu:{index}" for index in range(num_gpus)])
    return tf.distribute.get_strategy()


def _worker_count() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def split_rows(strategy: tf.distribute.Strategy, array):
    """Distributes `[B, ...]` so replica r gets its fixed block of B/R rows."""
    replicas = strategy.num_replicas_in_sync
    if array.shape[0] % replicas:
        raise ValueError(f"The batch of {array.shape[0]} streams does not split evenly over "
                         f"{replicas} replicas; choose batch_size as a multiple of {replicas}.")
    rows = array.shape[0] // replicas

    def block(context):
        start = context.replica_id_in_sync_group * rows
        return tf.convert_to_tensor(array[start:start + rows])

    return strategy.experimental_distribute_values_from_function(block)


def split_nested(strategy, structure):
    """`split_rows` over every array of a nested structure (None entries stay None)."""
    return tf.nest.map_structure(lambda array: None if array is None else split_rows(strategy, array),
                                 structure)


def make_distributed_train_step(strategy: tf.distribute.Strategy, model, optimizer, config: Config,
                                plan, depth: int) -> steps.TrainStep:
    """A `TrainStep` whose `one(inputs, targets, state, key, masks)` takes the whole window's
    inputs and targets (split here, see `split_rows`) and per-replica state and masks; the cost is
    the references' global window cost, the returned state stays per replica. One window a call."""
    if config.sampling:
        raise ConfigError("sampling (Chernodub & Nowicki's minibatch rule) runs on one device only.")
    variables = model.trainable_variables
    with strategy.scope():
        optimizer.build(variables)
    dropout = None if plan.is_identity else plan
    global_batch = config.batch_size
    replicas = strategy.num_replicas_in_sync

    def replica_step(inputs, targets, state, key, masks):
        context = tf.distribute.get_replica_context()
        seed = tf.random.experimental.stateless_fold_in(dropout_lib.window_seed(config.seed, key),
                                                        context.replica_id_in_sync_group)
        scale = steps.loss_scale(optimizer)
        cost, new_state, gradients = steps.window_gradients(
            model, variables, config, dropout, depth, seed, (inputs, targets, state, masks), global_batch,
            scale)
        gradients = [tf.convert_to_tensor(g) for g in gradients]
        gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        clipped, gradient_norm = steps.clip_gradients(gradients, config.max_grad_norm, scale)
        optimizer.apply_gradients(zip([g / replicas for g in clipped], variables))
        return cost, new_state, gradient_norm

    @tf.function(autograph=False)
    def step(inputs, targets, state, key, masks):
        cost, state, norm = strategy.run(replica_step, args=(inputs, targets, state, key, masks))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, cost, axis=None)
        return total, state, strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None)

    def global_step(inputs, targets, state, key, masks):
        return step(split_rows(strategy, inputs), split_rows(strategy, targets), state, key, masks)

    return steps.TrainStep(global_step)


def agree_on_minimum(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest `value` any replica (on any worker) passes in; a collective, so every worker
    must call it. tf.distribute has no MIN reduction, so the values are gathered."""
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    return int(tf.reduce_min(strategy.gather(per_replica, axis=0)))
