"""Where a run stands, as a value: the `Progress` record that every checkpoint saves beside its
tensors (the JSON sidecar), so that the same command resumes a run to the bit. TensorFlow-free.

The loop never changes a record in place: each step of the run makes the next record
(`dataclasses.replace`), and what is saved is exactly the record of that moment.
"""
import dataclasses
import math
from typing import Dict, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the next window to train is, and everything the rules remember.

    phase: 1-based phase index; epoch: 0-based epoch within the phase; window: the next window of
    the epoch (0: the epoch has not started). model_depth: the depth of the model a checkpoint
    holds (0: no model yet). learning_rate: the current epoch's (None at a phase start).
    valid_history: the phase's validation perplexities; best: the best-validation record
    (`schedules.BestValidation` as a dict). rows: one dict per finished epoch (the rows of the run's results).
    """

    phase: int = 1
    epoch: int = 0
    window: int = 0
    model_depth: int = 0
    learning_rate: Optional[float] = None
    valid_history: Tuple[float, ...] = ()
    best: Dict = dataclasses.field(default_factory=dict)
    epoch_nll: float = 0.0  # training NLL summed over the windows of the epoch done so far
    epoch_tokens: float = 0.0
    epoch_seconds: float = 0.0  # seconds spent training this epoch, summed over sessions
    # Speed: windows timed from call to result, summed over sessions; each session's first call
    # (which compiles the step) is left out.
    epoch_timed_tokens: float = 0.0
    epoch_timed_seconds: float = 0.0
    windows_trained: int = 0  # every window of the run so far (TensorBoard's step)
    rows: Tuple[Dict, ...] = ()
    finished: bool = False
    final: Dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict:
        values = dataclasses.asdict(self)
        values.update(valid_history=list(self.valid_history), rows=[dict(row) for row in self.rows])
        return values

    @classmethod
    def from_dict(cls, values: Dict) -> "Progress":
        """The record of a sidecar's `progress` object; unknown keys are an error (TypeError)."""
        values = dict(values)
        values["valid_history"] = tuple(values.get("valid_history") or ())
        values["rows"] = tuple(values.get("rows") or ())
        return cls(**values)

    def train_perplexity(self) -> float:
        """The running training perplexity of the current epoch."""
        return perplexity(self.epoch_nll, self.epoch_tokens)

    def words_per_second(self) -> float:
        """Training speed of the epoch so far, from the timed windows of every session."""
        if self.epoch_timed_seconds > 0:
            return self.epoch_timed_tokens / self.epoch_timed_seconds
        return self.epoch_tokens / max(self.epoch_seconds, 1e-9)


# A perplexity this many times the vocabulary size (the perplexity of a uniform guess) is divergence.
DIVERGENCE_FACTOR = 100.0


def diverged(value: float, vocab_size: int) -> bool:
    """Whether a perplexity means the run diverged: not finite, or above `DIVERGENCE_FACTOR` times
    the vocabulary size. A trained model is far below a uniform guess (its perplexity is the
    vocabulary size); a fresh one is near it, and early windows at a learning rate of 1 go up to a
    few times it, never near a hundred times."""
    return not math.isfinite(value) or value > DIVERGENCE_FACTOR * vocab_size


def divergence_rule(vocab_size: int) -> str:
    """The rule `diverged` applies, in words."""
    return (f"a run is stopped as diverged when a perplexity is not finite or above "
            f"{DIVERGENCE_FACTOR:g} x the vocabulary size, {DIVERGENCE_FACTOR * vocab_size:g}")


def perplexity(nll_sum: float, token_count: float) -> float:
    """`exp(nll_sum / token_count)`, infinite rather than an error when it overflows."""
    try:
        return math.exp(nll_sum / token_count)
    except OverflowError:
        return math.inf


@dataclasses.dataclass(frozen=True)
class BestValidation:
    """The GL code's global best validation perplexity and the test perplexity scored at it."""

    valid: float = 10000.0
    test: Optional[float] = None
    exact_test: Optional[float] = None
    phase: Optional[int] = None
    epoch: Optional[int] = None

    def improves(self, valid_perplexity: float) -> bool:
        return valid_perplexity < self.valid
