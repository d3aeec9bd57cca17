"""The training orchestrator: `train(config, options)` runs the phases of `make_phases(config)`.

Everything a rule remembers lives in the `Progress` record, saved with the variables after every
epoch (and every `checkpoint_every_windows` windows), so the same command resumes where a run
stopped, to the bit. The phase loop reads as the paper: for each phase, build (or grow) the model,
then train its epochs; each epoch returns the next progress.
"""
import contextlib
import dataclasses
import logging as logging_lib
import os
import time
from typing import Dict, Optional, Tuple

import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.data import ptb
from gradual_rnn.nn import language_model as lm
from gradual_rnn.phases import Phase, make_phases
from gradual_rnn.train import checkpoint, distribute, epoch, steps
from gradual_rnn.train.context import (Clock, Interrupted, RunContext, RunOptions, SignalGuard,
                                       TrainingDiverged)
from gradual_rnn.train.evaluate import Evaluator
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import BestValidation, Progress, diverged, divergence_rule
from gradual_rnn.train.run_folder import RunCheckpoint, RunFolder, RunFolderError
from gradual_rnn.train.steps import Carried

__all__ = ["train", "RunOptions", "TrainingDiverged", "Interrupted"]


def train(config: Config, options: RunOptions, corpus: Optional[ptb.Corpus] = None,
          strategy: Optional[tf.distribute.Strategy] = None) -> Dict:
    """Trains every phase of `config` (resuming from `options.save_path`) and returns the results.

    With a `strategy` of several replicas, each replica trains its own block of the batch streams
    (see `distribute`); checkpoints are then written at epoch ends only.
    """
    corpus = corpus or ptb.load_corpus(options.data_dir)
    if corpus.vocab_size != config.vocab_size:
        raise ptb.DataError(f"The corpus has {corpus.vocab_size} words in its vocabulary but the config "
                            f"says vocab_size={config.vocab_size}.")
    windows = ptb.run_windows(corpus, config.batch_size, config.num_steps, config.test_batch_size,
                              config.test_num_steps)
    folder = RunFolder(options.save_path)
    store = checkpoint.CheckpointStore(folder, config, options.restart_from_scratch)
    with folder.lock(), _log_file(folder.log_file), _session_summaries(folder, store) as writer:
        if options.smoke_test:
            logging.warning("SMOKE TEST: only the first %s tokens of the splits are read; the numbers "
                            "are not comparable with full runs.", options.smoke_test)
        if options.deterministic:
            tf.config.experimental.enable_op_determinism()
        _check_corpus(folder, corpus, options)
        strategy = strategy or tf.distribute.get_strategy()
        phases = tuple(make_phases(config))
        restored = _agreed_checkpoint(store, strategy, _progress_problem(phases, windows.epoch_size))
        progress = restored.progress if restored else Progress()
        _log_restored(restored, phases)
        with SignalGuard() as guard:
            context = RunContext(config, options, windows, store, strategy, phases, writer, guard)
            _write_corpus(folder, corpus, options)
            return run_phases(context, progress, restored)


def corpus_identity(corpus: ptb.Corpus, options: RunOptions) -> Dict:
    """What makes the data of a run: the corpus as read, and how it was read."""
    return dict(fingerprint=corpus_fingerprint(corpus), smoke_test=bool(options.smoke_test),
                map_unknown_to_unk=options.map_unknown_to_unk,
                tokens=dict(train=len(corpus.train), valid=len(corpus.valid), test=len(corpus.test)))


def corpus_fingerprint(corpus: ptb.Corpus) -> str:
    fingerprint = getattr(corpus, "fingerprint", None)
    if callable(fingerprint):
        return fingerprint()
    import hashlib

    digest = hashlib.sha256()
    for ids in (corpus.train, corpus.valid, corpus.test):
        digest.update(str(len(ids)).encode())
        digest.update(ids.astype("<i4").tobytes())
    digest.update("\n".join(corpus.words()).encode("utf-8"))
    return digest.hexdigest()


def _check_corpus(folder: RunFolder, corpus: ptb.Corpus, options: RunOptions) -> None:
    """Refuses to resume a run on other data than it trained on, naming what differs."""
    if not folder.complete():
        return
    changes = folder.corpus_changes(corpus_identity(corpus, options))
    if changes:
        details = ", ".join(f"{key}: saved {_short(saved)} now {_short(now)}" for key, (saved, now) in changes.items())
        raise RunFolderError(f"--save_path {folder.path} holds a run trained on other data ({details}). "
                             f"Use a new --save_path, or the data and flags it was started with.")


def _short(value):
    return f"{value[:12]}..." if isinstance(value, str) and len(value) > 16 else repr(value)


def _write_corpus(folder: RunFolder, corpus: ptb.Corpus, options: RunOptions) -> None:
    folder.write_corpus(corpus_identity(corpus, options), corpus.words())


class OwnLines(logging_lib.Filter):
    """Keeps the package's own log lines and the libraries' warnings; drops their INFO chatter
    (e.g. TensorFlow's saver timings, which also log through absl) and tf.function's retracing
    notes (evaluation compiles one graph per window layout and phase, on purpose)."""

    def filter(self, record: logging_lib.LogRecord) -> bool:
        if "gradual_rnn" in record.pathname or "ptb_word_lm" in record.pathname:
            return True
        return record.levelno >= logging_lib.WARNING and "retracing" not in str(record.msg)


@contextlib.contextmanager
def _log_file(path: str):
    """The run's log lines also go to the run's log file (appended to across sessions)."""
    handler = logging_lib.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging_lib.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(OwnLines())
    logger = logging.get_absl_logger()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _session_summaries(folder: RunFolder, store: checkpoint.CheckpointStore):
    """The run's TensorBoard writer. A session that fails before it wrote a checkpoint removes the
    event file it started, so a rerun's steps do not appear twice."""
    before = set(os.listdir(folder.summaries)) if os.path.isdir(folder.summaries) else set()
    writer = tf.summary.create_file_writer(folder.summaries)
    written = store.writes
    try:
        yield writer
    except BaseException:
        writer.close()
        if store.writes == written and os.path.isdir(folder.summaries):
            for name in set(os.listdir(folder.summaries)) - before:
                os.remove(os.path.join(folder.summaries, name))
        raise
    writer.close()


def _log_restored(restored: Optional[RunCheckpoint], phases: Tuple[Phase, ...]) -> None:
    """Says where a resumed run goes on: the phase and epoch that run next."""
    if restored is None:
        return
    progress = restored.progress
    if progress.finished:
        where = "the run has finished"
    elif progress.phase > len(phases):
        where = "every phase is trained; the final evaluation runs next"
    else:
        where = (f"phase {progress.phase} of {len(phases)}, epoch {progress.epoch + 1}, window "
                 f"{progress.window} run next")
    logging.info("Restored %s: %s.", restored.prefix, where)


def _progress_problem(phases: Tuple[Phase, ...], epoch_size: int):
    """A check of a sidecar's progress against the run's phases and epoch size: what is wrong, or None."""

    def problem(progress: Progress) -> Optional[str]:
        last = len(phases) + 1
        if not 1 <= progress.phase <= last:
            return f"phase {progress.phase} is outside 1..{last}"
        if progress.phase <= len(phases):
            done = sum(1 for row in progress.rows if row.get("phase") == progress.phase)
            if progress.epoch != done:
                return f"epoch {progress.epoch} does not follow its {done} finished epochs of phase {progress.phase}"
        if not 0 <= progress.window < epoch_size:
            return f"window {progress.window} is outside 0..{epoch_size - 1}"
        if not 0 <= progress.model_depth <= max(phase.depth for phase in phases):
            return f"model_depth {progress.model_depth} does not fit the run's phases"
        return None

    return problem


def _reopen_if_extended(context: RunContext, progress: Progress) -> Progress:
    """A finished run whose last phase now has more epochs (a raised max_epochs) goes on training it."""
    last = context.phases[-1]
    done = sum(1 for row in progress.rows if row["phase"] == last.index)
    if progress.phase > last.index and done < last.epochs:
        logging.info("max_epochs now gives the last phase %d epochs (it has done %d): training on.",
                     last.epochs, done)
        return dataclasses.replace(progress, finished=False, final={}, phase=last.index, epoch=done, window=0)
    return progress


@dataclasses.dataclass(frozen=True)
class Resume:
    """What a restored checkpoint hands the first phase a session trains: the model, the optimizer
    slots (a checkpoint inside a phase holds them) and the carried state (inside an epoch)."""

    model: Optional[lm.LanguageModel] = None
    optimizer_prefix: Optional[str] = None
    carried: Optional[Carried] = None


def run_phases(context: RunContext, progress: Progress, restored: Optional[RunCheckpoint]) -> Dict:
    """The phase loop: each phase builds (or grows) its model, then trains its epochs."""
    progress = _reopen_if_extended(context, progress)
    if progress.finished:
        logging.info("The run in %s has finished; its results are in its results file.", context.store.folder.path)
        return progress.final
    resume, run, clock = _resume(context, restored), None, Clock()
    for phase in context.phases[progress.phase - 1:]:
        run, progress = enter_phase(context, phase, progress, resume)
        carried = resume.carried
        while progress.epoch < phase.epochs:
            progress = epoch.run_epoch(context, run, progress, carried, clock)
            carried = None
        progress = dataclasses.replace(progress, phase=phase.index + 1, epoch=0)
        epoch.save_checkpoint(context, progress, run.model)
        resume = Resume(model=run.model)
    model = run.model if run else resume.model
    evaluator = run.evaluator if run else Evaluator(model, progress.model_depth, context.windows,
                                                    context.options.jit_compile)
    return finish(context, progress, model, evaluator)


def _resume(context: RunContext, restored: Optional[RunCheckpoint]) -> Resume:
    if restored is None:
        return Resume()
    model = checkpoint.load_model(context.config, restored)
    carried = None
    if restored.progress.window:
        state, masks = checkpoint.read_carried(restored.prefix, restored.progress.model_depth)
        carried = None if state is None else Carried(state, masks)
    return Resume(model, restored.prefix, carried)


def enter_phase(context: RunContext, phase: Phase, progress: Progress, resume: Resume):
    """The phase's model (restored, grown or new), optimizer, compiled step and evaluator, and the
    progress as the phase starts (its learning rate and validation history reset at its start)."""
    config = context.config
    with context.strategy.scope():
        model = resume.model
        if model is None:
            model = build_model(config, phase.depth)
        elif phase.grows_model and model.num_layers < phase.depth:
            model = lm.grow(model, phase.depth, config.new_layer_init)
        optimizer = steps.make_optimizer(config)
    lm.freeze(model, phase.frozen_layers)
    step = _train_step(context, model, optimizer, phase)
    if resume.optimizer_prefix is not None:  # optimizer variables are saved only inside a phase
        checkpoint.restore_optimizer(resume.optimizer_prefix, optimizer)
    evaluator = Evaluator(model, phase.depth, context.windows, context.options.jit_compile)
    progress = dataclasses.replace(progress, model_depth=phase.depth)
    if progress.epoch == 0 and progress.window == 0:  # the phase starts now
        progress = dataclasses.replace(progress, learning_rate=None, valid_history=(),
                                       best=progress.best if config.best_valid_across_phases else {})
    logging.info("Phase %d/%d: depth %d, %d epochs, dropout %s, trainable layers %s.", phase.index,
                 len(context.phases), phase.depth, phase.epochs, phase.dropout,
                 [i + 1 for i in phase.trainable_layers])
    return epoch.PhaseRun(phase, model, optimizer, step, evaluator), progress


def _train_step(context: RunContext, model, optimizer, phase: Phase) -> steps.TrainStep:
    """The compiled step of the phase; with several replicas it splits each window across them."""
    if not context.distributed:
        return steps.make_train_step(model, optimizer, context.config, phase.dropout, phase.depth,
                                     context.options.jit_compile)
    return distribute.make_distributed_train_step(context.strategy, model, optimizer, context.config,
                                                  phase.dropout, phase.depth)


def _agreed_checkpoint(store: checkpoint.CheckpointStore, strategy: tf.distribute.Strategy, valid):
    """The newest usable checkpoint, or with several workers the newest one that every worker holds.

    Workers write their checkpoints independently, so one killed while writing may be an epoch
    behind the others; all resume from the fewest completed epochs so their collectives match.
    """
    restored = store.restore(valid=valid)
    if strategy.num_replicas_in_sync == 1:
        return restored
    epochs_done = len(restored.progress.rows) if restored else -1
    agreed = distribute.agree_on_minimum(strategy, epochs_done)
    if agreed == epochs_done:
        return restored
    logging.warning("Another worker has completed only %d epochs; resuming from that point.", max(agreed, 0))
    return store.restore(lambda progress: len(progress.rows) == agreed, valid) if agreed >= 0 else None


def finish(context: RunContext, progress: Progress, model, evaluator: Evaluator) -> Dict:
    """The final test (with `after_training`), the results file, and the finished checkpoint."""
    config = context.config
    best = BestValidation(**progress.best)
    if best.phase is None and config.test_rule == "at_best_valid":
        raise TrainingDiverged(f"No epoch of the run scored a validation perplexity below the rule's "
                               f"starting value {best.valid:g}; there are no results to report. "
                               f"{context.store.kept_message().capitalize()}.")
    final = dict(config=config.name, best_valid_perplexity=best.valid, best_phase=best.phase,
                 best_epoch=best.epoch, rows=[dict(row) for row in progress.rows])
    if config.test_rule == "after_training":
        final["test_perplexity"], final["exact_test_perplexity"] = evaluator.test()
        final["valid_perplexity"] = progress.rows[-1]["valid_perplexity"]
        final["train_perplexity"] = progress.rows[-1]["train_perplexity"]
    else:
        final["test_perplexity"], final["exact_test_perplexity"] = best.test, best.exact_test
    for name in ("test_perplexity", "exact_test_perplexity"):
        if final[name] is not None and diverged(final[name], config.vocab_size):
            raise TrainingDiverged(f"The {name.replace('_', ' ')} is {final[name]:.6g} "
                                   f"({divergence_rule(config.vocab_size)}); "
                                   f"{context.store.kept_message()}.")
    final["wall_seconds_this_session"] = time.time() - context.started
    if context.options.smoke_test:
        final["smoke_test"] = dict(context.options.smoke_test)
    progress = dataclasses.replace(progress, final=final, finished=True)
    epoch.save_checkpoint(context, progress, model)
    context.store.folder.write_results(final)
    logging.info("Finished %s: test perplexity %.3f (exact %.3f), best valid %.3f.", config.name,
                 final["test_perplexity"], final["exact_test_perplexity"], best.valid)
    return final
