"""What a training run works with besides its progress: the options a caller chooses (`RunOptions`),
the fixed context of one session (`RunContext`), the session's own counters (`Clock`), the signal
guard, and the errors that end a run."""
import dataclasses
import signal
import time
from typing import Callable, Optional, Tuple

import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.data import ptb
from gradual_rnn.phases import Phase
from gradual_rnn.train.checkpoint import CheckpointStore


class TrainingDiverged(RuntimeError):
    """The training or validation perplexity became non-finite or exceeded the divergence bound."""


class Interrupted(RuntimeError):
    """The run was stopped by a signal (or `stop_after_windows`) after saving a checkpoint."""

    exit_code = 3  # the commands' exit code for a run that can be resumed


@dataclasses.dataclass(frozen=True)
class WindowRecord:
    """One trained window, as `RunOptions.window_observer` sees it.

    phase: 1-based; epoch: 1-based within the phase; window: 0-based within the epoch; cost: the
    references' window cost (float32, summed over time, mean over the batch); gradient_norm: the
    global norm before clipping; call_size: the windows of the compiled call it ran in, and
    call_offset: its position there (0 for the first window of a call).
    """

    phase: int
    epoch: int
    window: int
    cost: float
    gradient_norm: float
    call_size: int
    call_offset: int


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where and how a run works; nothing here changes the numbers it produces."""

    data_dir: str
    save_path: str
    jit_compile: bool = False
    checkpoint_every_windows: int = 0  # 0: only at epoch ends
    progress_every_seconds: float = 30.0  # a progress line this often (and at a session's first window)
    summary_every_windows: int = 100  # per-window TensorBoard scalars this often
    stop_after_windows: int = 0  # testing aid: raise Interrupted after this many windows (0: never)
    # Deterministic kernels (tf.config.experimental.enable_op_determinism). Every random draw of the
    # package is already stateless and seeded from (seed, phase, epoch, window).
    deterministic: bool = False
    # When checkpoints exist and none can be used: start over (they are kept aside) instead of stopping.
    restart_from_scratch: bool = False
    # Training windows per compiled call: 0 chooses (about CALL_SECONDS of work a call), 1 is one
    # window a call. Any value gives the same numbers; calls end at checkpoints and epoch ends.
    windows_per_call: int = 0
    # A smoke test reads only prefixes of the splits: {"train": tokens, ...}; written into the results.
    smoke_test: Optional[dict] = None
    # Called with a WindowRecord after every trained window (e.g. to record the window costs).
    window_observer: Optional[Callable[[WindowRecord], None]] = None
    # With map_unknown_to_unk the corpus mapped words outside the vocabulary to <unk> (part of the
    # run's identity, with the corpus itself).
    map_unknown_to_unk: bool = False


class SignalGuard:
    """Turns SIGTERM and SIGINT into a flag the window loop checks, so it can checkpoint first."""

    def __init__(self):
        self.stop_requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        logging.warning("Signal %d received: saving a checkpoint, then stopping.", signum)
        self.stop_requested = True

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Everything one training session works with that does not change while it runs."""

    config: Config
    options: RunOptions
    windows: ptb.RunWindows
    store: CheckpointStore
    strategy: tf.distribute.Strategy
    phases: Tuple[Phase, ...]
    writer: object  # the tf.summary writer of the run's TensorBoard folder
    guard: SignalGuard
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def distributed(self) -> bool:
        return self.strategy.num_replicas_in_sync > 1

    def stop_requested(self, clock: "Clock") -> bool:
        limit = self.options.stop_after_windows
        return bool(self.guard.stop_requested or (limit and clock.windows_run >= limit))


@dataclasses.dataclass
class Clock:
    """The session's own counters: how much it has run, and when it last reported. Nothing here is
    saved or changes a number."""

    windows_run: int = 0  # windows trained in this session
    calls_run: int = 0  # compiled calls made in this session (the first one compiles)
    windows_per_call: int = 0  # the current choice (see RunOptions.windows_per_call)
    last_report: float = 0.0  # time of the last progress line
    reported_timed: bool = False  # whether a line with a measured speed has been logged
    compiled: set = dataclasses.field(default_factory=set)  # call kinds ("one", "many") made already
