"""The learning-rate rules of both references."""
import pytest

from gradual_rnn import configs
from gradual_rnn.train import schedules


def test_tutorial_schedule_small_matches_zaremba():
    config = configs.get_config("small")
    rates = [schedules.tutorial_learning_rate(config, epoch) for epoch in range(13)]
    assert rates == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625,
                     0.0078125, 0.00390625, 0.001953125]


def test_tutorial_schedule_large_decays_by_1_15_after_14_epochs():
    config = configs.get_config("large")
    assert schedules.tutorial_learning_rate(config, 13) == 1.0
    assert schedules.tutorial_learning_rate(config, 14) == pytest.approx(1 / 1.15)
    assert schedules.tutorial_learning_rate(config, 54) == pytest.approx(1.15 ** -41)


def test_plateau_schedule_on_scripted_validation():
    """GL rule: before each epoch, x0.85 when history > 2 entries and the last one rose."""
    config = configs.get_config("gl")
    valid = [300.0, 200.0, 210.0, 190.0, 195.0, 196.0, 150.0]
    rate, history, rates = None, [], []
    for epoch in range(len(valid)):
        rate = schedules.learning_rate_for_epoch(config, epoch, rate, history)
        rates.append(rate)
        history.append(valid[epoch])
    # Epoch 3 sees [300, 200, 210]: rose -> decay. Epoch 5 sees ..., 190, 195: decay. Epoch 6: 196 > 195.
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.85, 0.85, 0.85 ** 2, 0.85 ** 3])
