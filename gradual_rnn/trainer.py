"""The training orchestrator: phases, epochs, validation, the test rule, checkpoints, results.

`train(config, options)` runs the phases of `phases.make_phases(config)` in order. Everything a
rule remembers lives in a `checkpoints.Progress`, saved with the variables after every epoch (and
every `checkpoint_every_windows` windows), so the same command resumes where a run stopped.
"""
import dataclasses
import math
import os
import signal
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn import data, distribute
from gradual_rnn import model as lm
from gradual_rnn import training
from gradual_rnn.checkpoints import CheckpointStore, Progress, RunLock, write_json_atomically
from gradual_rnn.configs import Config
from gradual_rnn.phases import Phase, make_phases


class TrainingDiverged(RuntimeError):
    """The training cost became NaN or infinite."""


class Interrupted(RuntimeError):
    """The run was stopped by a signal after saving a checkpoint."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where and how a run works; nothing here changes the numbers it produces."""

    data_dir: str
    save_path: str
    jit_compile: bool = False
    checkpoint_every_windows: int = 0  # 0: only at epoch ends
    progress_every_fraction: float = 0.1
    stop_after_windows: int = 0  # testing aid: raise Interrupted after this many windows (0: never)
    # Deterministic kernels (tf.config.experimental.enable_op_determinism). Every random draw of the
    # package is already stateless and seeded from (seed, phase, epoch, window).
    deterministic: bool = False


def train(config: Config, options: RunOptions, corpus: Optional[data.Corpus] = None,
          strategy: Optional[tf.distribute.Strategy] = None) -> Dict:
    """Trains every phase of `config` (resuming from `options.save_path`) and returns the results.

    With a `strategy` of several replicas, each replica trains its own block of the batch streams
    (see `distribute`); checkpoints are then written at epoch ends only.
    """
    corpus = corpus or data.load_corpus(options.data_dir)
    _check_corpus(config, corpus)
    store = CheckpointStore(options.save_path, config)
    with RunLock(store.save_path):
        return _train_locked(config, options, corpus, store, strategy or tf.distribute.get_strategy())


def _train_locked(config: Config, options: RunOptions, corpus: data.Corpus, store: CheckpointStore,
                  strategy: tf.distribute.Strategy) -> Dict:
    if options.deterministic:
        tf.config.experimental.enable_op_determinism()
    restored = _agreed_checkpoint(store, strategy)
    progress, arrays = restored if restored else (Progress(), None)
    if progress.finished:
        logging.info("The run in %s has finished; its results are in results.json.", options.save_path)
        return progress.final
    runner = _Runner(config, options, corpus, store, progress, strategy)
    with _SignalGuard() as guard:
        runner.guard = guard
        for phase in make_phases(config)[progress.phase - 1:]:
            runner.run_phase(phase, arrays)
            arrays = None
        runner.finish(arrays)
    return progress.final


def _agreed_checkpoint(store: CheckpointStore, strategy: tf.distribute.Strategy):
    """The newest checkpoint, or with several workers the newest one that every worker holds.

    Workers write their checkpoints independently, so one killed while writing may be an epoch
    behind the others; all resume from the fewest completed epochs so their collectives match.
    """
    restored = store.restore()
    if strategy.num_replicas_in_sync == 1:
        return restored
    epochs_done = len(restored[0].rows) if restored else -1
    agreed = distribute.agree_on_minimum(strategy, epochs_done)
    if agreed == epochs_done:
        return restored
    logging.warning("Another worker has completed only %d epochs; resuming from that point.", max(agreed, 0))
    return store.restore(lambda progress: len(progress.rows) == agreed) if agreed >= 0 else None


def _check_corpus(config: Config, corpus: data.Corpus) -> None:
    if corpus.vocab_size != config.vocab_size:
        raise ValueError(f"The corpus has {corpus.vocab_size} words in its vocabulary but the config "
                         f"says vocab_size={config.vocab_size}; pass --set=vocab_size={corpus.vocab_size}.")
    data.check_epoch_size(len(corpus.train), config.batch_size, config.num_steps, "train")
    data.check_epoch_size(len(corpus.valid), config.batch_size, config.num_steps, "valid")
    data.check_epoch_size(len(corpus.test), config.test_batch_size, config.test_num_steps, "test")


class _SignalGuard:
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


def model_arrays(model: lm.LanguageModel, optimizer, state, masks) -> Dict[str, np.ndarray]:
    """Everything numeric a checkpoint holds, by stable names."""
    arrays = {f"model/{variable.path}": np.asarray(variable) for variable in model.weights}
    if optimizer is not None:
        arrays.update({f"optimizer/{index:04d}": np.asarray(variable)
                       for index, variable in enumerate(optimizer.variables)})
    for index, (cell, hidden) in enumerate(state or ()):
        arrays[f"state/{index}/c"], arrays[f"state/{index}/h"] = np.asarray(cell), np.asarray(hidden)
    for index, pair in enumerate(masks or ()):
        for kind, mask in zip(("output", "state"), pair):
            if mask is not None:
                arrays[f"masks/{index}/{kind}"] = np.asarray(mask)
    return arrays


def load_model_arrays(model: lm.LanguageModel, arrays: Dict[str, np.ndarray]) -> None:
    for variable in model.weights:
        key = f"model/{variable.path}"
        if key not in arrays:
            raise KeyError(f"The checkpoint lacks {key}.")
        variable.assign(arrays[key])


def _restore_state(arrays, depth):
    if arrays is None or "state/0/c" not in arrays:
        return None
    return tuple((tf.constant(arrays[f"state/{i}/c"]), tf.constant(arrays[f"state/{i}/h"]))
                 for i in range(depth))


def _restore_masks(arrays, depth):
    if arrays is None or not any(key.startswith("masks/") for key in arrays):
        return None
    return [tuple(tf.constant(arrays[key]) if key in arrays else None
                  for key in (f"masks/{i}/output", f"masks/{i}/state")) for i in range(depth)]


class _Runner:
    """Runs phases and epochs for one config, keeping `progress` current."""

    def __init__(self, config: Config, options: RunOptions, corpus: data.Corpus,
                 store: CheckpointStore, progress: Progress, strategy: tf.distribute.Strategy):
        self.config, self.options, self.corpus = config, options, corpus
        self.store, self.progress, self.strategy = store, progress, strategy
        self.distributed = strategy.num_replicas_in_sync > 1
        self.model: Optional[lm.LanguageModel] = None
        self.guard = None
        self.windows_run = 0
        self.sampling_counters = (None, None)  # the sampled step's (used, seen), when sampling is on
        self.writer = tf.summary.create_file_writer(os.path.join(store.save_path, "tensorboard"))
        self.valid_windows = data.window_arrays(corpus.valid, config.batch_size, config.num_steps, "valid split")
        self.num_phases = len(make_phases(config))
        self.started = time.time()

    # ----- phases -----
    def run_phase(self, phase: Phase, arrays) -> None:
        with self.strategy.scope():
            self.model = self._phase_model(phase, arrays)
            optimizer = training.make_optimizer(self.config)
        lm.freeze(self.model, phase.frozen_layers)
        plan = lm.DropoutPlan.for_depth(self.config, phase.depth)
        train_step = self._train_step(optimizer, plan, phase.depth)
        self.sampling_counters = getattr(train_step, "used", None), getattr(train_step, "seen", None)
        self.evaluate = training.make_eval_step(self.model, phase.depth, self.options.jit_compile)
        if arrays is not None:  # optimizer variables are saved only inside a phase
            for variable, key in zip(optimizer.variables, sorted(k for k in arrays if k.startswith("optimizer/"))):
                variable.assign(arrays[key])
        logging.info("Phase %d/%d: depth %d, %d epochs, keep output %s state %s, trainable layers %s.",
                     phase.index, self.num_phases, phase.depth, phase.epochs,
                     phase.keep_output, phase.keep_state, [i + 1 for i in phase.trainable_layers])
        restored_state = _restore_state(arrays, phase.depth) if self.progress.window else None
        restored_masks = _restore_masks(arrays, phase.depth) if self.progress.window else None
        if self.progress.epoch == 0 and self.progress.window == 0:
            self._start_phase()
        while self.progress.epoch < phase.epochs:
            self._run_epoch(phase, train_step, optimizer, plan, restored_state, restored_masks)
            restored_state = restored_masks = None
        self.progress.phase, self.progress.epoch = phase.index + 1, 0
        self._save(optimizer=None)

    def _train_step(self, optimizer, plan, depth):
        if not self.distributed:
            return training.make_train_step(self.model, optimizer, self.config, plan, depth,
                                            self.options.jit_compile)
        step = distribute.make_distributed_train_step(self.strategy, self.model, optimizer, self.config,
                                                      plan, depth)

        def global_step(inputs, targets, state, key, masks):
            split = distribute.split_nested
            return step(split(self.strategy, inputs), split(self.strategy, targets), state, key,
                        split(self.strategy, masks))

        return global_step

    def _initial_state(self, depth):
        state = self.model.initial_state(self.config.batch_size, depth)
        return distribute.split_nested(self.strategy, state) if self.distributed else state

    def _start_phase(self) -> None:
        self.progress.learning_rate, self.progress.valid_history = None, []
        if not self.config.best_valid_across_phases:
            self.progress.best = {}

    def _phase_model(self, phase: Phase, arrays) -> lm.LanguageModel:
        saved_depth = self.progress.model_depth
        if arrays is not None:
            model = lm.build_model(self.config, saved_depth)
            load_model_arrays(model, arrays)
        else:
            model = self.model
        if model is None:
            model = lm.build_model(self.config, phase.depth)
        elif model.num_layers < phase.depth:
            model = lm.grow(model, phase.depth, self.config.new_layer_init)
        self.progress.model_depth = phase.depth
        return model

    # ----- epochs -----
    def _run_epoch(self, phase, train_step, optimizer, plan, state, masks) -> None:
        progress, config = self.progress, self.config
        if progress.window == 0:
            progress.learning_rate = training.learning_rate_for_epoch(
                config, progress.epoch, progress.learning_rate, progress.valid_history)
            progress.epoch_nll = progress.epoch_tokens = progress.epoch_seconds = 0.0
        optimizer.learning_rate.assign(progress.learning_rate)
        state = state if state is not None else self._initial_state(phase.depth)
        epoch_size = data.epoch_size(len(self.corpus.train), config.batch_size, config.num_steps)
        windows = data.make_dataset(self.corpus.train, config.batch_size, config.num_steps, progress.window)
        started = time.time() - progress.epoch_seconds
        for window, (inputs, targets) in enumerate(windows, start=progress.window):
            if masks is None or (config.mask_refresh == "batch" and window > progress.window):
                masks = training.sample_masks(config, plan, (phase.index, progress.epoch, window),
                                              config.batch_size)
            key = tf.constant([phase.index, progress.epoch, window], tf.int64)
            cost, state, _ = train_step(inputs, targets, state, key, masks)
            cost = float(cost)
            if not math.isfinite(cost):
                raise TrainingDiverged(f"The training cost became {cost} in phase {phase.index}, epoch "
                                       f"{progress.epoch + 1}, window {window}; the last good checkpoint "
                                       f"in {self.store.directory} is kept.")
            progress.epoch_nll += cost * config.batch_size
            progress.epoch_tokens += config.batch_size * config.num_steps
            progress.window = window + 1
            progress.epoch_seconds = time.time() - started
            self.windows_run += 1
            self._report_window(phase, window, epoch_size)
            if window + 1 < epoch_size:
                self._maybe_checkpoint(optimizer, state, masks)
        self._end_epoch(phase, optimizer)
        if self._stop_requested():
            raise Interrupted(f"Stopped at the end of an epoch; run the same command again to resume.")

    def _report_window(self, phase, window, epoch_size) -> None:
        every = max(1, int(epoch_size * self.options.progress_every_fraction))
        if (window + 1) % every == 0 or window + 1 == epoch_size:
            progress = self.progress
            used, seen = self.sampling_counters
            sampled = "" if used is None else (f", sampling rule trained on {int(used)} of {int(seen)} "
                                               f"windows since the phase (re)started")
            logging.info("phase %d epoch %d: %3d%% train perplexity %.3f speed %.0f wps%s", phase.index,
                         progress.epoch + 1, 100 * (window + 1) // epoch_size,
                         training.perplexity(progress.epoch_nll, progress.epoch_tokens),
                         progress.epoch_tokens / max(progress.epoch_seconds, 1e-9), sampled)

    def _stop_requested(self) -> bool:
        limit = self.options.stop_after_windows
        return bool((self.guard is not None and self.guard.stop_requested)
                    or (limit and self.windows_run >= limit))

    def _maybe_checkpoint(self, optimizer, state, masks) -> None:
        every = self.options.checkpoint_every_windows
        stop = self._stop_requested()
        if self.distributed:  # per-replica state is not gathered: epoch-end checkpoints only
            every = 0
            if stop:
                raise Interrupted("Stopped mid-epoch; a distributed run resumes from the checkpoint "
                                  "at the end of the previous epoch.")
        if stop or (every and self.windows_run % every == 0):
            self._save(optimizer, state, masks)
        if stop:
            raise Interrupted(f"Stopped after saving a checkpoint in {self.store.directory}; run the "
                              f"same command again to resume.")

    def _end_epoch(self, phase: Phase, optimizer) -> None:
        progress, config = self.progress, self.config
        train_perplexity = training.perplexity(progress.epoch_nll, progress.epoch_tokens)
        valid_perplexity = self._perplexity(*self.valid_windows, config.batch_size)
        progress.valid_history.append(valid_perplexity)
        row = dict(phase=phase.index, depth=phase.depth, epoch=progress.epoch + 1,
                   learning_rate=progress.learning_rate, train_perplexity=train_perplexity,
                   valid_perplexity=valid_perplexity,
                   words_per_second=progress.epoch_tokens / max(progress.epoch_seconds, 1e-9))
        best = training.BestValidation(**progress.best)
        improved = best.improves(valid_perplexity)
        if improved:
            best.valid, best.phase, best.epoch = valid_perplexity, phase.index, progress.epoch + 1
            if config.test_rule == "at_best_valid":
                best.test, best.exact_test = self._test()
                row.update(test_perplexity=best.test, exact_test_perplexity=best.exact_test)
        progress.best = dataclasses.asdict(best)
        progress.rows.append(row)
        self._log_epoch(row)
        progress.epoch, progress.window = progress.epoch + 1, 0
        self._save(optimizer, pin_best=improved)

    def _log_epoch(self, row: Dict) -> None:
        test = f" test perplexity {row['test_perplexity']:.3f}" if "test_perplexity" in row else ""
        logging.info("phase %d (depth %d) epoch %d: learning rate %.5f, train perplexity %.3f, valid "
                     "perplexity %.3f, %.0f wps%s", row["phase"], row["depth"], row["epoch"],
                     row["learning_rate"], row["train_perplexity"], row["valid_perplexity"],
                     row["words_per_second"], test)
        step = len(self.progress.rows)
        with self.writer.as_default(step=step):
            for name in ("train_perplexity", "valid_perplexity", "test_perplexity", "learning_rate"):
                if name in row:
                    tf.summary.scalar(f"head_{row['depth']}/{name}", row[name])
        self.writer.flush()

    # ----- evaluation -----
    def _perplexity(self, inputs, targets, batch_size, weights=None) -> float:
        weights = np.ones(inputs.shape, np.float32) if weights is None else weights
        nll, count, _ = self.evaluate(tf.constant(inputs), tf.constant(targets), tf.constant(weights),
                                      self.model.initial_state(batch_size, self.progress.model_depth))
        return training.perplexity(float(nll), float(count))

    def _test(self):
        """Faithful test perplexity (the reference's windows) and the exact one (every token)."""
        config = self.config
        batch_size, num_steps = config.test_batch_size, config.test_num_steps
        test_windows = data.window_arrays(self.corpus.test, batch_size, num_steps, "test split")
        faithful = self._perplexity(*test_windows, batch_size)
        exact = data.exact_windows(self.corpus.test, batch_size, num_steps)
        exact_perplexity = self._perplexity(exact.inputs, exact.targets, batch_size, exact.weights)
        logging.info("test perplexity %.3f (exact, every token: %.3f)", faithful, exact_perplexity)
        return faithful, exact_perplexity

    # ----- checkpoints and results -----
    def _save(self, optimizer, state=None, masks=None, pin_best: bool = False) -> None:
        arrays = model_arrays(self.model, optimizer, state, masks)
        broken = [key for key, value in arrays.items() if not np.all(np.isfinite(value))]
        if broken:
            raise TrainingDiverged(f"{broken[0]} is not finite in phase {self.progress.phase}, epoch "
                                   f"{self.progress.epoch + 1}; the last good checkpoint in "
                                   f"{self.store.directory} is kept.")
        self.store.save(self.progress, arrays, pin_best)

    def finish(self, arrays) -> None:
        progress, config = self.progress, self.config
        if self.model is None:  # resumed after the last phase had ended
            self.model = lm.build_model(config, progress.model_depth)
            load_model_arrays(self.model, arrays)
            self.evaluate = training.make_eval_step(self.model, progress.model_depth, self.options.jit_compile)
        best = training.BestValidation(**progress.best)
        final = dict(config=config.name, best_valid_perplexity=best.valid, best_phase=best.phase,
                     best_epoch=best.epoch, rows=progress.rows)
        if config.test_rule == "after_training":
            final["test_perplexity"], final["exact_test_perplexity"] = self._test()
            final["valid_perplexity"] = progress.rows[-1]["valid_perplexity"]
            final["train_perplexity"] = progress.rows[-1]["train_perplexity"]
        else:
            final["test_perplexity"], final["exact_test_perplexity"] = best.test, best.exact_test
        final["wall_seconds_this_session"] = time.time() - self.started
        progress.final, progress.finished = final, True
        self._save(optimizer=None)
        write_json_atomically(os.path.join(self.store.save_path, "results.json"), final)
        logging.info("Finished %s: test perplexity %.3f (exact %.3f), best valid %.3f.", config.name,
                     final["test_perplexity"], final["exact_test_perplexity"], best.valid)
