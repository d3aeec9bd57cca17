"""The layout of a run folder (a `--save_path`): the one module that knows it. TensorFlow-free, so
the commands can check a folder, and the report can read one, before TensorFlow loads.

    config.json                        the run's Config (written with the first checkpoint)
    corpus.json                        what the run trains on: the corpus fingerprint, the sizes of
                                       its splits, smoke_test, map_unknown_to_unk, and the SHA-256
                                       of vocab.txt (a resume on other data is refused)
    vocab.txt                          the vocabulary, one word per line; a word's id is its line
    checkpoints/checkpoint             TensorFlow's index of the checkpoints
    checkpoints/ckpt-N.index, .data-*  a tf.train.Checkpoint (model/, optimizer/ within a phase,
                                       carried/ LSTM state and masks within an epoch)
    checkpoints/ckpt-N.progress.json   the sidecar: where the run stands at ckpt-N (`Progress`) and
                                       the config; a checkpoint is complete once it exists
    checkpoints/best/ckpt-N.*          the best-validation checkpoint
    checkpoints/unreadable/            checkpoints set aside (unreadable, or without a valid
                                       sidecar): kept, never deleted
    checkpoints/format-0.1.0/          the folders of a run written by gradual_rnn 0.1.0, once upgraded
    tensorboard/, train.log, results.json (strict JSON, written when the run finishes), lock

TensorFlow writes a checkpoint's tensors into `ckpt-N_temp/` and renames them into place; the
sidecar is written (atomically) after that. A crash at any moment therefore leaves the previous
complete checkpoint readable.
"""
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import shutil
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence

from absl import logging

from gradual_rnn.configs import Config, ConfigError
from gradual_rnn.train.progress import Progress

PREFIX = "ckpt"
SIDECAR = ".progress.json"
BEST = "best"
UNREADABLE = "unreadable"
LEGACY_KEPT = "format-0.1.0"
KEEP_CHECKPOINTS = 3
UPGRADE_COMMAND = "python -m gradual_rnn upgrade --save_path={save_path}"
# Fields that may change between sessions of one run: raising max_epochs extends the last phase.
EXTENSIBLE_FIELDS = ("max_epochs",)


class RunFolderError(RuntimeError):
    """A save path that cannot be used, holds a run of another config or corpus, or cannot be read."""


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """A complete checkpoint of a run: its TensorFlow prefix and its progress record."""

    prefix: str
    progress: Progress

    @property
    def name(self) -> str:
        """`ckpt-N`."""
        return os.path.basename(self.prefix)

    @property
    def pinned_best(self) -> bool:
        """Whether it is the copy kept in `checkpoints/best/`."""
        return os.path.basename(os.path.dirname(self.prefix)) == BEST

    @property
    def label(self) -> str:
        """`best` for the pinned best-validation copy, else its name."""
        return BEST if self.pinned_best else self.name


def write_text_atomically(path: str, text: str) -> None:
    """Writes `text` to a temporary file, then renames it into place; a failed write (e.g. a full
    disk) is a RunFolderError naming the file, and leaves the previous file as it was."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        raise RunFolderError(f"Writing {path} failed ({error.strerror or error}); the file is as it "
                             f"was before.") from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomically(path: str, payload) -> None:
    """Writes strict JSON (no NaN or Infinity) atomically (see `write_text_atomically`)."""
    write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True, allow_nan=False))


def read_json(path: str, what: str):
    """The JSON at `path`; a one-line RunFolderError naming the file when it is missing or garbled."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing: {what} cannot be read.") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise RunFolderError(f"{path} cannot be read as JSON ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}); expected {what}.") from None


def checkpoint_number(path: str) -> int:
    """N of `.../ckpt-N`, of any file `.../ckpt-N.<suffix>`, or of `.../ckpt-N_temp`."""
    return int(os.path.basename(path).split("-")[1].split(".")[0].split("_")[0])


def vocabulary_text(words: Sequence[str]) -> str:
    """vocab.txt's content: one word per line, id = line number."""
    return "".join(f"{word}\n" for word in words)


def vocabulary_sha256(words: Sequence[str]) -> str:
    return hashlib.sha256(vocabulary_text(words).encode("utf-8")).hexdigest()


class RunFolder:
    """The paths of one run folder and every read and write that knows them."""

    def __init__(self, save_path: str):
        self.path = os.path.abspath(save_path)
        self.checkpoints = os.path.join(self.path, "checkpoints")
        self.best = os.path.join(self.checkpoints, BEST)
        self.unreadable = os.path.join(self.checkpoints, UNREADABLE)
        self.config_file = os.path.join(self.path, "config.json")
        self.corpus_file = os.path.join(self.path, "corpus.json")
        self.vocabulary_file = os.path.join(self.path, "vocab.txt")
        self.results_file = os.path.join(self.path, "results.json")
        self.log_file = os.path.join(self.path, "train.log")
        self.summaries = os.path.join(self.path, "tensorboard")  # TensorBoard event files
        self.lock_file = os.path.join(self.path, "lock")

    # ----- the folder itself -----
    def check_is_run(self) -> None:
        """Raises unless the folder exists and holds a run's config."""
        if not os.path.isdir(self.path):
            raise RunFolderError(f"--save_path {self.path} is not a folder of a training run.")
        if not os.path.isfile(self.config_file):
            raise RunFolderError(f"{self.path} has no config.json: it is not the --save_path of a "
                                 f"training run.")

    def prepare(self) -> None:
        """Creates the folder (and its checkpoints/) for writing; raises when it cannot be used."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunFolderError(f"--save_path {self.path} exists and is not a directory.")
        try:
            os.makedirs(self.checkpoints, exist_ok=True)
        except OSError as error:
            raise RunFolderError(f"--save_path {self.path} cannot be created: {error}") from None
        if not os.access(self.path, os.W_OK):
            raise RunFolderError(f"--save_path {self.path} is not writable.")
        if self.legacy_folders():
            raise RunFolderError(
                f"--save_path {self.path} holds checkpoints in the gradual_rnn 0.1.0 format (folders "
                f"checkpoints/ckpt-NNNNNN with arrays.npz); convert them once with: "
                f"{UPGRADE_COMMAND.format(save_path=self.path)}")

    def lock(self) -> "RunLock":
        return RunLock(self.lock_file)

    # ----- the config -----
    def read_config(self) -> Config:
        """The Config saved in config.json (a one-line RunFolderError when missing or bad)."""
        self.check_is_run()
        values = read_json(self.config_file, "the run's config")
        try:
            return Config.from_json(json.dumps(values))
        except (ValueError, TypeError, KeyError, ConfigError) as error:
            raise RunFolderError(f"{self.config_file} cannot be read as a Config ({error}).") from None

    def write_config(self, config: Config) -> None:
        write_json_atomically(self.config_file, json.loads(config.to_json()))

    def remove_config(self) -> None:
        if os.path.exists(self.config_file):
            os.remove(self.config_file)

    def config_changes(self, config: Config) -> Dict[str, tuple]:
        """{field: (saved, now)} between config.json and `config`."""
        saved = read_json(self.config_file, "the run's config")
        if not isinstance(saved, dict):
            raise RunFolderError(f"{self.config_file} holds no JSON object; expected the run's config.")
        current = json.loads(config.to_json())
        defaults = json.loads(config.defaults_json())
        # A field added to Config after the run started counts as unchanged while it has its default.
        saved = {**{key: defaults[key] for key in defaults if key not in saved}, **saved}
        return {key: (saved.get(key), current.get(key)) for key in sorted(set(saved) | set(current))
                if saved.get(key) != current.get(key)}

    # ----- the corpus and vocabulary -----
    def write_corpus(self, identity: Dict, words: Sequence[str]) -> None:
        """vocab.txt and corpus.json (`identity` plus the vocabulary's size and SHA-256)."""
        write_text_atomically(self.vocabulary_file, vocabulary_text(words))
        write_json_atomically(self.corpus_file, dict(identity, vocab_size=len(words),
                                                     vocab_sha256=vocabulary_sha256(words)))

    def read_corpus(self) -> Optional[Dict]:
        """corpus.json, or None for a run written before runs kept it."""
        if not os.path.exists(self.corpus_file):
            return None
        identity = read_json(self.corpus_file, "the run's corpus record")
        if not isinstance(identity, dict):
            raise RunFolderError(f"{self.corpus_file} holds no JSON object; expected the run's corpus record.")
        return identity

    def corpus_changes(self, identity: Dict) -> Dict[str, tuple]:
        """{key: (saved, now)} where the corpus now differs from the one the run trained on."""
        saved = self.read_corpus()
        if saved is None:
            return {}
        return {key: (saved.get(key), value) for key, value in sorted(identity.items())
                if key in saved and saved[key] != value}

    def read_vocabulary(self) -> Optional[List[str]]:
        """The words of vocab.txt (checked against corpus.json), or None when the run has none."""
        if not os.path.exists(self.vocabulary_file):
            return None
        try:
            with open(self.vocabulary_file, encoding="utf-8") as handle:
                words = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise RunFolderError(f"{self.vocabulary_file} cannot be read ({error}).") from None
        identity = self.read_corpus() or {}
        if identity.get("vocab_sha256") and vocabulary_sha256(words) != identity["vocab_sha256"]:
            raise RunFolderError(f"{self.vocabulary_file} differs from the vocabulary the run trained on "
                                 f"(its SHA-256 is not corpus.json's vocab_sha256).")
        return words

    # ----- results -----
    def write_results(self, results: Dict) -> None:
        write_json_atomically(self.results_file, results)

    def read_results(self) -> Optional[Dict]:
        if not os.path.isfile(self.results_file):
            return None
        return read_json(self.results_file, "the run's results")

    # ----- checkpoints -----
    def prefix(self, number: int, best: bool = False) -> str:
        return os.path.join(self.best if best else self.checkpoints, f"{PREFIX}-{number}")

    def prefixes(self, best: bool = False) -> List[str]:
        """The checkpoint prefixes whose index file exists, oldest first."""
        directory = self.best if best else self.checkpoints
        found = glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*.index"))
        return sorted((path[:-len(".index")] for path in found), key=checkpoint_number)

    @staticmethod
    def sidecar(prefix: str) -> str:
        return prefix + SIDECAR

    def complete(self, best: bool = False) -> List[str]:
        """The prefixes of complete checkpoints (tensors and sidecar), oldest first."""
        return [prefix for prefix in self.prefixes(best) if os.path.exists(self.sidecar(prefix))]

    def without_sidecar(self) -> List[str]:
        """Prefixes whose tensors were written but whose sidecar is missing."""
        return [prefix for prefix in self.prefixes() if not os.path.exists(self.sidecar(prefix))]

    def temporary_writes(self) -> List[str]:
        """Folders and files TensorFlow or this module left behind when a write was cut."""
        patterns = [f"{PREFIX}-*_temp*", f"*.tmp-*"]
        found = []
        for directory in (self.checkpoints, self.best):
            for pattern in patterns:
                found += glob.glob(os.path.join(glob.escape(directory), pattern))
        found += glob.glob(os.path.join(glob.escape(self.path), "*.tmp-*"))
        return sorted(found)

    def next_number(self) -> int:
        numbers = [checkpoint_number(prefix) for prefix in self.prefixes() + self.prefixes(best=True)]
        numbers += [checkpoint_number(path) for path in
                    glob.glob(os.path.join(glob.escape(self.checkpoints), f"{PREFIX}-*{SIDECAR}"))]
        return max(numbers, default=-1) + 1

    def read_progress(self, prefix: str) -> Progress:
        """The progress record of a checkpoint's sidecar (a RunFolderError when it is unusable)."""
        payload = read_json(self.sidecar(prefix), "a checkpoint's progress record")
        try:
            return Progress.from_dict(payload["progress"])
        except (KeyError, TypeError, ValueError) as error:
            raise RunFolderError(f"{self.sidecar(prefix)} holds no valid progress record "
                                 f"({type(error).__name__}: {error}).") from None

    def write_sidecar(self, prefix: str, progress: Progress, config: Config) -> None:
        write_json_atomically(self.sidecar(prefix), dict(progress=progress.to_dict(),
                                                         config=json.loads(config.to_json())))

    def remove_stale_sidecars(self, best: bool = False) -> None:
        """Sidecars whose checkpoint TensorFlow's manager has deleted."""
        directory = self.best if best else self.checkpoints
        for stale in glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}-*{SIDECAR}")):
            if not os.path.exists(stale[:-len(SIDECAR)] + ".index"):
                os.remove(stale)

    @staticmethod
    def files_of(prefix: str) -> List[str]:
        return glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*")

    def remove(self, prefix: str) -> None:
        """Deletes the files of a checkpoint this session failed to write."""
        for path in self.files_of(prefix):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)

    def remove_temporary_writes(self) -> List[str]:
        """Deletes what cut writes left behind (never a checkpoint's tensors); returns the paths."""
        removed = self.temporary_writes()
        for path in removed:
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
        return removed

    def set_aside(self, prefix: str) -> str:
        """Moves a checkpoint's files into `unreadable/` (kept); returns that folder."""
        os.makedirs(self.unreadable, exist_ok=True)
        for path in self.files_of(prefix):
            os.replace(path, os.path.join(self.unreadable, os.path.basename(path)))
        return self.unreadable

    def set_aside_names(self) -> List[str]:
        """The names of the checkpoints kept in `unreadable/`."""
        found = glob.glob(os.path.join(glob.escape(self.unreadable), f"{PREFIX}-*"))
        return sorted({os.path.basename(path).split(".")[0].split("_")[0] for path in found})

    def select(self, which: str = "best",
               check: Optional[Callable[[str], None]] = None) -> RunCheckpoint:
        """The checkpoint `which` names: `latest` (the newest complete one), `best` (the pinned
        best-validation copy, else the newest complete one holding the best-validation weights, else
        the newest), or a name `ckpt-N`. `check(prefix)` may raise for a checkpoint whose tensors
        cannot be read (the TensorFlow side passes one); `latest` and `best` then fall back."""
        self.check_is_run()
        if self.legacy_folders():
            raise RunFolderError(f"{self.path} holds checkpoints in the gradual_rnn 0.1.0 format; convert "
                                 f"them once with: {UPGRADE_COMMAND.format(save_path=self.path)}")
        names = [os.path.basename(prefix) for prefix in self.complete()]
        if which not in ("best", "latest"):
            if which not in names:
                raise RunFolderError(f"Checkpoint {which} not found in {self.checkpoints}; it holds "
                                     f"{names or 'none'}.")
            return self._checked(os.path.join(self.checkpoints, which), check)
        if which == "best" and self.complete(best=True):
            return self._checked(self.complete(best=True)[-1], check)
        if not names:
            raise RunFolderError(f"{self.path} holds no checkpoint (no {self.checkpoints}/ckpt-*).")
        return self._newest(which, check)

    def _newest(self, which: str, check) -> RunCheckpoint:
        problems = []
        for prefix in reversed(self.complete()):
            try:
                chosen = self._checked(prefix, check)
            except RunFolderError as error:
                problems.append(str(error))
                continue
            if which == "latest" or holds_best_weights(chosen.progress):
                return chosen
        if which == "best" and not problems:
            newest = self._newest("latest", check)
            best = newest.progress.best or {}
            reason = ("no epoch of the run has set a best validation yet" if best.get("phase") is None else
                      f"the best-validation weights (phase {best['phase']}, epoch {best['epoch']}) are not "
                      f"among its retained checkpoints")
            logging.warning("%s: %s; the newest checkpoint, %s, is used instead.", self.path, reason, newest.name)
            return newest
        raise RunFolderError(f"No checkpoint of {self.path} can be read: {' '.join(problems)}")

    def _checked(self, prefix: str, check) -> RunCheckpoint:
        progress = self.read_progress(prefix)
        if check is not None:
            check(prefix)
        return RunCheckpoint(prefix, progress)

    def newest_progress(self) -> Optional[Progress]:
        """The progress of the newest complete checkpoint (sidecars only), or None."""
        complete = self.complete()
        return self.read_progress(complete[-1]) if complete else None

    # ----- gradual_rnn 0.1.0 -----
    def legacy_folders(self) -> List[str]:
        """Checkpoint folders in the 0.1.0 format (`ckpt-NNNNNN/arrays.npz`, `best/arrays.npz`)."""
        pattern = os.path.join(glob.escape(self.checkpoints), "*", "arrays.npz")
        return sorted(os.path.dirname(path) for path in glob.glob(pattern))

    @property
    def legacy_kept(self) -> str:
        return os.path.join(self.checkpoints, LEGACY_KEPT)

    @staticmethod
    def legacy_progress_file(folder: str) -> str:
        return os.path.join(folder, "progress.json")

    @staticmethod
    def legacy_arrays_file(folder: str) -> str:
        return os.path.join(folder, "arrays.npz")

    def nothing_to_upgrade(self) -> str:
        """The message when the folder holds no 0.1.0 checkpoint."""
        return f"{self.path} holds no checkpoint in the 0.1.0 format; nothing to do."


def holds_best_weights(progress: Progress) -> bool:
    """Whether a checkpoint holds the best-validation weights: taken at an epoch end (window 0)
    right after the epoch that set the best record."""
    if progress.window or not progress.rows:
        return False
    row, best = progress.rows[-1], progress.best or {}
    return (row["phase"], row["epoch"]) == (best.get("phase"), best.get("epoch"))


class RunLock:
    """An exclusive lock on a run folder, so that two runs never write the same checkpoints.

    Uses `flock` on the folder's `lock` file: the operating system releases it when the holder
    dies, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, path: str):
        self.path = path
        self._handle = None

    def __enter__(self):
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(f"--save_path {os.path.dirname(self.path)} is in use by {holder}; "
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
