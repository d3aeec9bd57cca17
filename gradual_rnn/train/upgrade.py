"""Converts a run folder written by gradual_rnn 0.1.0 to today's checkpoints.

0.1.0 wrote each checkpoint as a folder `checkpoints/ckpt-NNNNNN/` (and `checkpoints/best/`) holding
`progress.json` and `arrays.npz`: `model/<layer>/.../<variable>`, `optimizer/NNNN` (the optimizer's
variables in order), `state/K/{c,h}` and `masks/K/{output,state}`. This module is the only one that
knows that format. Each folder is rewritten through `checkpoint.CheckpointStore` with the same
number and progress, then the old folders are moved to `checkpoints/format-0.1.0/` (kept).
"""
import json
import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.nn import language_model as lm
from gradual_rnn.phases import make_phases
from gradual_rnn.train import checkpoint, legacy_layout, steps

KEPT_FOLDER = "format-0.1.0"


def _read_folder(folder: str):
    with open(os.path.join(folder, "progress.json"), encoding="utf-8") as handle:
        progress = checkpoint.Progress(**json.load(handle)["progress"])
    with np.load(os.path.join(folder, "arrays.npz")) as archive:
        return progress, {key: archive[key] for key in archive.files}


def _assign_model(model: lm.LanguageModel, arrays: Dict[str, np.ndarray]) -> None:
    """Matches 0.1.0 keys by (layer name, variable name): Keras's inner path names have changed."""
    by_name = {(key.split("/")[1], key.split("/")[-1]): value for key, value in arrays.items()
               if key.startswith("model/")}
    for variable in model.weights:
        name = (variable.path.split("/")[0], variable.path.split("/")[-1])
        if name not in by_name:
            raise checkpoint.CheckpointError(f"The 0.1.0 checkpoint lacks model/{'/'.join(name)}.")
        variable.assign(by_name[name])


def _optimizer(config: Config, model: lm.LanguageModel, progress, arrays):
    keys = sorted(key for key in arrays if key.startswith("optimizer/"))
    if not keys:
        return None
    lm.freeze(model, make_phases(config)[progress.phase - 1].frozen_layers)
    optimizer = steps.make_optimizer(config)
    optimizer.build(model.trainable_variables)
    for variable, key in zip(optimizer.variables, keys, strict=True):
        variable.assign(arrays[key])
    return optimizer


def _carried(arrays, depth: int):
    if "state/0/c" not in arrays:
        return None, None
    state = tuple((tf.constant(arrays[f"state/{i}/c"]), tf.constant(arrays[f"state/{i}/h"])) for i in range(depth))
    if not any(key.startswith("masks/") for key in arrays):
        return state, None
    return state, [tuple(tf.constant(arrays[key]) if key in arrays else None
                         for key in (f"masks/{i}/output", f"masks/{i}/state")) for i in range(depth)]


def _convert(store: checkpoint.CheckpointStore, config: Config, folder: str, pin_best: bool) -> None:
    progress, arrays = _read_folder(folder)
    model = lm.build_model(config, progress.model_depth)
    _assign_model(model, arrays)
    optimizer = _optimizer(config, model, progress, arrays)
    state, masks = _carried(arrays, progress.model_depth)
    number = None if pin_best else int(os.path.basename(folder).split("-")[1])
    store.save(progress, model, optimizer, state, masks, number=number, best_only=pin_best)
    logging.info("Converted %s (phase %d, epoch %d, window %d).", folder, progress.phase,
                 progress.epoch + 1, progress.window)


def upgrade_run(save_path: str) -> List[str]:
    """Converts every 0.1.0 checkpoint folder of `save_path`; returns the folders converted."""
    folders = legacy_layout.legacy_folders(save_path)
    if not folders:
        raise checkpoint.CheckpointError(legacy_layout.nothing_to_upgrade(save_path))
    config = checkpoint.read_run_config(save_path)
    directory = os.path.join(save_path, "checkpoints")
    kept = os.path.join(directory, KEPT_FOLDER)
    os.makedirs(kept, exist_ok=True)
    for folder in folders:  # moved aside first, so that the store sees no old format
        os.replace(folder, os.path.join(kept, os.path.basename(folder)))
    latest = os.path.join(directory, "latest")
    if os.path.exists(latest):
        os.replace(latest, os.path.join(kept, "latest"))
    store = checkpoint.CheckpointStore(save_path, config)
    for name in sorted(os.listdir(kept)):
        if os.path.isdir(os.path.join(kept, name)) and name != checkpoint.BEST:
            _convert(store, config, os.path.join(kept, name), pin_best=False)
    if os.path.isdir(os.path.join(kept, checkpoint.BEST)):
        _convert(store, config, os.path.join(kept, checkpoint.BEST), pin_best=True)
    return folders


def upgrade_folder_command(save_path: str) -> None:
    """`python -m gradual_rnn.upgrade_run`, after its TensorFlow-free checks: converts, prints one JSON
    line, or exits with one line."""
    try:
        converted = upgrade_run(save_path)
    except (checkpoint.CheckpointError, OSError, ValueError) as error:
        raise SystemExit(f"{type(error).__name__}: {error}") from None
    print(json.dumps(dict(save_path=save_path, converted=[os.path.basename(f) for f in converted],
                          kept_in=os.path.join(save_path, "checkpoints", KEPT_FOLDER))))
