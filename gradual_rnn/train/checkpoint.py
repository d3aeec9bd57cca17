"""A run's checkpoints as tensors: what a `tf.train.Checkpoint` of the run holds, writing it through
`tf.train.CheckpointManager`, reading it back, and which checkpoint a session resumes from.

The folder's layout (names, sidecars, `best/`, `unreadable/`) is `run_folder.RunFolder`'s; this
module only adds TensorFlow's side: the tensors.
"""
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.nn.language_model import LanguageModel
from gradual_rnn.nn.lstm import LSTMState
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress
from gradual_rnn.train.run_folder import (EXTENSIBLE_FIELDS, KEEP_CHECKPOINTS, PREFIX, RunCheckpoint,
                                          RunFolder, RunFolderError)

READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, RunFolderError, tf.errors.OpError)


# ----- what a checkpoint holds -----
def model_trackable(model: LanguageModel) -> tf.train.Checkpoint:
    """The model's weights by layer and weight name: `embedding/embeddings`, `lstm_K/kernel`,
    `lstm_K/recurrent_kernel`, `lstm_K/bias` (Keras layout, gates i, f, c, o), `head/...`.

    The weights hang directly below their layer's node, so that these short paths are the names
    TensorFlow gives them (it names a variable by its shortest path from the root, and the
    optimizer holds references to the same variables)."""
    layers = [model.embedding, *model.lstm_layers, model.head]
    return tf.train.Checkpoint(**{layer.name: tf.train.Checkpoint(**{weight.name: weight for weight in layer.weights})
                                  for layer in layers})


def _carried_trackable(state, masks) -> Optional[tf.train.Checkpoint]:
    """The carried LSTM state and the variational masks of a mid-epoch checkpoint, as variables
    `layer_K_c`, `layer_K_h`, `layer_K_output_mask`, `layer_K_state_mask`."""
    if state is None:
        return None
    tensors = {}
    for index, (cell, hidden) in enumerate(state):
        tensors[f"layer_{index + 1}_c"], tensors[f"layer_{index + 1}_h"] = cell, hidden
    for index, pair in enumerate(masks or ()):
        for kind, mask in zip(("output", "state"), pair):
            if mask is not None:
                tensors[f"layer_{index + 1}_{kind}_mask"] = mask
    return tf.train.Checkpoint(**{key: tf.Variable(value, trainable=False) for key, value in tensors.items()})


def _root(model, optimizer=None, state=None, masks=None) -> tf.train.Checkpoint:
    parts = dict(model=model_trackable(model))
    if optimizer is not None:
        parts["optimizer"] = optimizer
    carried = _carried_trackable(state, masks)
    if carried is not None:
        parts["carried"] = carried
    return tf.train.Checkpoint(**parts)


def first_non_finite(model, optimizer=None, state=None) -> Optional[str]:
    """The name of the first non-finite value about to be saved, or None."""
    tensors = [(variable.path, variable) for variable in model.weights]
    tensors += [(f"optimizer/{variable.path}", variable) for variable in getattr(optimizer, "variables", [])]
    tensors += [(f"carried state of layer {index + 1}", tf.stack(pair)) for index, pair in enumerate(state or ())]
    for name, value in tensors:
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            return name
    return None


# ----- reading -----
def read_tensors(prefix: str) -> dict:
    """Every tensor of a checkpoint by its TensorFlow key (reading them all checks the data file)."""
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def check_tensors(prefix: str) -> None:
    """Raises a RunFolderError naming the checkpoint when its tensors cannot be read."""
    try:
        read_tensors(prefix)
    except READ_ERRORS as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RunFolderError(f"Checkpoint {prefix} cannot be read ({type(error).__name__}: {detail}).") from None


def _key(*parts: str) -> str:
    return "/".join(parts) + "/.ATTRIBUTES/VARIABLE_VALUE"


def read_carried(prefix: str, depth: int):
    """(state, masks) saved mid-epoch, as tensors, or (None, None) when the checkpoint holds none."""
    reader = tf.train.load_checkpoint(prefix)
    saved = reader.get_variable_to_shape_map()

    def tensor(name):
        key = _key("carried", name)
        return tf.constant(reader.get_tensor(key)) if key in saved else None

    if tensor("layer_1_c") is None:
        return None, None
    layers = range(1, depth + 1)
    state = tuple(LSTMState(tensor(f"layer_{i}_c"), tensor(f"layer_{i}_h")) for i in layers)
    masks = [(tensor(f"layer_{i}_output_mask"), tensor(f"layer_{i}_state_mask")) for i in layers]
    return state, (masks if any(mask is not None for pair in masks for mask in pair) else None)


def restore_model(prefix: str, model: LanguageModel) -> None:
    """Assigns the checkpoint's weights to `model` (of the checkpoint's depth or less)."""
    status = tf.train.Checkpoint(model=model_trackable(model)).read(prefix)
    status.assert_existing_objects_matched()
    status.expect_partial()


def restore_optimizer(prefix: str, optimizer) -> bool:
    """Assigns a built optimizer's variables from the checkpoint; False when it holds none."""
    if not any(key.startswith("optimizer/") for key in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()):
        return False
    status = tf.train.Checkpoint(optimizer=optimizer).read(prefix)
    status.assert_existing_objects_matched()
    status.expect_partial()
    return True


def load_model(config: Config, checkpoint: RunCheckpoint, depth: Optional[int] = None) -> LanguageModel:
    """A LanguageModel of `config` holding layers 1..depth (default: all it holds) of the checkpoint."""
    model = build_model(config, depth or checkpoint.progress.model_depth)
    restore_model(checkpoint.prefix, model)
    return model


# ----- the store of one run -----
class CheckpointStore:
    """Writes the checkpoints of one run folder for one config, and finds the one to resume from."""

    def __init__(self, folder: RunFolder, config: Config, restart_from_scratch: bool = False):
        self.folder, self.config = folder, config
        self.restart_from_scratch = restart_from_scratch
        self.writes = 0  # checkpoints written by this store (this session)
        folder.prepare()
        self._check_config()

    def _check_config(self) -> None:
        if not os.path.exists(self.folder.config_file):
            return
        if not self.folder.complete():  # a run that never wrote a checkpoint does not hold its config
            self.folder.remove_config()
            return
        changed = self.folder.config_changes(self.config)
        guarded = [key for key in changed if key not in EXTENSIBLE_FIELDS]
        if guarded:
            details = ", ".join(f"{key}: saved {saved!r} now {now!r}" for key, (saved, now) in changed.items())
            raise RunFolderError(f"--save_path {self.folder.path} holds a run with another config "
                                 f"({details}). Use a new --save_path, or the same flags as before.")
        if changed:
            logging.info("Changed for this session: %s.", ", ".join(
                f"{key} {saved} -> {now}" for key, (saved, now) in changed.items()))
            self.folder.write_config(self.config)

    def save(self, progress: Progress, model, optimizer=None, state=None, masks=None,
             pin_best: bool = False, number: Optional[int] = None, best_only: bool = False) -> str:
        """Writes checkpoint N (model, and mid-phase the optimizer; mid-epoch also the carried state
        and masks) with its sidecar; with `pin_best` also into `best/`, with `best_only` only there.
        N is the next free number unless given. Returns the prefix written last."""
        if not os.path.exists(self.folder.config_file):
            self.folder.write_config(self.config)
        root = _root(model, optimizer, state, masks)
        number = self.folder.next_number() if number is None else number
        prefix = None if best_only else self._write(root, progress, number, best=False)
        if pin_best or best_only:
            best = self._write(root, progress, number, best=True)
            prefix = prefix or best
        return prefix

    def _write(self, root, progress: Progress, number: int, best: bool) -> str:
        directory = self.folder.best if best else self.folder.checkpoints
        manager = tf.train.CheckpointManager(root, directory, max_to_keep=1 if best else KEEP_CHECKPOINTS,
                                             checkpoint_name=PREFIX)
        prefix = self.folder.prefix(number, best)
        previous = self.folder.complete(best)
        try:
            manager.save(checkpoint_number=number)
            self.folder.write_sidecar(prefix, progress, self.config)
        except (OSError, tf.errors.OpError) as error:
            self.folder.remove(prefix)
            kept = (f"the previous checkpoint {os.path.basename(previous[-1])} is intact" if previous
                    else "no checkpoint existed yet")
            message = getattr(error, "message", None) or str(error)
            raise RunFolderError(f"Writing checkpoint {os.path.basename(prefix)} in {directory} failed "
                                 f"({message}); {kept}.") from None
        self.folder.remove_stale_sidecars(best)
        self.writes += 1
        return prefix

    def restore(self, accept: Callable[[Progress], bool] = lambda progress: True,
                valid: Optional[Callable[[Progress], Optional[str]]] = None) -> Optional[RunCheckpoint]:
        """The newest usable checkpoint whose progress `accept`s, or None when the run is new.

        Leftovers of cut writes (`ckpt-N_temp`, temporary files) are removed. Nothing whose tensors
        can be read is deleted: a checkpoint without its sidecar, one that cannot be read, and one
        whose sidecar `valid` refuses (it returns what is wrong) are moved to `unreadable/` with a
        warning, and the one before is used. When checkpoints existed and none is usable, a
        RunFolderError names them, unless the store was made with `restart_from_scratch`.
        """
        for path in self.folder.remove_temporary_writes():
            logging.warning("Removed %s, left by a checkpoint write that was cut short.", path)
        unusable = [self._set_aside(prefix, "no progress sidecar") for prefix in self.folder.without_sidecar()]
        for prefix in reversed(self.folder.complete()):
            problem = self._problem(prefix, valid)
            if problem:
                unusable.append(self._set_aside(prefix, problem))
                continue
            progress = self.folder.read_progress(prefix)
            if accept(progress):
                return RunCheckpoint(prefix, progress)
        set_aside = self.folder.set_aside_names()
        if (unusable or set_aside) and not self.folder.complete():
            # Also on a later session: checkpoints set aside earlier still forbid a silent restart.
            self._no_usable_checkpoint(unusable or [f"{name} (set aside earlier)" for name in set_aside])
        return None

    def _problem(self, prefix: str, valid) -> Optional[str]:
        """What makes a complete checkpoint unusable, or None."""
        try:
            progress = self.folder.read_progress(prefix)
            read_tensors(prefix)
        except READ_ERRORS as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            return f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        return valid(progress) if valid is not None else None

    def _set_aside(self, prefix: str, reason: str) -> str:
        where = self.folder.set_aside(prefix)
        logging.warning("Checkpoint %s is not usable (%s); it is kept in %s, and the one before is used.",
                        prefix, reason, where)
        return f"{os.path.basename(prefix)} ({reason.split(':')[0]})"

    def _no_usable_checkpoint(self, unusable) -> None:
        where = self.folder.unreadable
        if self.restart_from_scratch:
            logging.warning("No checkpoint of %s can be used (%s); they stay in %s and the run starts "
                            "over, as --restart_from_scratch asks.", self.folder.path, ", ".join(unusable), where)
            return
        raise RunFolderError(f"No checkpoint of {self.folder.path} can be used ({', '.join(unusable)}; "
                             f"moved to {where}, nothing deleted). Restore them, or pass "
                             f"--restart_from_scratch to start this run over.")

    def kept_message(self) -> str:
        """What a failing run leaves behind, for its error message."""
        complete = self.folder.complete()
        if not complete:
            return f"no checkpoint was written yet in {self.folder.checkpoints}"
        return (f"the last good checkpoint, {os.path.basename(complete[-1])} in {self.folder.checkpoints}, "
                f"is kept")


def seed_run(save_path: str, config: Config, model: LanguageModel, phase: int) -> str:
    """Writes a first checkpoint into a new `save_path` so that a run of `config` there starts at
    `phase` (epoch 1, window 0) from `model`'s weights (e.g. weights imported from another program).
    The model's depth must be at least phase - 1 (gradual learning then grows it)."""
    store = CheckpointStore(RunFolder(save_path), config)
    if store.folder.complete():
        raise RunFolderError(f"--save_path {store.folder.path} already holds checkpoints; seed a new folder.")
    if phase > 1 and model.num_layers < phase - 1:
        raise RunFolderError(f"Phase {phase} needs a model of depth {phase - 1} or more, got {model.num_layers}.")
    return store.save(Progress(phase=phase, model_depth=model.num_layers), model)
