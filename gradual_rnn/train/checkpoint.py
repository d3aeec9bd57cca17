"""Every piece of checkpoint code: the layout of a `--save_path`, writing, reading, the lock, the
config guard, and the upgrade of run folders written by gradual_rnn 0.1.0.

Layout of a `--save_path`::

    config.json                      the run's Config (written with the first checkpoint)
    checkpoints/checkpoint           TensorFlow's index of the checkpoints (tf.train.CheckpointManager)
    checkpoints/ckpt-N.index         a tf.train.Checkpoint: model/, optimizer/, carried/ (LSTM state
    checkpoints/ckpt-N.data-*        and variational masks mid-epoch), readable by tf.train.list_variables
    checkpoints/ckpt-N.progress.json where the run stands at ckpt-N (the JSON sidecar: phase, epoch,
                                     window, learning rate, validation history, best, rows, config)
    checkpoints/best/ckpt-N.*        the best-validation checkpoint, kept by a manager of its own
    checkpoints/unreadable/          checkpoints that could not be read, set aside (never deleted)
    tensorboard/, train.log, results.json, lock

A checkpoint is complete once its sidecar exists: TensorFlow writes the tensors to temporary files
and renames them into place, and the sidecar is written (atomically) after that. A crash at any
moment therefore leaves the previous complete checkpoint readable; an incomplete newest one is
removed, a complete but unreadable one is moved to `unreadable/` and the one before is used.
"""
import dataclasses
import fcntl
import glob
import json
import os
import shutil
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config, ConfigError
from gradual_rnn.nn import language_model as lm
from gradual_rnn.train.legacy_layout import legacy_folders

KEEP_CHECKPOINTS = 3
BEST = "best"
UNREADABLE = "unreadable"
SIDECAR = ".progress.json"
PREFIX = "ckpt"
UPGRADE_COMMAND = "python -m gradual_rnn.upgrade_run --save_path={save_path}"
# Fields that may change between sessions of one run: raising max_epochs extends the last phase.
EXTENSIBLE_FIELDS = ("max_epochs",)


class CheckpointError(RuntimeError):
    """The save path cannot be used, holds a run of another configuration, or cannot be read."""


@dataclasses.dataclass
class Progress:
    """Where a run stands: what the next window to train is, and everything the rules remember."""

    phase: int = 1  # 1-based phase index
    epoch: int = 0  # 0-based epoch within the phase
    window: int = 0  # next window of the epoch (0: the epoch has not started)
    model_depth: int = 0  # depth of the model the checkpoint holds (0: no model yet)
    learning_rate: Optional[float] = None
    valid_history: List[float] = dataclasses.field(default_factory=list)
    best: Dict = dataclasses.field(default_factory=dict)
    epoch_nll: float = 0.0  # training NLL summed over the windows of the epoch done so far
    epoch_tokens: float = 0.0
    epoch_seconds: float = 0.0  # seconds spent training this epoch, summed over sessions
    # Speed: windows timed from call to result, summed over sessions; each session's first window
    # (which compiles the step) is left out.
    epoch_timed_tokens: float = 0.0
    epoch_timed_seconds: float = 0.0
    windows_trained: int = 0  # every window of the run so far (TensorBoard's step)
    rows: List[Dict] = dataclasses.field(default_factory=list)
    finished: bool = False
    final: Dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Restored:
    """A complete, readable checkpoint: its TensorFlow prefix and its progress record."""

    prefix: str
    progress: Progress

    @property
    def name(self) -> str:
        return os.path.basename(self.prefix)


# ----- small file helpers -----
def _write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomically(path: str, payload) -> None:
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        _write_json(temporary, payload)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _number(path: str) -> int:
    """N of `.../ckpt-N` or of any file `.../ckpt-N.<suffix>`."""
    return int(os.path.basename(path).split("-")[1].split(".")[0].split("_")[0])


def _files_of(prefix: str) -> List[str]:
    return glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*")


def _remove(prefix: str) -> None:
    for path in _files_of(prefix):
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)


def prefixes(directory: str) -> List[str]:
    """The checkpoint prefixes of `directory` whose index file exists, oldest first."""
    found = glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*.index"))
    return sorted((path[:-len(".index")] for path in found), key=_number)


# ----- what a checkpoint holds -----
def model_trackable(model: lm.LanguageModel) -> tf.train.Checkpoint:
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
def read_progress(prefix: str) -> Progress:
    with open(prefix + SIDECAR, encoding="utf-8") as handle:
        return Progress(**json.load(handle)["progress"])


def read_tensors(prefix: str) -> Dict[str, np.ndarray]:
    """Every tensor of a checkpoint by its TensorFlow key (reading them all checks the data file)."""
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key != "_CHECKPOINTABLE_OBJECT_GRAPH"}


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
    state = tuple((tensor(f"layer_{i}_c"), tensor(f"layer_{i}_h")) for i in layers)
    masks = [(tensor(f"layer_{i}_output_mask"), tensor(f"layer_{i}_state_mask")) for i in layers]
    return state, (masks if any(mask is not None for pair in masks for mask in pair) else None)


def restore_model(prefix: str, model: lm.LanguageModel) -> None:
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


def load_model(config: Config, prefix: str, depth: Optional[int] = None, **changes) -> lm.LanguageModel:
    """A LanguageModel of `config` (with `changes`) holding layers 1..depth of the checkpoint."""
    progress = read_progress(prefix)
    depth = depth or progress.model_depth
    model = lm.build_model(dataclasses.replace(config, **changes), depth)
    restore_model(prefix, model)
    return model


def read_run_config(save_path: str) -> Config:
    """The Config saved in `save_path/config.json` (a CheckpointError when it is missing or bad)."""
    path = os.path.join(save_path, "config.json")
    if not os.path.isdir(save_path):
        raise CheckpointError(f"--save_path {save_path} is not a folder of a training run.")
    if not os.path.isfile(path):
        raise CheckpointError(f"{save_path} has no config.json: it is not the --save_path of a training run.")
    try:
        with open(path, encoding="utf-8") as handle:
            return Config.from_json(handle.read())
    except (ValueError, TypeError, KeyError, ConfigError) as error:
        raise CheckpointError(f"{path} cannot be read as a Config ({error}).") from None


def check_readable(prefix: str) -> Progress:
    """The progress of a complete checkpoint after reading every tensor; raises when damaged."""
    progress = read_progress(prefix)
    read_tensors(prefix)
    return progress


READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, tf.errors.OpError)


# ----- the store of one run -----
class CheckpointStore:
    """Reads and writes the checkpoints of one save path for one config."""

    def __init__(self, save_path: str, config: Config, restart_from_scratch: bool = False):
        self.save_path = os.path.abspath(save_path)
        self.directory = os.path.join(self.save_path, "checkpoints")
        self.best_directory = os.path.join(self.directory, BEST)
        self.config = config
        self.restart_from_scratch = restart_from_scratch
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
        if legacy_folders(self.save_path):
            raise CheckpointError(
                f"--save_path {self.save_path} holds checkpoints in the gradual_rnn 0.1.0 format "
                f"(folders checkpoints/ckpt-NNNNNN with arrays.npz); convert them once with: "
                f"{UPGRADE_COMMAND.format(save_path=self.save_path)}")
        self._check_config()

    def _check_config(self) -> None:
        path = os.path.join(self.save_path, "config.json")
        if not os.path.exists(path):
            return
        if not self.complete():  # a run that never wrote a checkpoint does not hold its config
            os.remove(path)
            return
        changed = config_changes(path, self.config)
        guarded = [key for key in changed if key not in EXTENSIBLE_FIELDS]
        if guarded:
            details = ", ".join(f"{key}: saved {saved!r} now {now!r}" for key, (saved, now) in changed.items())
            raise CheckpointError(f"--save_path {self.save_path} holds a run with another config "
                                  f"({details}). Use a new --save_path, or the same flags as before.")
        if changed:
            logging.info("Changed for this session: %s.", ", ".join(
                f"{key} {saved} -> {now}" for key, (saved, now) in changed.items()))
            write_json_atomically(path, json.loads(self.config.to_json()))

    def complete(self, directory: Optional[str] = None) -> List[str]:
        """The prefixes of complete checkpoints (tensors and sidecar), oldest first."""
        return [prefix for prefix in prefixes(directory or self.directory) if os.path.exists(prefix + SIDECAR)]

    def _next_number(self) -> int:
        numbers = [_number(prefix) for prefix in prefixes(self.directory) + prefixes(self.best_directory)]
        numbers += [_number(path) for path in glob.glob(os.path.join(glob.escape(self.directory), f"{PREFIX}-*{SIDECAR}"))]
        return max(numbers, default=-1) + 1

    def save(self, progress: Progress, model, optimizer=None, state=None, masks=None,
             pin_best: bool = False, number: Optional[int] = None, best_only: bool = False) -> str:
        """Writes checkpoint N (model, and mid-phase the optimizer; mid-epoch also the carried state
        and masks) with its sidecar; with `pin_best` also into `best/`, with `best_only` only there.
        N is the next free number unless given. Returns the prefix written last."""
        config_path = os.path.join(self.save_path, "config.json")
        if not os.path.exists(config_path):
            write_json_atomically(config_path, json.loads(self.config.to_json()))
        root = _root(model, optimizer, state, masks)
        number = self._next_number() if number is None else number
        prefix = None if best_only else self._write(root, progress, self.directory, number, KEEP_CHECKPOINTS)
        if pin_best or best_only:
            best = self._write(root, progress, self.best_directory, number, 1)
            prefix = prefix or best
        return prefix

    def _write(self, root, progress: Progress, directory: str, number: int, keep: int) -> str:
        manager = tf.train.CheckpointManager(root, directory, max_to_keep=keep, checkpoint_name=PREFIX)
        prefix = os.path.join(directory, f"{PREFIX}-{number}")
        previous = self.complete(directory)
        try:
            manager.save(checkpoint_number=number)
            write_json_atomically(prefix + SIDECAR, dict(progress=progress.to_dict(),
                                                         config=json.loads(self.config.to_json())))
        except (OSError, tf.errors.OpError) as error:
            _remove(prefix)
            kept = (f"the previous checkpoint {os.path.basename(previous[-1])} is intact" if previous
                    else "no checkpoint existed yet")
            message = getattr(error, "message", None) or str(error)
            raise CheckpointError(f"Writing checkpoint {os.path.basename(prefix)} in {directory} failed "
                                  f"({message}); {kept}.") from None
        for stale in glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*{SIDECAR}")):
            if not os.path.exists(stale[:-len(SIDECAR)] + ".index"):
                os.remove(stale)
        return prefix

    def restore(self, accept: Callable[[Progress], bool] = lambda progress: True) -> Optional[Restored]:
        """The newest readable checkpoint whose progress `accept`s, or None when the run is new.

        Incomplete checkpoints (no sidecar: a write that was cut short) are removed; complete ones
        that cannot be read are moved to `unreadable/` with a warning, and the one before is used.
        When checkpoints exist and none can be read, a CheckpointError names them, unless the store
        was made with `restart_from_scratch` (they are then set aside and the run starts over).
        """
        for prefix in prefixes(self.directory):
            if not os.path.exists(prefix + SIDECAR):
                _remove(prefix)
        unreadable = []
        for prefix in reversed(self.complete()):
            try:
                progress = check_readable(prefix)
            except READ_ERRORS as error:
                unreadable.append(f"{os.path.basename(prefix)} ({type(error).__name__})")
                logging.warning("Checkpoint %s cannot be read (%s: %s); falling back to the one before.",
                                prefix, type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                self._set_aside(prefix)
                continue
            if accept(progress):
                logging.info("Restored %s: phase %d, epoch %d, window %d.", prefix, progress.phase,
                             progress.epoch + 1, progress.window)
                return Restored(prefix, progress)
        set_aside = sorted({os.path.basename(path).split(".")[0] for path in
                            glob.glob(os.path.join(glob.escape(self.directory), UNREADABLE, f"{PREFIX}-*"))})
        if (unreadable or set_aside) and not self.complete():
            # Also on a later session: checkpoints set aside earlier still forbid a silent restart.
            self._no_readable_checkpoint(unreadable or [f"{name} (set aside earlier)" for name in set_aside])
        return None

    def _set_aside(self, prefix: str) -> None:
        target = os.path.join(self.directory, UNREADABLE)
        os.makedirs(target, exist_ok=True)
        for path in _files_of(prefix):
            os.replace(path, os.path.join(target, os.path.basename(path)))

    def _no_readable_checkpoint(self, unreadable: Sequence[str]) -> None:
        where = os.path.join(self.directory, UNREADABLE)
        if self.restart_from_scratch:
            logging.warning("No checkpoint of %s can be read (%s); they stay in %s and the run starts "
                            "over, as --restart_from_scratch asks.", self.save_path, ", ".join(unreadable), where)
            return
        raise CheckpointError(f"No checkpoint of {self.save_path} can be read ({', '.join(unreadable)}; "
                              f"moved to {where}, nothing deleted). Restore them, or pass "
                              f"--restart_from_scratch to start this run over.")

    def kept_message(self) -> str:
        """What a failing run leaves behind, for its error message."""
        complete = self.complete()
        if not complete:
            return f"no checkpoint was written yet in {self.directory}"
        return f"the last good checkpoint, {os.path.basename(complete[-1])} in {self.directory}, is kept"

    def best(self) -> Optional[Restored]:
        """The pinned best-validation checkpoint, if it is there and readable."""
        for prefix in reversed(self.complete(self.best_directory)):
            try:
                return Restored(prefix, check_readable(prefix))
            except READ_ERRORS as error:
                logging.warning("Checkpoint %s cannot be read (%s).", prefix, type(error).__name__)
        return None


def config_changes(path: str, config: Config) -> Dict[str, Tuple]:
    """{field: (saved, now)} between the config.json at `path` and `config`."""
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    current = json.loads(config.to_json())
    defaults = json.loads(config.defaults_json())
    # A field added to Config after the run started counts as unchanged while it has its default.
    saved = {**{key: defaults[key] for key in defaults if key not in saved}, **saved}
    return {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current))
            if saved.get(key) != current.get(key)}


def seed_run(save_path: str, config: Config, model: lm.LanguageModel, phase: int) -> str:
    """Writes a first checkpoint into a new `save_path` so that a run of `config` there starts at
    `phase` (epoch 1, window 0) from `model`'s weights (e.g. weights imported from another program).
    The model's depth must be at least phase - 1 (gradual learning then grows it)."""
    store = CheckpointStore(save_path, config)
    if store.complete():
        raise CheckpointError(f"--save_path {store.save_path} already holds checkpoints; seed a new folder.")
    if phase > 1 and model.num_layers < phase - 1:
        raise CheckpointError(f"Phase {phase} needs a model of depth {phase - 1} or more, got {model.num_layers}.")
    return store.save(Progress(phase=phase, model_depth=model.num_layers), model)


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
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        return False
