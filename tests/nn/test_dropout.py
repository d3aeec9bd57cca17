"""The random draws of the layers (nn/dropout.py): variational masks and per-element dropout (values
and statistics), h-detach coins, the window seeds they are keyed by, and the trainer's draws built
on them (`train.steps.sample_masks`, `train.steps.detach_steps`)."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.phases import DropoutPlan
from gradual_rnn.train import steps

# --- Variational masks. ---

STAT_BATCH, STAT_UNITS = 4000, 50  # 200,000 Bernoulli draws per mask
SIGMAS = 5


def _assert_mask_statistics(mask, keep):
    mask = np.asarray(mask)
    count = mask.size
    scaled_one = np.float32(1.0) / np.float32(keep)
    assert mask.dtype == np.float32
    assert set(np.unique(mask)) <= {np.float32(0.0), scaled_one}  # exactly 0 or 1/keep
    kept = np.count_nonzero(mask) / count
    assert abs(kept - keep) < SIGMAS * np.sqrt(keep * (1 - keep) / count)
    # Expectation preserved: E[mask] = 1.
    assert abs(mask.mean(dtype=np.float64) - 1.0) < SIGMAS * np.sqrt((1 - keep) / (keep * count))


def test_variational_masks_values_and_statistics():
    seed = tf.constant([1, 2], tf.int32)
    masks = dropout_lib.sample_variational_masks(seed, STAT_BATCH, STAT_UNITS, keep_output=(0.4, 0.25),
                                                 keep_state=(0.7, 0.5))
    assert len(masks) == 2
    for (output_mask, state_mask), keep_output, keep_state in zip(masks, (0.4, 0.25), (0.7, 0.5)):
        assert output_mask.shape == state_mask.shape == (STAT_BATCH, STAT_UNITS)
        _assert_mask_statistics(output_mask, keep_output)
        _assert_mask_statistics(state_mask, keep_state)


def test_variational_mask_statistics_can_fail():
    """Guards the tolerance: a mask of keep 0.41 fails the test for keep 0.4."""
    seed = tf.constant([1, 2], tf.int32)
    (mask, _), = dropout_lib.sample_variational_masks(seed, STAT_BATCH, STAT_UNITS, (0.41,), (1.0,))
    relabelled = (np.asarray(mask) != 0).astype(np.float32) / np.float32(0.4)
    with pytest.raises(AssertionError):
        _assert_mask_statistics(relabelled, 0.4)


def test_variational_masks_are_seeded_and_independent():
    def sample(seed):
        masks = dropout_lib.sample_variational_masks(tf.constant(seed, tf.int32), 20, 30, (0.5, 0.5),
                                                     (0.5, 0.5))
        return [np.asarray(mask) for pair in masks for mask in pair]

    first, again, other = sample([5, 6]), sample([5, 6]), sample([5, 7])
    for mask, same, different in zip(first, again, other):
        np.testing.assert_array_equal(mask, same)
        assert not np.array_equal(mask, different)
    # Output and state masks, and the masks of different layers, are different draws.
    for index, mask in enumerate(first):
        for later in first[index + 1:]:
            assert not np.array_equal(mask, later)


def test_variational_mask_of_keep_one_is_none():
    masks = dropout_lib.sample_variational_masks(tf.constant([1, 2]), 4, 3, (1.0, 0.5), (1.0, 1.0))
    assert masks[0] == (None, None)
    assert masks[1][0] is not None and masks[1][1] is None


def _variational_config(**changes):
    values = dict(name="tiny", num_layers=2, hidden_size=STAT_UNITS, num_steps=3, vocab_size=20,
                  dropout_style="variational", keep_output=((0.3,), (0.5, 0.25)),
                  keep_state=((0.3,), (0.5, 0.4)))
    values.update(changes)
    return configs.Config(**values)


def test_training_sample_masks():
    config = _variational_config()
    plan = DropoutPlan.for_depth(config, 2)
    masks = steps.sample_masks(config, plan, (1, 0, 0), STAT_BATCH)
    assert len(masks) == 2
    for (output_mask, state_mask), keep_output, keep_state in zip(masks, (0.5, 0.25), (0.5, 0.4)):
        _assert_mask_statistics(output_mask, keep_output)
        _assert_mask_statistics(state_mask, keep_state)
    again = steps.sample_masks(config, plan, (1, 0, 0), STAT_BATCH)
    next_epoch = steps.sample_masks(config, plan, (1, 1, 0), STAT_BATCH)
    other_seed = steps.sample_masks(_variational_config(seed=1), plan, (1, 0, 0), STAT_BATCH)
    for index in range(2):
        for kind in range(2):
            np.testing.assert_array_equal(masks[index][kind], again[index][kind])
            assert not np.array_equal(masks[index][kind], next_epoch[index][kind])
            assert not np.array_equal(masks[index][kind], other_seed[index][kind])


def test_training_sample_masks_per_phase_and_style():
    config = _variational_config()
    first_phase = steps.sample_masks(config, DropoutPlan.for_depth(config, 1), (0, 0, 0), 4)
    assert len(first_phase) == 1 and first_phase[0][0].shape == (4, STAT_UNITS)
    zaremba = configs.Config(name="tiny", num_layers=2, hidden_size=4, num_steps=3,
                             keep_output=((0.5,), (0.5, 0.5)))
    assert steps.sample_masks(zaremba, DropoutPlan.for_depth(zaremba, 2), (0, 0, 0), 4) is None


# --- Per-element (Zaremba) dropout. ---

def test_stateless_dropout_values_and_statistics():
    keep = 0.4
    inputs = tf.ones([400, 10, STAT_UNITS])  # 200,000 elements
    dropped = dropout_lib.stateless_dropout(inputs, keep, tf.constant([3, 4])).numpy()
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], 1 / keep, rtol=1e-6)
    assert abs(kept.mean() - keep) < SIGMAS * np.sqrt(keep * (1 - keep) / kept.size)
    assert abs(dropped.mean(dtype=np.float64) - 1.0) < SIGMAS * np.sqrt((1 - keep) / (keep * dropped.size))
    # Fresh per element: the pattern at step t and at step t+1 agree only as often as two independent
    # draws do, p^2 + (1-p)^2 (a variational mask would agree everywhere).
    agree = np.mean((dropped[:, 0] != 0) == (dropped[:, 1] != 0))
    chance = keep ** 2 + (1 - keep) ** 2
    count = dropped[:, 0].size
    assert abs(agree - chance) < SIGMAS * np.sqrt(chance * (1 - chance) / count)


def test_stateless_dropout_scales_values_and_is_seeded():
    inputs = tf.random.stateless_uniform([8, 5, 6], seed=[0, 1], minval=0.5, maxval=1.5)
    first = dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 1])).numpy()
    kept = first != 0
    np.testing.assert_allclose(first[kept], inputs.numpy()[kept] / 0.5, rtol=1e-6)
    np.testing.assert_array_equal(first, dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 1])))
    assert not np.array_equal(first, dropout_lib.stateless_dropout(inputs, 0.5, tf.constant([1, 2])))


def test_stateless_dropout_keep_one_is_identity():
    inputs = tf.ones([2, 3])
    assert dropout_lib.stateless_dropout(inputs, 1.0, tf.constant([1, 2])) is inputs



# --- h-detach coins (Kanuparthi et al. 2019). ---

def test_detach_coins_values_and_statistics():
    probability, steps_count = 0.25, 40_000
    coins = dropout_lib.detach_coins(probability, tf.constant([3, 4]), 3, steps_count)
    assert len(coins) == 3
    for layer_coins in coins:
        assert layer_coins.dtype == tf.bool and layer_coins.shape == (steps_count,)
        rate = np.mean(layer_coins.numpy())
        assert abs(rate - probability) < SIGMAS * np.sqrt(probability * (1 - probability) / steps_count)
    # Each layer has its own coins.
    assert not np.array_equal(coins[0].numpy(), coins[1].numpy())
    assert not np.array_equal(coins[1].numpy(), coins[2].numpy())
    assert not any(np.any(c.numpy()) for c in dropout_lib.detach_coins(0.0, tf.constant([3, 4]), 2, 50))


def test_detach_coins_are_seeded_and_nested_by_depth():
    def toss(seed, depth):
        return [c.numpy() for c in dropout_lib.detach_coins(0.5, tf.constant(seed), depth, 64)]

    first = toss([7, 8], 2)
    for mine, same in zip(first, toss([7, 8], 2), strict=True):
        np.testing.assert_array_equal(mine, same)
    for mine, other in zip(first, toss([7, 9], 2), strict=True):
        assert not np.array_equal(mine, other)
    # A deeper phase tosses the same coins for the layers it shares with a shallower one.
    for mine, deeper in zip(first, toss([7, 8], 3)[:2], strict=True):
        np.testing.assert_array_equal(mine, deeper)


def test_training_detach_steps():
    config = configs.Config(name="tiny", num_layers=2, hidden_size=4, num_steps=20, h_detach=0.25)
    seed = tf.constant([5, 6])
    coins = steps.detach_steps(config, seed, 2, 20)
    for mine, wanted in zip(coins, dropout_lib.detach_coins(0.25, seed, 2, 20), strict=True):
        assert 0 < np.count_nonzero(mine.numpy()) < 20
        np.testing.assert_array_equal(mine.numpy(), wanted.numpy())
    assert steps.detach_steps(dataclasses.replace(config, h_detach=0.0), seed, 2, 20) is None


# --- Window seeds. ---

def test_window_seed_is_a_function_of_the_seed_and_the_key():
    seed = dropout_lib.window_seed(5, (1, 2, 3))
    assert seed.dtype == tf.int32 and seed.shape == (2,)
    np.testing.assert_array_equal(seed, dropout_lib.window_seed(5, tf.constant([1, 2, 3], tf.int64)))
    np.testing.assert_array_equal(seed, dropout_lib.window_seed(5 + 2 ** 31, (1, 2, 3)))
    others = [dropout_lib.window_seed(6, (1, 2, 3))] + [
        dropout_lib.window_seed(5, key) for key in ((0, 2, 3), (1, 0, 3), (1, 2, 0), (3, 2, 1))]
    for other in others:
        assert not np.array_equal(seed, other)
    np.testing.assert_array_equal(dropout_lib.fold_seed(seed, 4),
                                  tf.random.experimental.stateless_fold_in(seed, 4))
