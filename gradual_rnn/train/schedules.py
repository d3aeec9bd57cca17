"""The learning-rate rules of both references (TensorFlow-free)."""
from typing import Optional, Sequence

from gradual_rnn.configs import Config


def tutorial_learning_rate(config: Config, epoch: int) -> float:
    """Zaremba's schedule: full rate for `full_lr_epochs` epochs, then x decay per epoch (0-based)."""
    return config.learning_rate * config.learning_rate_decay ** max(epoch + 1 - config.full_lr_epochs, 0)


def plateau_learning_rate(config: Config, current: float, valid_history: Sequence[float]) -> float:
    """The GL code's rule, applied before each epoch: decay when validation rose (history > 2)."""
    if len(valid_history) > 2 and valid_history[-1] > valid_history[-2]:
        return current * config.learning_rate_decay
    return current


def learning_rate_for_epoch(config: Config, epoch: int, current: Optional[float],
                            valid_history: Sequence[float]) -> float:
    """The learning rate of `epoch` (0-based, within a phase); `current` is None at a phase start."""
    if config.learning_rate_schedule == "tutorial":
        return tutorial_learning_rate(config, epoch)
    if current is None:
        return config.learning_rate
    return plateau_learning_rate(config, current, valid_history)
