"""Scores text with, and generates text from, an export of `gradual_rnn.export` (its SavedModel only).

    python -m gradual_rnn generate score --export_dir=exports/small --text_file=ptb.test.txt \
        [--unknown=unk|drop] [--nocarry_state] [--show_sentences=5] [--json]
    python -m gradual_rnn generate generate --export_dir=exports/small --prompt="the company said" \
        --num_words=20 --temperature=1.0 --top_k=0 --seed=1 [--uncapped]

(the command line is `gradual_rnn.cli.generate`).

Tokenisation is the original programs' (docs/reference.md, section 1): each line of the text is
split on whitespace and ends with `<eos>` (the last line only if a newline ends it).

Words outside the vocabulary. `--unknown=unk` (the default) maps each to `<unk>` and scores it as
`<unk>`; an export whose vocabulary has no `<unk>` refuses them with a clear error. `--unknown=drop`
removes them before scoring, as training does with its valid and test splits (the original
programs keep only `w in word_to_id`). Either way their number is printed and logged. On PTB every
valid and test word is in the vocabulary, so both modes give the same number there.

Scoring. A sentence's tokens are its words and its `<eos>`; each is scored from everything before
it. With `carry_state` (the default, the references' evaluation) the text is one stream: the LSTM
state runs on from sentence to sentence, and the first token is predicted after an `<eos>` fed at
the zero state. Without it, every sentence is scored alone, after an `<eos>` at the zero state.
Perplexity = exp(summed negative log-likelihood / token count), per sentence and over the text.

Generation feeds `<eos>` + the prompt, then draws `num_words` words one at a time from
`softmax(log_probs / temperature)`, restricted to the `top_k` most likely words when top_k > 0.
temperature 0 is greedy decoding (argmax). Draws come from `numpy.random.default_rng(seed)`, so a
seed gives the same text on every machine. The command writes each word to stdout as it is drawn;
it refuses `--num_words` above `MAX_NUM_WORDS` unless `--uncapped` is given.

This module loads only the SavedModel, vocab.txt and export.json: TensorFlow is enough to run it.
TensorFlow is imported on first use, so that a bad flag is refused in well under a second.
"""
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from absl import logging

METADATA_FILE = "export.json"
VOCAB_FILE = "vocab.txt"
SAVED_MODEL_DIR = "saved_model"
SIGNATURES = ("initial_state", "step", "score_window", "score")
DEFAULT_WINDOW = 256
# The most words one `generate` call draws without --uncapped: a few minutes of a PTB model on a CPU.
MAX_NUM_WORDS = 100_000
# What `score` does with a word outside the vocabulary, by --unknown value.
UNKNOWN_ACTIONS = {"unk": "mapped to {unk}", "drop": "dropped"}
DEFAULT_UNKNOWN = "unk"


class ExportUseError(ValueError):
    """A missing or broken export, a vocabulary that does not fit it, or unusable input text."""


def _tf():
    """TensorFlow, imported here on first use (flags are checked before the many-second import)."""
    import tensorflow  # pylint: disable=import-outside-toplevel
    return tensorflow


@dataclasses.dataclass(frozen=True)
class LoadedExport:
    """An export folder opened for inference."""

    directory: str
    metadata: Dict
    words: List[str]  # the vocabulary, indexed by id
    module: object  # the loaded SavedModel

    @functools.cached_property
    def vocabulary(self) -> Dict[str, int]:
        return {word: index for index, word in enumerate(self.words)}

    @property
    def eos(self) -> str:
        return self.metadata.get("eos", "<eos>")

    @property
    def unk(self) -> str:
        return self.metadata.get("unk", "<unk>")

    def initial_state(self, batch_size: int):
        return self.module.initial_state(_tf().constant(batch_size, _tf().int32))["state"]


# ----- loading -----
def _read_metadata(directory: str) -> Dict:
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isdir(directory):
        raise ExportUseError(f"No export at {directory}: the folder does not exist (make one with "
                             f"python -m gradual_rnn export).")
    if not os.path.isfile(path):
        raise ExportUseError(f"{directory} is not an export: it has no {METADATA_FILE} (make one with "
                             f"python -m gradual_rnn export).")
    try:
        with open(path, encoding="utf-8") as handle:
            metadata = json.load(handle)
        int(metadata["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportUseError(f"{path} is corrupted ({type(error).__name__}: {error}); "
                             f"export again.") from None
    return metadata


def _read_vocabulary(directory: str, vocab_size: int, sha256: Optional[str]) -> List[str]:
    path = os.path.join(directory, VOCAB_FILE)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        words = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ExportUseError(f"The vocabulary {path} cannot be read ({error}).") from None
    if len(words) != vocab_size:
        raise ExportUseError(f"The vocabulary {path} has {len(words)} words but the model has "
                             f"{vocab_size}: it is not this model's vocabulary.")
    if len(set(words)) != len(words) or not all(words) or any(len(word.split()) != 1 for word in words):
        raise ExportUseError(f"The vocabulary {path} is corrupted: every line must hold one distinct word.")
    if sha256 and hashlib.sha256(raw).hexdigest() != sha256:
        raise ExportUseError(f"The vocabulary {path} differs from the one exported with this model "
                             f"(its SHA-256 is not export.json's vocab_sha256): export again.")
    return words


def _load_saved_model(directory: str):
    tf = _tf()
    path = os.path.join(directory, SAVED_MODEL_DIR)
    if not os.path.isdir(path):
        raise ExportUseError(f"The export {directory} lacks its SavedModel folder {SAVED_MODEL_DIR}/.")
    try:
        module = tf.saved_model.load(path)
    except (OSError, ValueError, RuntimeError, IndexError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportUseError(f"The SavedModel in {path} cannot be loaded ({first_line}); the export is "
                             f"corrupted or incomplete: export again.") from None
    missing = [name for name in SIGNATURES if not hasattr(module, name)]
    if missing:
        raise ExportUseError(f"The SavedModel in {path} lacks the signature(s) {missing}; export again.")
    return module


def load_export(directory: str) -> LoadedExport:
    """Opens an export folder, checking that its parts belong together."""
    metadata = _read_metadata(directory)
    words = _read_vocabulary(directory, int(metadata["vocab_size"]), metadata.get("vocab_sha256"))
    module = _load_saved_model(directory)
    tf = _tf()
    try:
        log_probs = module.step(tf.zeros([1, 1], tf.int32), module.initial_state(tf.constant(1))["state"])
    except (ValueError, RuntimeError, IndexError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportUseError(f"The SavedModel in {os.path.join(directory, SAVED_MODEL_DIR)} cannot run "
                             f"({first_line}); the export is corrupted or incomplete: export again.") from None
    model_size = int(log_probs["log_probs"].shape[-1])
    if model_size != len(words):
        raise ExportUseError(f"The SavedModel predicts {model_size} words but the vocabulary has "
                             f"{len(words)}: they do not belong together; export again.")
    return LoadedExport(directory, metadata, words, module)


# ----- words to ids -----
def split_sentences(text: str, eos: str = "<eos>") -> List[List[str]]:
    """Each line split on whitespace, plus `eos` when a newline ends it (the references' rule)."""
    lines = text.split("\n")
    sentences = [line.split() + [eos] for line in lines[:-1]]
    if lines[-1].split():
        sentences.append(lines[-1].split())
    return sentences


def read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise ExportUseError(f"Text file not found: {path}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ExportUseError(f"{path} cannot be read ({error.strerror or error}).") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ExportUseError(f"{path} is not UTF-8 text ({error}).") from None
    if not text.split():
        raise ExportUseError(f"{path} holds no words.")
    return text


def to_ids(exported: LoadedExport, words: Sequence[str]) -> Tuple[np.ndarray, int]:
    """`<int32>[len]` ids with out-of-vocabulary words mapped to `<unk>`, and how many there were."""
    vocabulary = exported.vocabulary
    unknown = [word for word in words if word not in vocabulary]
    if unknown and exported.unk not in vocabulary:
        raise ExportUseError(f"{len(unknown)} word(s) are not in the vocabulary (e.g. {unknown[0]!r}) "
                             f"and it has no {exported.unk} to map them to.")
    unk_id = vocabulary.get(exported.unk, -1)
    ids = np.asarray([vocabulary.get(word, unk_id) for word in words], np.int32)
    return ids, len(unknown)


def known_ids(exported: LoadedExport, words: Sequence[str], unknown: str = DEFAULT_UNKNOWN
              ) -> Tuple[np.ndarray, int]:
    """Like `to_ids`, but with `unknown="drop"` words outside the vocabulary are left out."""
    check_unknown_mode(unknown)
    if unknown == "unk":
        return to_ids(exported, words)
    kept = [word for word in words if word in exported.vocabulary]
    return to_ids(exported, kept)[0], len(words) - len(kept)


def check_unknown_mode(unknown: str) -> None:
    if unknown not in UNKNOWN_ACTIONS:
        raise ExportUseError(f"--unknown must be one of {', '.join(UNKNOWN_ACTIONS)}, got {unknown!r}.")


def unknown_action(unknown: str, unk: str = "<unk>") -> str:
    """What `score` did with words outside the vocabulary: "mapped to <unk>" or "dropped"."""
    return UNKNOWN_ACTIONS[unknown].format(unk=unk)


def log_unknown(count: int, unknown: str, unk: str = "<unk>") -> None:
    """One log line saying how many words were outside the vocabulary and what became of them."""
    if not count:
        logging.info("Every word is in the vocabulary (--unknown=%s had nothing to do).", unknown)
    elif unknown == "unk":
        logging.warning("%d words not in the vocabulary were mapped to %s (--unknown=unk; "
                        "--unknown=drop drops them, as training does).", count, unk)
    else:
        logging.warning("%d words not in the vocabulary were dropped (--unknown=drop, as training "
                        "does with its valid and test splits).", count)


# ----- scoring -----
@dataclasses.dataclass(frozen=True)
class Scores:
    """Per-sentence summed negative log-likelihoods and token counts, and the words outside the
    vocabulary (mapped to <unk> or dropped, as `unknown_mode` says)."""

    nll: np.ndarray  # <float64>[sentences]
    tokens: np.ndarray  # <int>[sentences], words + <eos> (dropped words not counted)
    unknown: np.ndarray  # <int>[sentences]
    unknown_mode: str = DEFAULT_UNKNOWN

    def perplexities(self) -> np.ndarray:
        """Per sentence; NaN for a sentence left with no token (all its words dropped)."""
        with np.errstate(over="ignore"):
            values = np.exp(self.nll / np.maximum(self.tokens, 1))
        return np.where(self.tokens > 0, values, np.nan)

    @property
    def total_perplexity(self) -> float:
        """exp(summed NLL / tokens) over the text; infinite rather than an error when it overflows."""
        exponent = float(self.nll.sum() / self.tokens.sum())
        return math.exp(exponent) if exponent < math.log(np.finfo(np.float64).max) else math.inf


def _stream_log_probs(exported: LoadedExport, ids: np.ndarray, window: int) -> np.ndarray:
    """Log-probability of every id of a stream, each from all ids before it and `<eos>` at the start."""
    tf = _tf()
    inputs = np.concatenate([[exported.vocabulary[exported.eos]], ids[:-1]]).astype(np.int32)
    state = exported.initial_state(1)
    pieces = []
    for start in range(0, len(ids), window):
        result = exported.module.score_window(tf.constant(inputs[None, start:start + window]),
                                              tf.constant(ids[None, start:start + window]), state)
        state = result["state"]
        pieces.append(result["target_log_probs"].numpy()[0].astype(np.float64))
    return np.concatenate(pieces)


def _sentence_nll_alone(exported: LoadedExport, sentence_ids: List[np.ndarray],
                        batch_size: int) -> np.ndarray:
    tf = _tf()
    eos_id = exported.vocabulary[exported.eos]
    nll = []
    for start in range(0, len(sentence_ids), batch_size):
        batch = sentence_ids[start:start + batch_size]
        lengths = np.asarray([len(ids) + 1 for ids in batch], np.int32)
        padded = np.zeros((len(batch), max(lengths.max(), 2)), np.int32)  # `score` needs time >= 2
        for row, ids in enumerate(batch):
            padded[row, :lengths[row]] = np.concatenate([[eos_id], ids])
        nll.append(exported.module.score(tf.constant(padded), tf.constant(lengths))["nll_sum"].numpy())
    return np.concatenate(nll)


def score_sentences(exported: LoadedExport, sentences: Sequence[Sequence[str]], carry_state: bool = True,
                    window: int = DEFAULT_WINDOW, batch_size: int = 64,
                    unknown: str = DEFAULT_UNKNOWN) -> Scores:
    """Scores tokenised sentences (see the module docstring for the two state and unknown modes)."""
    if exported.eos not in exported.vocabulary:
        raise ExportUseError(f"The vocabulary has no {exported.eos}, which scoring feeds first.")
    converted = [known_ids(exported, sentence, unknown) for sentence in sentences]
    sentence_ids = [ids for ids, _ in converted]
    unknown_counts = np.asarray([count for _, count in converted])
    tokens = np.asarray([len(ids) for ids in sentence_ids])
    if not tokens.sum():
        raise ExportUseError(f"Nothing is left to score: all {unknown_counts.sum()} words are outside the "
                             f"vocabulary and --unknown=drop dropped them.")
    if carry_state:
        log_probs = _stream_log_probs(exported, np.concatenate(sentence_ids), window)
        boundaries = np.cumsum(tokens)[:-1]
        nll = np.asarray([-piece.sum() for piece in np.split(log_probs, boundaries)])
    else:
        nll = _sentence_nll_alone(exported, sentence_ids, batch_size)
    log_unknown(int(unknown_counts.sum()), unknown, exported.unk)
    return Scores(nll, tokens, unknown_counts, unknown)


# ----- generation -----
def choose_next(log_probs: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """One id from `<float>[vocab]` log-probabilities: argmax at temperature 0, else a seeded draw."""
    if temperature == 0:
        return int(np.argmax(log_probs))
    scaled = np.asarray(log_probs, np.float64) / temperature
    if 0 < top_k < len(scaled):
        threshold = np.partition(scaled, -top_k)[-top_k]
        scaled = np.where(scaled >= threshold, scaled, -np.inf)
    probabilities = np.exp(scaled - scaled.max())
    return int(rng.choice(len(scaled), p=probabilities / probabilities.sum()))


def sampling_problem(num_words: int, temperature: float, top_k: int,
                     seed: Optional[int] = None) -> Optional[str]:
    """What is wrong with these generation settings (named as the flags), or None."""
    if num_words < 1:
        return f"--num_words must be at least 1, got {num_words}."
    if not temperature >= 0 or math.isinf(temperature):
        return f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}."
    if top_k < 0:
        return f"--top_k must be >= 0 (0 = the whole vocabulary), got {top_k}."
    if seed is not None and seed < 0:
        return f"--seed must be >= 0, got {seed}."
    return None


def check_sampling(num_words: int, temperature: float, top_k: int, seed: Optional[int] = None) -> None:
    problem = sampling_problem(num_words, temperature, top_k, seed)
    if problem:
        raise ExportUseError(problem)


def cap_problem(num_words: int, uncapped: bool = False) -> Optional[str]:
    """The refusal of a `--num_words` above `MAX_NUM_WORDS` (unless `uncapped`), or None."""
    if num_words <= MAX_NUM_WORDS or uncapped:
        return None
    return (f"--num_words={num_words} is above the cap of {MAX_NUM_WORDS} words; ask for fewer, or add "
            f"--uncapped to draw that many.")


def start_generation(exported: LoadedExport, prompt: str, num_words: int, temperature: float = 1.0,
                     top_k: int = 0, seed: Optional[int] = None) -> Tuple[Iterator[str], int]:
    """Checks the settings now; returns an iterator drawing the `num_words` words continuing `prompt`
    one by one, and how many prompt words were mapped to <unk>."""
    prompt_words = prompt.split()
    if not prompt_words:
        raise ExportUseError('The prompt is empty: give at least one word, e.g. --prompt="the company said".')
    check_sampling(num_words, temperature, top_k, seed)
    prompt_ids, unknown = to_ids(exported, prompt_words)
    if unknown:
        logging.warning("%d prompt word(s) not in the vocabulary were mapped to %s.", unknown, exported.unk)
    return _draw_words(exported, prompt_ids, num_words, temperature, top_k, seed), unknown


def _draw_words(exported: LoadedExport, prompt_ids: np.ndarray, num_words: int, temperature: float,
                top_k: int, seed: Optional[int]) -> Iterator[str]:
    tf = _tf()
    eos_ids = [exported.vocabulary[exported.eos]] if exported.eos in exported.vocabulary else []
    inputs, state = np.asarray(eos_ids + list(prompt_ids), np.int32), exported.initial_state(1)
    rng = np.random.default_rng(seed)
    for _ in range(num_words):
        result = exported.module.step(tf.constant(inputs[None]), state)
        state = result["state"]
        next_id = choose_next(result["log_probs"].numpy()[0, -1], temperature, top_k, rng)
        inputs = np.asarray([next_id], np.int32)
        yield exported.words[next_id]


def generate_words(exported: LoadedExport, prompt: str, num_words: int, temperature: float = 1.0,
                   top_k: int = 0, seed: Optional[int] = None) -> Tuple[List[str], int]:
    """`num_words` words continuing `prompt`, and how many prompt words were mapped to <unk>."""
    words, unknown = start_generation(exported, prompt, num_words, temperature, top_k, seed)
    return list(words), unknown


def render(words: Sequence[str], eos: str = "<eos>") -> str:
    """Words as text: `eos` ends a line."""
    lines, current = [], []
    for word in words:
        if word == eos:
            lines.append(" ".join(current))
            current = []
        else:
            current.append(word)
    return "\n".join(lines + [" ".join(current)])


def stream_text(words: Iterable[str], out: TextIO, eos: str = "<eos>") -> int:
    """Writes `render(words) + "\\n"` word by word, flushing after each; returns the words written."""
    line_start, count = True, 0
    for word in words:
        if word == eos:
            out.write("\n")
        else:
            out.write(word if line_start else f" {word}")
        line_start = word == eos
        out.flush()
        count += 1
    out.write("\n")
    out.flush()
    return count


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def score_summary(scores: Scores, unk: str, carry_state: bool, shown: int) -> Dict:
    """A JSON-ready summary: totals, the out-of-vocabulary count and handling, the first sentences."""
    rows = [dict(sentence=index + 1, tokens=int(scores.tokens[index]), out_of_vocabulary=int(scores.unknown[index]),
                 perplexity=_finite_or_none(perplexity))
            for index, perplexity in enumerate(scores.perplexities()[:shown])]
    return dict(sentences=len(scores.tokens), tokens=int(scores.tokens.sum()), carry_state=carry_state,
                out_of_vocabulary=dict(count=int(scores.unknown.sum()), handling=scores.unknown_mode,
                                       action=unknown_action(scores.unknown_mode, unk)),
                total_perplexity=_finite_or_none(scores.total_perplexity), first_sentences=rows)
