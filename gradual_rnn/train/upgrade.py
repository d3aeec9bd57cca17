"""Converts a run folder written by gradual_rnn 0.1.0 to today's checkpoints.

0.1.0 wrote each checkpoint as a folder `checkpoints/ckpt-NNNNNN/` (and `checkpoints/best/`) holding
a progress file and `arrays.npz`: `model/<layer>/.../<variable>`, `optimizer/NNNN` (the optimizer's
variables in order), `state/K/{c,h}` and `masks/K/{output,state}`. This module is the only one that
knows that format. Every folder is read (and checked) before anything changes, so a damaged run
folder is refused as it is and the upgrade can be tried again. Each folder is then rewritten
through `checkpoint.CheckpointStore` with the same number and progress, and the old folders are
moved to `checkpoints/format-0.1.0/` (kept).
"""
import dataclasses
import json
import os
import zipfile
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.nn import language_model as lm
from gradual_rnn.phases import make_phases
from gradual_rnn.train import checkpoint, steps
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress
from gradual_rnn.train.run_folder import BEST, RunFolder, RunFolderError


@dataclasses.dataclass(frozen=True)
class LegacyCheckpoint:
    """One 0.1.0 checkpoint folder, read whole."""

    folder: str
    progress: Progress
    arrays: Dict[str, np.ndarray]

    @property
    def is_best(self) -> bool:
        return os.path.basename(self.folder) == BEST


def read_legacy(folder: str) -> LegacyCheckpoint:
    """Reads a 0.1.0 checkpoint folder; a one-line RunFolderError names what is damaged."""
    progress_file = RunFolder.legacy_progress_file(folder)
    try:
        with open(progress_file, encoding="utf-8") as handle:
            progress = Progress.from_dict(json.load(handle)["progress"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunFolderError(f"{progress_file} holds no 0.1.0 progress record ({type(error).__name__}: "
                             f"{error}); nothing was changed.") from None
    arrays_file = RunFolder.legacy_arrays_file(folder)
    try:
        with np.load(arrays_file) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{arrays_file} cannot be read ({type(error).__name__}: {error}); nothing "
                             f"was changed.") from None
    return LegacyCheckpoint(folder, progress, arrays)


def _assign_model(model: lm.LanguageModel, arrays: Dict[str, np.ndarray], folder: str) -> None:
    """Matches 0.1.0 keys by (layer name, variable name): Keras's inner path names have changed."""
    by_name = {(key.split("/")[1], key.split("/")[-1]): value for key, value in arrays.items()
               if key.startswith("model/")}
    for variable in model.weights:
        name = (variable.path.split("/")[0], variable.path.split("/")[-1])
        if name not in by_name:
            raise RunFolderError(f"The 0.1.0 checkpoint {folder} lacks model/{'/'.join(name)}.")
        if tuple(by_name[name].shape) != tuple(variable.shape):
            raise RunFolderError(f"The 0.1.0 checkpoint {folder} holds model/{'/'.join(name)} of shape "
                                 f"{by_name[name].shape}; the run's config needs {tuple(variable.shape)}.")
        variable.assign(by_name[name])


def _optimizer(config: Config, model: lm.LanguageModel, legacy: LegacyCheckpoint):
    keys = sorted(key for key in legacy.arrays if key.startswith("optimizer/"))
    if not keys:
        return None
    lm.freeze(model, make_phases(config)[legacy.progress.phase - 1].frozen_layers)
    optimizer = steps.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    if len(keys) != len(optimizer.variables):
        raise RunFolderError(f"The 0.1.0 checkpoint {legacy.folder} holds {len(keys)} optimizer variables; "
                             f"the run's optimizer has {len(optimizer.variables)}.")
    for variable, key in zip(optimizer.variables, keys):
        variable.assign(legacy.arrays[key])
    return optimizer


def _carried(arrays, depth: int):
    if "state/0/c" not in arrays:
        return None, None
    from gradual_rnn.nn.lstm import LSTMState

    state = tuple(LSTMState(tf.constant(arrays[f"state/{i}/c"]), tf.constant(arrays[f"state/{i}/h"]))
                  for i in range(depth))
    if not any(key.startswith("masks/") for key in arrays):
        return state, None
    return state, [tuple(tf.constant(arrays[key]) if key in arrays else None
                         for key in (f"masks/{i}/output", f"masks/{i}/state")) for i in range(depth)]


def _model_of(config: Config, legacy: LegacyCheckpoint) -> lm.LanguageModel:
    model = build_model(config, legacy.progress.model_depth)
    _assign_model(model, legacy.arrays, legacy.folder)
    return model


def _convert(store: checkpoint.CheckpointStore, config: Config, legacy: LegacyCheckpoint) -> None:
    model = _model_of(config, legacy)
    optimizer = _optimizer(config, model, legacy)
    state, masks = _carried(legacy.arrays, legacy.progress.model_depth)
    number = None if legacy.is_best else int(os.path.basename(legacy.folder).split("-")[1])
    store.save(legacy.progress, model, optimizer, state, masks, number=number, best_only=legacy.is_best)
    progress = legacy.progress
    logging.info("Converted %s (phase %d, epoch %d, window %d).", legacy.folder, progress.phase,
                 progress.epoch + 1, progress.window)


def upgrade_run(save_path: str) -> List[str]:
    """Converts every 0.1.0 checkpoint folder of `save_path`; returns the folders converted."""
    folder = RunFolder(save_path)
    found = folder.legacy_folders()
    if not found:
        raise RunFolderError(folder.nothing_to_upgrade())
    config = folder.read_config()
    legacy = [read_legacy(path) for path in found]  # everything is read before anything changes
    for checkpoint_read in legacy:
        _model_of(config, checkpoint_read)
    os.makedirs(folder.legacy_kept, exist_ok=True)
    for path in found:  # moved aside first, so that the store sees no old format
        os.replace(path, os.path.join(folder.legacy_kept, os.path.basename(path)))
    latest = os.path.join(folder.checkpoints, "latest")
    if os.path.exists(latest):
        os.replace(latest, os.path.join(folder.legacy_kept, "latest"))
    store = checkpoint.CheckpointStore(folder, config)
    for read in sorted(legacy, key=lambda item: item.is_best):  # the best copy last
        moved = dataclasses.replace(read, folder=os.path.join(folder.legacy_kept, os.path.basename(read.folder)))
        _convert(store, config, moved)
    return found
