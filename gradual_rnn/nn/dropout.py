"""Every random draw of the layers: stateless functions of an explicit seed.

Nothing here keeps a random state: each draw is a stateless function of a seed, which the trainer
derives from the run's seed and the key (phase, epoch, window) of the window it serves, so a resumed
run sees exactly the noise an uninterrupted one would, and a checkpoint needs no RNG state.

* per-element dropout (Zaremba et al. 2014): fresh for every element and step;
* variational masks (Gal & Ghahramani; the GL code): one `bernoulli(keep) / keep` mask per layer
  and sequence, for the layer's output and for its recurrent state, refreshed per epoch or window;
* h-detach coins (Kanuparthi et al. 2019): per layer and step, whether h_{t-1} passes no gradient.
"""
from typing import Sequence

import tensorflow as tf


def window_seed(base_seed: int, key):
    """A stateless seed `<int32>[2]` for one window from `key` = (phase, epoch, window).

    Seeds are derived, not drawn, so a resumed run sees exactly the noise an uninterrupted one would.
    """
    seed = tf.stack([tf.constant(base_seed % (2 ** 31), tf.int32), tf.constant(0, tf.int32)])
    for index in range(3):
        seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(key[index], tf.int32))
    return seed


def fold_seed(seed, index):
    return tf.random.experimental.stateless_fold_in(seed, index)


def sample_variational_masks(seed, batch_size: int, units: int,
                             keep_output: Sequence[float], keep_state: Sequence[float]):
    """Samples the GL code's per-layer masks: `bernoulli(keep) / keep`, `<float32>[batch, units]`.

    seed: `<int>[2]`, for stateless sampling (reproducible, and what a checkpoint's RNG state
    restores). Returns one `(output_mask, state_mask)` pair per layer; a mask whose keep is 1.0 is
    None (no masking, so that layer may take the cuDNN-eligible path).
    """
    masks = []
    for layer, (keep_out, keep_st) in enumerate(zip(keep_output, keep_state)):
        pair = []
        for kind, keep in enumerate((keep_out, keep_st)):
            if keep >= 1.0:
                pair.append(None)
                continue
            layer_seed = tf.random.experimental.stateless_fold_in(seed, 2 * layer + kind)
            pair.append(variational_mask(layer_seed, [batch_size, units], keep))
        masks.append(tuple(pair))
    return masks


def variational_mask(seed, shape, keep: float):
    """One stream's mask, `bernoulli(keep) / keep` as `<float32>shape`, a stateless function of
    `seed` `<int>[2]` (Gal & Ghahramani: drawn once per sequence, applied at every step)."""
    uniform = tf.random.stateless_uniform(shape, seed=seed)
    return tf.cast(uniform < keep, tf.float32) / keep


def stateless_seed(seed):
    """A stateless seed `<int>[2]` from an int (`[seed, 0]`) or from a seed tensor (unchanged)."""
    if isinstance(seed, int):
        return tf.constant([seed % (2 ** 31), 0], tf.int32)
    return tf.convert_to_tensor(seed)


def stateless_dropout(inputs, keep: float, seed):
    """Per-element dropout (fresh for every element and step), seeded: `x * bernoulli(keep) / keep`."""
    if keep >= 1.0:
        return inputs
    return tf.nn.experimental.stateless_dropout(inputs, rate=1.0 - keep, seed=seed)


def detach_coins(probability: float, seed, depth: int, num_steps: int):
    """h-detach coins, one `<bool>[num_steps]` per layer 1..depth, each true with `probability`."""
    return [tf.random.stateless_uniform([num_steps], seed=tf.random.experimental.stateless_fold_in(
        seed, 1000 + layer)) < probability for layer in range(depth)]
