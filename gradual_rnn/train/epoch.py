"""One epoch of one phase: the windows in order, progress lines, mid-epoch checkpoints, and the
epoch's end (validation, the best-validation record, the test rule, the row of results.json).

Truncated backpropagation through time: each window starts from the state the previous window
ended with, passed in as a plain tensor, so no gradient crosses a window boundary.
"""
import dataclasses
import math
import time
from typing import Dict

import tensorflow as tf
from absl import logging

from gradual_rnn.nn import dropout as dropout_lib
from gradual_rnn.phases import Phase
from gradual_rnn.train import distribute, schedules
from gradual_rnn.train.session import Interrupted, Session, TrainingDiverged


def initial_carried(session: Session, phase: Phase):
    """The zero `(state, masks)` of a new epoch (masks are drawn at its first window)."""
    state = session.model.initial_state(session.config.batch_size, phase.depth)
    if session.distributed:
        state = distribute.split_nested(session.strategy, state)
    return state, None


def _masks_for(session: Session, phase: Phase, window: int, carried, first_window: int):
    """The carried pair with the variational masks due at `window` (refreshed per epoch or window)."""
    state, masks = carried
    refresh = session.config.mask_refresh == "batch" and window > first_window
    if masks is None or refresh:
        masks = dropout_lib.sample_masks(session.config, phase.dropout,
                                         (phase.index, session.progress.epoch, window), session.config.batch_size)
        if session.distributed and masks is not None:
            masks = distribute.split_nested(session.strategy, masks)
    return state, masks


def start_epoch(session: Session) -> None:
    """Sets the epoch's learning rate (the config's rule) and clears its sums, unless resuming mid-epoch."""
    progress = session.progress
    if progress.window == 0:
        progress.learning_rate = schedules.learning_rate_for_epoch(
            session.config, progress.epoch, progress.learning_rate, progress.valid_history)
        progress.epoch_nll = progress.epoch_tokens = progress.epoch_seconds = 0.0
        progress.epoch_timed_tokens = progress.epoch_timed_seconds = 0.0


def run_epoch(session: Session, phase: Phase, train_step, optimizer, carried) -> None:
    """Trains the rest of the current epoch from window `progress.window`, then ends it."""
    progress = session.progress
    start_epoch(session)
    optimizer.learning_rate.assign(progress.learning_rate)
    carried = carried if carried is not None else initial_carried(session, phase)
    first_window = window = progress.window
    started = time.time() - progress.epoch_seconds
    while window < session.windows.epoch_size:
        count = _windows_this_call(session, phase, train_step, window)
        carried = _masks_for(session, phase, window, carried, first_window)
        called = time.time()
        costs, carried, norms = _call(session, phase, train_step, window, count, carried)
        seconds = (time.time() - called) / count
        timed = session.calls_run > 0  # the session's first call compiles the step: not a sample
        session.calls_run += 1
        for offset, (cost, norm) in enumerate(zip(costs, norms)):
            _account(session, phase, window + offset, cost, started, seconds if timed else None)
            _summarize_window(session, cost, norm)
        _adapt_windows_per_call(session, seconds if timed else None)
        window += count
        if window < session.windows.epoch_size:
            _maybe_checkpoint(session, optimizer, carried)
    end_epoch(session, phase, optimizer)
    if session.stop_requested():
        raise Interrupted("Stopped at the end of an epoch; run the same command again to resume.")


CALL_SECONDS = 0.3  # the work one compiled call aims at when windows_per_call is chosen
MAX_WINDOWS_PER_CALL = 256
FIRST_WINDOWS_PER_CALL = 4


def _windows_this_call(session: Session, phase: Phase, train_step, window: int) -> int:
    """K for the next call: the current choice, cut so that the call ends at the epoch's end, at
    the next checkpoint and at a requested stop; 1 where a step runs one window at a time
    (several replicas, the sampling rule, masks drawn for every window)."""
    options, config = session.options, session.config
    if not hasattr(train_step, "many") or config.mask_refresh == "batch" and phase.dropout.style == "variational":
        return 1
    if not session.windows_per_call:
        session.windows_per_call = options.windows_per_call or FIRST_WINDOWS_PER_CALL
    limit = session.windows.epoch_size - window
    if options.checkpoint_every_windows:
        limit = min(limit, options.checkpoint_every_windows - session.windows_run % options.checkpoint_every_windows)
    if options.stop_after_windows:
        limit = min(limit, max(1, options.stop_after_windows - session.windows_run))
    return max(1, min(session.windows_per_call, limit))


def chosen_windows_per_call(seconds_per_window: float) -> int:
    """K when the trainer chooses it: the windows that fill CALL_SECONDS at the speed just measured,
    1 to MAX_WINDOWS_PER_CALL."""
    wanted = round(CALL_SECONDS / max(seconds_per_window, 1e-6))
    return max(1, min(MAX_WINDOWS_PER_CALL, wanted))


def _adapt_windows_per_call(session: Session, seconds_per_window) -> None:
    if session.options.windows_per_call or seconds_per_window is None:
        return
    session.windows_per_call = chosen_windows_per_call(seconds_per_window)


def _call(session: Session, phase: Phase, train_step, window: int, count: int, carried):
    """Trains windows window .. window + count - 1 in one compiled call -> (costs, carried, norms)."""
    epoch = session.progress.epoch
    inputs, targets = session.windows.train_block(window, count)
    if count == 1:
        key = tf.constant([phase.index, epoch, window], tf.int64)
        cost, carried, norm = train_step(inputs[0], targets[0], carried, key)
        return [float(cost)], carried, [float(norm)]
    keys = tf.constant([[phase.index, epoch, index] for index in range(window, window + count)], tf.int64)
    state, masks = carried
    costs, state, norms = train_step.many(inputs, targets, state, keys, masks)
    return costs.numpy().tolist(), (state, masks), norms.numpy().tolist()


def _account(session: Session, phase: Phase, window: int, cost: float, started: float,
             step_seconds) -> None:
    progress, config = session.progress, session.config
    if not math.isfinite(cost):
        raise TrainingDiverged(f"The training cost became {cost} in phase {phase.index}, epoch "
                               f"{progress.epoch + 1}, window {window}; {session.store.kept_message()}.")
    progress.epoch_nll += cost * config.batch_size
    progress.epoch_tokens += config.batch_size * config.num_steps
    progress.window = window + 1
    progress.epoch_seconds = time.time() - started
    if step_seconds is not None:
        progress.epoch_timed_tokens += config.batch_size * config.num_steps
        progress.epoch_timed_seconds += step_seconds
    session.windows_run += 1
    progress.windows_trained += 1
    _report_window(session, phase, window)


def words_per_second(progress) -> float:
    """Training speed of the epoch so far, from the timed windows of every session."""
    if progress.epoch_timed_seconds > 0:
        return progress.epoch_timed_tokens / progress.epoch_timed_seconds
    return progress.epoch_tokens / max(progress.epoch_seconds, 1e-9)


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _remaining_windows(session: Session, phase: Phase, window: int):
    """Windows left in the epoch, in the phase, and in the run (at this speed, equal per window)."""
    size, epoch = session.windows.epoch_size, session.progress.epoch
    in_epoch = size - window - 1
    in_phase = in_epoch + (phase.epochs - epoch - 1) * size
    later = sum(later_phase.epochs for later_phase in session.phases[phase.index:])
    return in_epoch, in_phase, in_phase + later * size


def _report_window(session: Session, phase: Phase, window: int) -> None:
    """A progress line at a session's first window, every `progress_every_seconds`, and at the
    epoch's last window: windows done, elapsed, ETAs (epoch, phase, run) at the measured speed."""
    epoch_size, progress, now = session.windows.epoch_size, session.progress, time.time()
    due = now - session.last_report >= session.options.progress_every_seconds
    first_timed = progress.epoch_timed_seconds > 0 and not session.reported_timed
    if not (session.windows_run == 1 or first_timed or due or window + 1 == epoch_size):
        return
    session.last_report, session.reported_timed = now, session.reported_timed or first_timed
    speed = words_per_second(progress)
    seconds_per_window = session.config.batch_size * session.config.num_steps / max(speed, 1e-9)
    etas = [_clock(count * seconds_per_window) for count in _remaining_windows(session, phase, window)]
    if progress.epoch_timed_seconds == 0:  # only the compiling call so far: no speed to go by
        etas = ["(measuring)"] * 3
    used, seen = session.sampling_counters
    sampled = "" if used is None else (f", sampling rule trained on {int(used)} of {int(seen)} "
                                       f"windows since the phase (re)started")
    logging.info("phase %d/%d epoch %d/%d: window %d/%d (%d%%), elapsed %s, ETA epoch %s phase %s run %s, "
                 "train perplexity %.3f, %.0f wps%s", phase.index, len(session.phases), progress.epoch + 1,
                 phase.epochs, window + 1, epoch_size, 100 * (window + 1) // epoch_size,
                 _clock(progress.epoch_seconds), *etas,
                 schedules.perplexity(progress.epoch_nll, progress.epoch_tokens), speed, sampled)


def _summarize_window(session: Session, cost: float, gradient_norm: float) -> None:
    """Per-window TensorBoard scalars every `summary_every_windows` windows."""
    progress, every = session.progress, max(1, session.options.summary_every_windows)
    if progress.windows_trained % every:
        return
    with session.writer.as_default(step=progress.windows_trained):
        tf.summary.scalar("train/window_cost", cost)
        tf.summary.scalar("train/gradient_norm_before_clipping", gradient_norm)
        tf.summary.scalar("train/learning_rate", progress.learning_rate)
        tf.summary.scalar("train/words_per_second", words_per_second(progress))


def _maybe_checkpoint(session: Session, optimizer, carried) -> None:
    every = session.options.checkpoint_every_windows
    stop = session.stop_requested()
    if session.distributed:  # per-replica state is not gathered: epoch-end checkpoints only
        every = 0
        if stop:
            raise Interrupted("Stopped mid-epoch; a distributed run resumes from the checkpoint "
                              "at the end of the previous epoch.")
    if stop or (every and session.windows_run % every == 0):
        session.save(optimizer, carried)
    if stop:
        raise Interrupted(f"Stopped after saving a checkpoint in {session.store.directory}; run the "
                          f"same command again to resume.")


def end_epoch(session: Session, phase: Phase, optimizer) -> None:
    """Validation, the best record (and the test at a new best with `at_best_valid`), the row."""
    progress, config = session.progress, session.config
    valid_perplexity = session.evaluator.valid()
    progress.valid_history.append(valid_perplexity)
    row = dict(phase=phase.index, depth=phase.depth, epoch=progress.epoch + 1,
               learning_rate=progress.learning_rate,
               train_perplexity=schedules.perplexity(progress.epoch_nll, progress.epoch_tokens),
               valid_perplexity=valid_perplexity, words_per_second=words_per_second(progress))
    best = schedules.BestValidation(**progress.best)
    improved = best.improves(valid_perplexity)
    if improved:
        best.valid, best.phase, best.epoch = valid_perplexity, phase.index, progress.epoch + 1
        if config.test_rule == "at_best_valid":
            best.test, best.exact_test = session.evaluator.test()
            row.update(test_perplexity=best.test, exact_test_perplexity=best.exact_test)
    progress.best = dataclasses.asdict(best)
    progress.rows.append(row)
    _log_epoch(session, row)
    progress.epoch, progress.window = progress.epoch + 1, 0
    session.save(optimizer, pin_best=improved)


def _log_epoch(session: Session, row: Dict) -> None:
    test = f" test perplexity {row['test_perplexity']:.3f}" if "test_perplexity" in row else ""
    logging.info("phase %d (depth %d) epoch %d: learning rate %.5f, train perplexity %.3f, valid "
                 "perplexity %.3f, %.0f wps%s", row["phase"], row["depth"], row["epoch"],
                 row["learning_rate"], row["train_perplexity"], row["valid_perplexity"],
                 row["words_per_second"], test)
    with session.writer.as_default(step=len(session.progress.rows)):
        for name in ("train_perplexity", "valid_perplexity", "test_perplexity", "learning_rate"):
            if name in row:
                tf.summary.scalar(f"head_{row['depth']}/{name}", row[name])
    session.writer.flush()
