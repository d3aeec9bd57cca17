"""Helper run by test_distribute.py in its own process: two logical CPUs must be set up before
TensorFlow starts. For each style named on the command line, prints a JSON line comparing one
window on two replicas with one device."""
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from gradual_rnn import configs
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import distribute
from gradual_rnn.train import steps
from gradual_rnn.train.models import build_model


def main(style):
    keep = 1.0 if style == "none" else 0.7
    config = configs.Config(name="dist", num_layers=2, hidden_size=8, num_steps=5, batch_size=4,
                            vocab_size=30, max_grad_norm=0.5, seed=3, tied_weights=True, embedding_bias=True,
                            dropout_style="variational", keep_prob_embed=1.0,
                            keep_output=configs.uniform_table(2, keep), keep_state=configs.uniform_table(2, keep))
    plan = DropoutPlan.for_depth(config, 2)
    rng = np.random.RandomState(0)
    inputs = rng.randint(0, 30, size=(4, 5)).astype(np.int32)
    targets = rng.randint(0, 30, size=(4, 5)).astype(np.int32)
    state = tuple((rng.randn(4, 8).astype(np.float32), rng.randn(4, 8).astype(np.float32)) for _ in range(2))
    key = tf.constant([1, 0, 0], tf.int64)
    masks = steps.sample_masks(config, plan, (1, 0, 0), 4)
    np_masks = None if masks is None else [tuple(None if m is None else m.numpy() for m in pair) for pair in masks]

    single = build_model(config)
    single_optimizer = keras.optimizers.SGD(learning_rate=1.0)
    step = steps.make_train_step(single, single_optimizer, config, plan, 2)
    cost, new_state, norm = step.one(tf.constant(inputs), tf.constant(targets),
                                     tf.nest.map_structure(tf.constant, state), key, masks)

    strategy = distribute.make_strategy(devices=["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build_model(config)
        optimizer = keras.optimizers.SGD(learning_rate=1.0)
    dist_step = distribute.make_distributed_train_step(strategy, mirrored, optimizer, config, plan, 2)
    dist_cost, dist_state, dist_norm = dist_step.one(
        inputs, targets, distribute.split_nested(strategy, state), key,
        distribute.split_nested(strategy, np_masks))
    weight_difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                            for a, b in zip(single.weights, mirrored.weights))
    changed = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                  for a, b in zip(single.weights, build_model(config).weights))
    replica_h = [strategy.experimental_local_results(dist_state[1][1])[r].numpy() for r in range(2)]
    state_difference = float(np.max(np.abs(np.concatenate(replica_h) - new_state[1][1].numpy())))
    print(json.dumps(dict(style=style, replicas=strategy.num_replicas_in_sync, cost=float(cost), dist_cost=float(dist_cost),
                          norm=float(norm), dist_norm=float(dist_norm), weight_difference=weight_difference,
                          update_size=changed, state_difference=state_difference)))


if __name__ == "__main__":
    for name in sys.argv[1:]:  # one process for every style: TensorFlow starts once
        main(name)
