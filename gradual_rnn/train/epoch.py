"""One epoch of one phase: the windows in order (K windows per compiled call), progress lines,
mid-epoch checkpoints, and the epoch's end (validation, the best-validation record, the test rule,
the row of the run's results). `run_epoch` returns the run's next `Progress`.

Truncated backpropagation through time: each window starts from the state the previous window
ended with, passed in as a plain tensor, so no gradient crosses a window boundary.
"""
import dataclasses
import math
import time
from typing import Dict, List

import tensorflow as tf
from absl import logging

from gradual_rnn.phases import Phase
from gradual_rnn.train import distribute, schedules, steps
from gradual_rnn.train.context import Clock, Interrupted, RunContext, TrainingDiverged, WindowRecord
from gradual_rnn.train.progress import BestValidation, Progress, diverged, divergence_rule, perplexity
from gradual_rnn.train.steps import Carried


@dataclasses.dataclass(frozen=True)
class PhaseRun:
    """What one phase trains with: its model, optimizer, compiled step and evaluator."""

    phase: Phase
    model: object  # the phase's LanguageModel
    optimizer: object
    step: steps.TrainStep
    evaluator: object  # evaluate.Evaluator of head `phase.depth`


def initial_carried(context: RunContext, run: PhaseRun) -> Carried:
    """The zero state of a new epoch (masks are drawn at its first window)."""
    state = run.model.initial_state(context.config.batch_size, run.phase.depth)
    if context.distributed:
        state = distribute.split_nested(context.strategy, state)
    return Carried(state, None)


def _masks_for(context: RunContext, phase: Phase, epoch: int, window: int, carried: Carried,
               first_window: int) -> Carried:
    """The carried value with the variational masks due at `window` (refreshed per epoch or window)."""
    config = context.config
    refresh = config.mask_refresh == "batch" and window > first_window
    if carried.masks is not None and not refresh:
        return carried
    masks = steps.sample_masks(config, phase.dropout, (phase.index, epoch, window), config.batch_size)
    if context.distributed and masks is not None:
        masks = distribute.split_nested(context.strategy, masks)
    return Carried(carried.state, masks)


def start_epoch(context: RunContext, progress: Progress) -> Progress:
    """The epoch's learning rate (the config's rule) with its sums cleared, unless resuming mid-epoch."""
    if progress.window:
        return progress
    rate = schedules.learning_rate_for_epoch(context.config, progress.epoch, progress.learning_rate,
                                             progress.valid_history)
    return dataclasses.replace(progress, learning_rate=rate, epoch_nll=0.0, epoch_tokens=0.0,
                               epoch_seconds=0.0, epoch_timed_tokens=0.0, epoch_timed_seconds=0.0)


def run_epoch(context: RunContext, run: PhaseRun, progress: Progress, carried, clock: Clock) -> Progress:
    """Trains the rest of the current epoch from window `progress.window`, validates, checkpoints,
    and returns the progress after the epoch."""
    phase = run.phase
    progress = start_epoch(context, progress)
    run.optimizer.learning_rate.assign(progress.learning_rate)
    carried = carried if carried is not None else initial_carried(context, run)
    first_window = window = progress.window
    started = time.time() - progress.epoch_seconds
    while window < context.windows.epoch_size:
        count = _windows_this_call(context, run, window, clock)
        carried = _masks_for(context, phase, progress.epoch, window, carried, first_window)
        called = time.time()
        costs, carried, norms = _call(context, run, progress.epoch, window, count, carried)
        seconds = (time.time() - called) / count
        timed = _warmed_up(clock, "many" if count > 1 else "one")
        _check_windows(context, phase, progress.epoch, window, costs)
        for offset, (cost, norm) in enumerate(zip(costs, norms)):
            progress = _account(context, progress, window + offset, cost, started, seconds if timed else None)
            clock.windows_run += 1
            _observe(context, phase, progress.epoch, window + offset, cost, norm, count, offset)
            _report_window(context, run, progress, window + offset, clock)
            _summarize_window(context, progress, cost, norm)
        _adapt_windows_per_call(context, clock, seconds if timed else None)
        window += count
        if window < context.windows.epoch_size:
            _maybe_checkpoint(context, run, progress, carried, clock)
    progress = end_epoch(context, run, progress)
    if context.stop_requested(clock):
        raise Interrupted("Stopped at the end of an epoch; run the same command again to resume.")
    return progress


def _warmed_up(clock: Clock, kind: str) -> bool:
    """Whether a call of this kind ("one" or "many") was made before in this session: its first
    call compiles it, so it is not a speed sample."""
    clock.calls_run += 1
    warmed = kind in clock.compiled
    clock.compiled.add(kind)
    return warmed


CALL_SECONDS = 0.3  # the work one compiled call aims at when windows_per_call is chosen
MAX_WINDOWS_PER_CALL = 256
FIRST_WINDOWS_PER_CALL = 4


def _windows_this_call(context: RunContext, run: PhaseRun, window: int, clock: Clock) -> int:
    """K for the next call: the current choice, cut so that the call ends at the epoch's end, at
    the next checkpoint and at a requested stop; 1 where a step runs one window at a time
    (several replicas, the sampling rule, masks drawn for every window)."""
    options, config = context.options, context.config
    if run.step.many is None or config.mask_refresh == "batch" and run.phase.dropout.style == "variational":
        return 1
    if not clock.windows_per_call:
        clock.windows_per_call = options.windows_per_call or FIRST_WINDOWS_PER_CALL
    limit = context.windows.epoch_size - window
    if options.checkpoint_every_windows:
        limit = min(limit, options.checkpoint_every_windows - clock.windows_run % options.checkpoint_every_windows)
    if options.stop_after_windows:
        limit = min(limit, max(1, options.stop_after_windows - clock.windows_run))
    return max(1, min(clock.windows_per_call, limit))


def chosen_windows_per_call(seconds_per_window: float) -> int:
    """K when the trainer chooses it: the windows that fill CALL_SECONDS at the speed just measured,
    1 to MAX_WINDOWS_PER_CALL."""
    wanted = round(CALL_SECONDS / max(seconds_per_window, 1e-6))
    return max(1, min(MAX_WINDOWS_PER_CALL, wanted))


def _adapt_windows_per_call(context: RunContext, clock: Clock, seconds_per_window) -> None:
    if context.options.windows_per_call or seconds_per_window is None:
        return
    clock.windows_per_call = chosen_windows_per_call(seconds_per_window)


def _call(context: RunContext, run: PhaseRun, epoch: int, window: int, count: int, carried: Carried):
    """Trains windows window .. window + count - 1 in one compiled call -> (costs, carried, norms)."""
    inputs, targets = context.windows.train_block(window, count)
    phase = run.phase
    if count == 1:
        key = tf.constant([phase.index, epoch, window], tf.int64)
        cost, state, norm = run.step.one(inputs[0], targets[0], carried.state, key, carried.masks)
        return [float(cost)], Carried(state, carried.masks), [float(norm)]
    keys = tf.constant([[phase.index, epoch, index] for index in range(window, window + count)], tf.int64)
    costs, state, norms = run.step.many(inputs, targets, carried.state, keys, carried.masks)
    return costs.numpy().tolist(), Carried(state, carried.masks), norms.numpy().tolist()


def _check_windows(context: RunContext, phase: Phase, epoch: int, window: int, costs: List[float]) -> None:
    """Stops the run when a window's perplexity is not finite or beyond the divergence bound."""
    num_steps, vocab_size = context.config.num_steps, context.config.vocab_size
    for offset, cost in enumerate(costs):
        value = perplexity(cost, num_steps) if math.isfinite(cost) else cost
        if diverged(value, vocab_size):
            raise TrainingDiverged(f"The training perplexity became {value:.6g} in phase {phase.index}, "
                                   f"epoch {epoch + 1}, window {window + offset}; "
                                   f"{context.store.kept_message()} ({divergence_rule(vocab_size)}).")


def _account(context: RunContext, progress: Progress, window: int, cost: float, started: float,
             step_seconds) -> Progress:
    """The progress after training `window` at `cost`."""
    tokens = context.config.batch_size * context.config.num_steps
    timed = dict(epoch_timed_tokens=progress.epoch_timed_tokens + tokens,
                 epoch_timed_seconds=progress.epoch_timed_seconds + step_seconds) if step_seconds is not None else {}
    return dataclasses.replace(progress, epoch_nll=progress.epoch_nll + cost * context.config.batch_size,
                               epoch_tokens=progress.epoch_tokens + tokens, window=window + 1,
                               epoch_seconds=time.time() - started,
                               windows_trained=progress.windows_trained + 1, **timed)


def _observe(context: RunContext, phase: Phase, epoch: int, window: int, cost: float, norm: float,
             count: int, offset: int) -> None:
    observer = context.options.window_observer
    if observer is not None:
        observer(WindowRecord(phase.index, epoch + 1, window, cost, norm, count, offset))


def _clock_text(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _remaining_windows(context: RunContext, phase: Phase, epoch: int, window: int):
    """Windows left in the epoch, in the phase, and in the run (at this speed, equal per window)."""
    size = context.windows.epoch_size
    in_epoch = size - window - 1
    in_phase = in_epoch + (phase.epochs - epoch - 1) * size
    later = sum(later_phase.epochs for later_phase in context.phases[phase.index:])
    return in_epoch, in_phase, in_phase + later * size


def _report_window(context: RunContext, run: PhaseRun, progress: Progress, window: int, clock: Clock) -> None:
    """A progress line at a session's first window, every `progress_every_seconds`, and at the
    epoch's last window: windows done, elapsed, ETAs (epoch, phase, run) at the measured speed."""
    phase, epoch_size, now = run.phase, context.windows.epoch_size, time.time()
    due = now - clock.last_report >= context.options.progress_every_seconds
    first_timed = progress.epoch_timed_seconds > 0 and not clock.reported_timed
    if not (clock.windows_run == 1 or first_timed or due or window + 1 == epoch_size):
        return
    clock.last_report, clock.reported_timed = now, clock.reported_timed or first_timed
    speed = progress.words_per_second()
    seconds_per_window = context.config.batch_size * context.config.num_steps / max(speed, 1e-9)
    etas = [_clock_text(count * seconds_per_window)
            for count in _remaining_windows(context, phase, progress.epoch, window)]
    if progress.epoch_timed_seconds == 0:  # only the compiling call so far: no speed to go by
        etas = ["(measuring)"] * 3
    logging.info("phase %d/%d epoch %d/%d: window %d/%d (%d%%), elapsed %s, ETA epoch %s phase %s run %s, "
                 "train perplexity %.3f, %.0f wps%s", phase.index, len(context.phases), progress.epoch + 1,
                 phase.epochs, window + 1, epoch_size, 100 * (window + 1) // epoch_size,
                 _clock_text(progress.epoch_seconds), *etas, progress.train_perplexity(), speed,
                 _sampling_note(run.step))


def _sampling_note(step: steps.TrainStep) -> str:
    if step.counters is None:
        return ""
    used, seen = step.counters
    return (f", sampling rule trained on {int(used)} of {int(seen)} windows since the phase "
            f"(re)started")


def _summarize_window(context: RunContext, progress: Progress, cost: float, gradient_norm: float) -> None:
    """Per-window TensorBoard scalars every `summary_every_windows` windows."""
    every = max(1, context.options.summary_every_windows)
    if progress.windows_trained % every:
        return
    with context.writer.as_default(step=progress.windows_trained):
        tf.summary.scalar("train/window_cost", cost)
        tf.summary.scalar("train/gradient_norm_before_clipping", gradient_norm)
        tf.summary.scalar("train/learning_rate", progress.learning_rate)
        tf.summary.scalar("train/words_per_second", progress.words_per_second())


def save_checkpoint(context: RunContext, progress: Progress, model, optimizer=None, carried=None,
                    pin_best: bool = False) -> None:
    """Checkpoints the model (with the optimizer mid-phase and the carried state and masks
    mid-epoch); refuses values that are not finite."""
    from gradual_rnn.train import checkpoint

    state, masks = carried if carried is not None else (None, None)
    broken = checkpoint.first_non_finite(model, optimizer, state)
    if broken:
        raise TrainingDiverged(f"{broken} is not finite in phase {progress.phase}, epoch "
                               f"{progress.epoch + 1}; {context.store.kept_message()}.")
    context.store.save(progress, model, optimizer, state, masks, pin_best)


def _maybe_checkpoint(context: RunContext, run: PhaseRun, progress: Progress, carried: Carried,
                      clock: Clock) -> None:
    every = context.options.checkpoint_every_windows
    stop = context.stop_requested(clock)
    if context.distributed:  # per-replica state is not gathered: epoch-end checkpoints only
        every = 0
        if stop:
            raise Interrupted("Stopped mid-epoch; a distributed run resumes from the checkpoint "
                              "at the end of the previous epoch.")
    if stop or (every and clock.windows_run % every == 0):
        save_checkpoint(context, progress, run.model, run.optimizer, carried)
    if stop:
        raise Interrupted(f"Stopped after saving a checkpoint in {context.store.folder.checkpoints}; run "
                          f"the same command again to resume.")


def end_epoch(context: RunContext, run: PhaseRun, progress: Progress) -> Progress:
    """Validation, the best record (and the test at a new best with `at_best_valid`), the row, and
    the epoch-end checkpoint; returns the progress of the next epoch."""
    phase, config = run.phase, context.config
    valid_perplexity = run.evaluator.valid()
    if diverged(valid_perplexity, config.vocab_size):
        raise TrainingDiverged(f"The validation perplexity became {valid_perplexity:.6g} after phase "
                               f"{phase.index}, epoch {progress.epoch + 1}; {context.store.kept_message()} "
                               f"({divergence_rule(config.vocab_size)}).")
    row = dict(phase=phase.index, depth=phase.depth, epoch=progress.epoch + 1,
               learning_rate=progress.learning_rate, train_perplexity=progress.train_perplexity(),
               valid_perplexity=valid_perplexity, words_per_second=progress.words_per_second())
    best = BestValidation(**progress.best)
    improved = best.improves(valid_perplexity)
    if improved:
        best = dataclasses.replace(best, valid=valid_perplexity, phase=phase.index, epoch=progress.epoch + 1)
        if config.test_rule == "at_best_valid":
            test, exact_test = run.evaluator.test()
            best = dataclasses.replace(best, test=test, exact_test=exact_test)
            row.update(test_perplexity=test, exact_test_perplexity=exact_test)
    progress = dataclasses.replace(progress, valid_history=progress.valid_history + (valid_perplexity,),
                                   best=dataclasses.asdict(best), rows=progress.rows + (row,),
                                   epoch=progress.epoch + 1, window=0)
    _log_epoch(context, row, len(progress.rows))
    save_checkpoint(context, progress, run.model, run.optimizer, pin_best=improved)
    return progress


def _log_epoch(context: RunContext, row: Dict, epochs_done: int) -> None:
    test = f" test perplexity {row['test_perplexity']:.3f}" if "test_perplexity" in row else ""
    logging.info("phase %d (depth %d) epoch %d: learning rate %.5f, train perplexity %.3f, valid "
                 "perplexity %.3f, %.0f wps%s", row["phase"], row["depth"], row["epoch"],
                 row["learning_rate"], row["train_perplexity"], row["valid_perplexity"],
                 row["words_per_second"], test)
    with context.writer.as_default(step=epochs_done):
        for name in ("train_perplexity", "valid_perplexity", "test_perplexity", "learning_rate"):
            if name in row:
                tf.summary.scalar(f"head_{row['depth']}/{name}", row[name])
    context.writer.flush()
