"""Self-describing, atomically written checkpoints of a training run, and the run's progress record.

Layout of a `--save_path`::

    config.json                 the run's Config (a changed config against it is refused)
    checkpoints/ckpt-000042/    progress.json (phase, epoch, window, LR, validation history, best,
                                per-epoch rows, config) and arrays.npz (model and optimizer
                                variables, carried LSTM state, variational masks)
    checkpoints/latest          name of the newest complete checkpoint
    checkpoints/best/           a copy of the checkpoint with the best validation so far
    tensorboard/, results.json

A checkpoint is written into a temporary folder and renamed into place, then `latest` is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact and readable. When the
newest checkpoint cannot be read, the previous one is used, with a warning.
"""
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from absl import logging

from gradual_rnn.configs import Config

KEEP_CHECKPOINTS = 3
BEST = "best"  # folder of checkpoints/ pinned to the best-validation weights


class CheckpointError(RuntimeError):
    """The save path cannot be used, or holds a run of another configuration."""


@dataclasses.dataclass
class Progress:
    """Where a run stands: what the next window to train is, and everything the rules remember."""

    phase: int = 1  # 1-based phase index
    epoch: int = 0  # 0-based epoch within the phase
    window: int = 0  # next window of the epoch (0: the epoch has not started)
    model_depth: int = 0  # depth of the model the arrays hold (0: no model yet)
    learning_rate: Optional[float] = None
    valid_history: List[float] = dataclasses.field(default_factory=list)
    best: Dict = dataclasses.field(default_factory=dict)
    epoch_nll: float = 0.0  # training NLL summed over the windows of the epoch done so far
    epoch_tokens: float = 0.0
    epoch_seconds: float = 0.0
    rows: List[Dict] = dataclasses.field(default_factory=list)
    finished: bool = False
    final: Dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def _write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomically(path: str, payload) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    _write_json(temporary, payload)
    os.replace(temporary, path)


# What reading a damaged checkpoint folder can raise.
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def read_folder(folder: str) -> Tuple[Dict, Dict[str, np.ndarray]]:
    """The progress record (a dict) and the arrays of one checkpoint folder; READ_ERRORS if damaged."""
    with open(os.path.join(folder, "progress.json"), encoding="utf-8") as handle:
        progress = json.load(handle)["progress"]
    with np.load(os.path.join(folder, "arrays.npz")) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return progress, arrays


class CheckpointStore:
    """Reads and writes the checkpoints of one save path for one config."""

    def __init__(self, save_path: str, config: Config):
        self.save_path = os.path.abspath(save_path)
        self.directory = os.path.join(self.save_path, "checkpoints")
        self.config = config
        self._prepare()

    def _prepare(self) -> None:
        if os.path.exists(self.save_path) and not os.path.isdir(self.save_path):
            raise CheckpointError(f"--save_path {self.save_path} exists and is not a directory.")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as error:
            raise CheckpointError(f"--save_path {self.save_path} cannot be created: {error}") from None
        if not os.access(self.save_path, os.W_OK):
            raise CheckpointError(f"--save_path {self.save_path} is not writable.")
        self._check_config()

    def _check_config(self) -> None:
        path = os.path.join(self.save_path, "config.json")
        if not os.path.exists(path):
            write_json_atomically(path, json.loads(self.config.to_json()))
            return
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        current = json.loads(self.config.to_json())
        defaults = json.loads(self.config.defaults_json())
        # A field added to Config after the run started counts as unchanged while it has its default.
        saved = {**{key: defaults[key] for key in defaults if key not in saved}, **saved}
        changed = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
        if changed:
            details = ", ".join(f"{key}: saved {saved.get(key)!r} now {current.get(key)!r}" for key in changed)
            raise CheckpointError(f"--save_path {self.save_path} holds a run with another config "
                                  f"({details}). Use a new --save_path, or the same flags as before.")

    def _names(self) -> List[str]:
        return sorted(name for name in os.listdir(self.directory)
                      if name.startswith("ckpt-") and ".tmp" not in name)

    def save(self, progress: Progress, arrays: Dict[str, np.ndarray], pin_best: bool = False) -> str:
        """Writes a new checkpoint atomically and returns its folder. With `pin_best`, it is also
        copied to `checkpoints/best`, which pruning never removes (the best-validation weights)."""
        names = self._names()
        number = int(names[-1].split("-")[1]) + 1 if names else 0
        name = f"ckpt-{number:06d}"
        temporary = os.path.join(self.directory, f"{name}.tmp-{os.getpid()}")
        os.makedirs(temporary)
        try:
            _write_json(os.path.join(temporary, "progress.json"),
                        dict(progress=progress.to_dict(), config=json.loads(self.config.to_json())))
            with open(os.path.join(temporary, "arrays.npz"), "wb") as handle:
                np.savez(handle, **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temporary, os.path.join(self.directory, name))
        except OSError as error:
            shutil.rmtree(temporary, ignore_errors=True)
            kept = f"the previous checkpoint {names[-1]} is intact" if names else "no checkpoint existed yet"
            raise CheckpointError(f"Writing checkpoint {name} in {self.directory} failed ({error}); "
                                  f"{kept}.") from None
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        latest = os.path.join(self.directory, "latest")
        with open(f"{latest}.tmp", "w", encoding="utf-8") as handle:
            handle.write(name)
        os.replace(f"{latest}.tmp", latest)
        for old in self._names()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)
        if pin_best:
            self._pin_best(os.path.join(self.directory, name))
        return os.path.join(self.directory, name)

    def _pin_best(self, folder: str) -> None:
        """Replaces `checkpoints/best` by a copy of `folder`; a crash leaves a complete old or new copy."""
        best = os.path.join(self.directory, BEST)
        temporary, retired = f"{best}.tmp-{os.getpid()}", f"{best}.old-{os.getpid()}"
        shutil.copytree(folder, temporary)
        if os.path.isdir(best):
            os.rename(best, retired)
        os.rename(temporary, best)
        shutil.rmtree(retired, ignore_errors=True)

    def restore(self, accept: Callable[[Progress], bool] = lambda progress: True
                ) -> Optional[Tuple[Progress, Dict[str, np.ndarray]]]:
        """The newest readable checkpoint whose progress `accept`s, or None when there is none."""
        for name in reversed(self._names()):
            try:
                restored = self._load(name)
                if accept(restored[0]):
                    return restored
            except READ_ERRORS as error:
                logging.warning("Checkpoint %s cannot be read (%s); falling back to the one before.",
                                name, error)
        return None

    def _load(self, name: str) -> Tuple[Progress, Dict[str, np.ndarray]]:
        folder = os.path.join(self.directory, name)
        saved, arrays = read_folder(folder)
        progress = Progress(**saved)
        logging.info("Restored %s: phase %d, epoch %d, window %d.", folder, progress.phase,
                     progress.epoch + 1, progress.window)
        return progress, arrays


class RunLock:
    """An exclusive lock on a save path, so that two runs never write the same checkpoints.

    Uses `flock` on `save_path/lock`: the operating system releases it when the holder dies, so a
    killed run never leaves a stale lock behind.
    """

    def __init__(self, save_path: str):
        self.path = os.path.join(save_path, "lock")
        self._handle = None

    def __enter__(self):
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CheckpointError(f"--save_path {os.path.dirname(self.path)} is in use by {holder}; "
                                  f"two runs cannot share a save path.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        return False
