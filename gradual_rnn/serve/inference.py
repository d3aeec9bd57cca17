"""The Python inference API: `load(export_dir)` opens a folder of `python -m gradual_rnn export`, and
the `ExportedModel` it returns scores text and continues prompts, in batches, through the SavedModel.

    import gradual_rnn
    model = gradual_rnn.load("exports/small")
    scores = model.score(["the company said it will sell", "no it was n't black monday"])
    scores.log_probs, scores.token_log_probs, scores.total_perplexity, scores.unknown_count
    for generated in model.generate(["the company said", "the market"], num_words=20, top_p=0.9, seed=1):
        print(generated.text)

Only TensorFlow, the SavedModel, vocab.txt and export.json are used (no model code); TensorFlow is
imported on first use, so that the commands can check their flags before the many-second import.

Tokenisation is training's: a text is split on whitespace (`str.split`) and `<eos>` ends it;
`score_sentences` takes tokens as they are (the `generate score` command splits a file into lines by
the original programs' rule and passes them). Words outside the vocabulary: with `unknown="unk"`
(the default) each becomes `<unk>` and is scored as `<unk>` (a vocabulary without `<unk>` refuses
them); with `unknown="drop"` they are left out, as training does with its valid and test splits.

Scoring. Every token is scored from everything before it, and the first after an `<eos>` fed at the
zero state. `carry_state=False` (the default here, and what `serving_default` does) scores each text
alone; `carry_state=True` reads the texts as one stream, the LSTM state running on from one to the
next (the original programs' evaluation, the `generate score` command's default). Perplexity is
exp(-summed log-probability / token count).

Generation feeds `<eos>` and each prompt (a batch of prompts of any lengths), then draws `num_words`
words per prompt with the SavedModel's own seeded sampler (`draw_next`; temperature, top-k, top-p,
serve/signatures.py). The words equal those of the SavedModel's `generate` signature for the same
settings, and a seed gives the same words on every machine that computes the same log-probabilities.
"""
import dataclasses
import functools
import hashlib
import json
import math
import operator
import os
import secrets
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from gradual_rnn.serve import layout

DEFAULT_WINDOW = 256
# What scoring does with a word outside the vocabulary, by `unknown` (the command's --unknown).
UNKNOWN_ACTIONS = {"unk": "mapped to {unk}", "drop": "dropped"}
DEFAULT_UNKNOWN = "unk"
MAX_SEED = 2 ** 63  # seeds are int64 in the graph


class ExportUseError(ValueError):
    """A missing or broken export, a vocabulary that does not fit it, or unusable input."""


def _tf():
    """TensorFlow, imported here on first use (flags are checked before the many-second import)."""
    import tensorflow  # pylint: disable=import-outside-toplevel
    return tensorflow


# ----- results -----
@dataclasses.dataclass(frozen=True)
class Scores:
    """The log-probabilities of scored sentences: of each token given everything before it, of each
    sentence (their sum), and the perplexity over all; and the words outside the vocabulary."""

    token_log_probs: Tuple[np.ndarray, ...]  # per sentence, <float64>[its tokens]
    unknown: np.ndarray  # <int>[sentences]: words mapped to <unk> or dropped, as unknown_mode says
    unknown_mode: str = DEFAULT_UNKNOWN

    @property
    def log_probs(self) -> np.ndarray:
        """`<float64>[sentences]`: each sentence's summed log-probability."""
        return np.asarray([pieces.sum() for pieces in self.token_log_probs], np.float64)

    @property
    def nll(self) -> np.ndarray:
        return -self.log_probs

    @property
    def tokens(self) -> np.ndarray:
        """`<int>[sentences]`: tokens scored (words and `<eos>`; dropped words not counted)."""
        return np.asarray([len(pieces) for pieces in self.token_log_probs])

    @property
    def unknown_count(self) -> int:
        return int(self.unknown.sum())

    def perplexities(self) -> np.ndarray:
        """Per sentence; NaN for a sentence left with no token (all its words dropped)."""
        with np.errstate(over="ignore"):
            values = np.exp(self.nll / np.maximum(self.tokens, 1))
        return np.where(self.tokens > 0, values, np.nan)

    @property
    def total_perplexity(self) -> float:
        """exp(summed NLL / tokens) over all; infinite rather than an error when it overflows."""
        exponent = float(self.nll.sum() / self.tokens.sum())
        return math.exp(exponent) if exponent < math.log(np.finfo(np.float64).max) else math.inf


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


@dataclasses.dataclass(frozen=True)
class Generated:
    """The words drawn to continue one prompt."""

    prompt: str
    words: Tuple[str, ...]  # the drawn words, `<eos>` among them
    prompt_unknown: int  # prompt words mapped to <unk>
    eos: str = "<eos>"

    @property
    def text(self) -> str:
        """The drawn words as text, `<eos>` a line break (the `generate` signature's `text`)."""
        return render(self.words, self.eos)


# ----- checks shared with the command (named as its flags with prefix "--") -----
def check_unknown_mode(unknown: str) -> None:
    if unknown not in UNKNOWN_ACTIONS:
        raise ExportUseError(f"--unknown must be one of {', '.join(UNKNOWN_ACTIONS)}, got {unknown!r}.")


def sampling_problem(num_words, temperature=1.0, top_k=0, top_p=1.0, seed=None, prefix: str = "--") -> Optional[str]:
    """What is wrong with these generation settings, or None; names start with `prefix`."""
    integers = dict(num_words=num_words, top_k=top_k, seed=0 if seed is None else seed)
    for name, value in integers.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return f"{prefix}{name} must be an integer, got {value!r}."
    for name, value in dict(temperature=temperature, top_p=top_p).items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return f"{prefix}{name} must be a number, got {value!r}."
    if num_words < 1:
        return f"{prefix}num_words must be at least 1, got {num_words}."
    if not temperature >= 0 or math.isinf(temperature):
        return f"{prefix}temperature must be a finite number >= 0 (0 = greedy), got {temperature}."
    if top_k < 0:
        return f"{prefix}top_k must be >= 0 (0 = the whole vocabulary), got {top_k}."
    if not 0 < top_p <= 1:
        return f"{prefix}top_p must be in (0, 1] (1 = no nucleus cut), got {top_p}."
    if seed is not None and seed < 0:
        return f"{prefix}seed must be >= 0, got {seed}."
    if seed is not None and seed >= MAX_SEED:
        return f"{prefix}seed must be below 2**63, got {seed}."
    return None


def _batch(values, what: str) -> List[str]:
    """A non-empty list of strings (a single string is refused: it would be read letter by letter)."""
    if isinstance(values, (str, bytes)):
        raise ExportUseError(f"Give the {what} as a list of strings, e.g. [{values!r}], not one string.")
    values = list(values)
    if not values:
        raise ExportUseError(f"The batch of {what} is empty: give at least one.")
    wrong = [value for value in values if not isinstance(value, str)]
    if wrong:
        raise ExportUseError(f"Every one of the {what} must be a string, got {wrong[0]!r}.")
    return values


# ----- the opened export -----
@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """An export folder opened for inference (`load`); its methods run the SavedModel."""

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
        """The zero state, `<float32>[depth, 2, batch_size, hidden]`."""
        return self.module.initial_state(_tf().constant(batch_size, _tf().int32))["state"]

    # ----- words to ids -----
    def to_ids(self, words: Sequence[str]) -> Tuple[np.ndarray, int]:
        """`<int32>[len]` ids with words outside the vocabulary mapped to `<unk>`, and how many there were."""
        unknown = [word for word in words if word not in self.vocabulary]
        if unknown and self.unk not in self.vocabulary:
            raise ExportUseError(f"{len(unknown)} word(s) are not in the vocabulary (e.g. {unknown[0]!r}) "
                                 f"and it has no {self.unk} to map them to.")
        unk_id = self.vocabulary.get(self.unk, -1)
        return np.asarray([self.vocabulary.get(word, unk_id) for word in words], np.int32), len(unknown)

    def known_ids(self, words: Sequence[str], unknown: str = DEFAULT_UNKNOWN) -> Tuple[np.ndarray, int]:
        """Like `to_ids`, but with `unknown="drop"` words outside the vocabulary are left out."""
        check_unknown_mode(unknown)
        if unknown == "unk":
            return self.to_ids(words)
        kept = [word for word in words if word in self.vocabulary]
        return self.to_ids(kept)[0], len(words) - len(kept)

    # ----- scoring -----
    def score(self, texts: Sequence[str], carry_state: bool = False, unknown: str = DEFAULT_UNKNOWN) -> Scores:
        """Scores each text as one sentence: its words (split on whitespace) and `<eos>`."""
        texts = _batch(texts, "texts")
        return self.score_sentences([text.split() + [self.eos] for text in texts], carry_state, unknown)

    def score_sentences(self, sentences: Sequence[Sequence[str]], carry_state: bool = False,
                        unknown: str = DEFAULT_UNKNOWN, window: int = DEFAULT_WINDOW,
                        batch_size: int = 64) -> Scores:
        """Scores sentences given as tokens (no `<eos>` is added); the module docstring has the modes."""
        if self.eos not in self.vocabulary:
            raise ExportUseError(f"The vocabulary has no {self.eos}, which scoring feeds first.")
        if not len(sentences):
            raise ExportUseError("The batch of sentences is empty: give at least one.")
        converted = [self.known_ids(sentence, unknown) for sentence in sentences]
        sentence_ids = [ids for ids, _ in converted]
        unknown_counts = np.asarray([count for _, count in converted])
        if not sum(map(len, sentence_ids)):
            raise ExportUseError(f"Nothing is left to score: all {unknown_counts.sum()} words are outside the "
                                 f"vocabulary and --unknown=drop dropped them.")
        if carry_state:
            log_probs = self._stream_log_probs(np.concatenate(sentence_ids), window)
            pieces = tuple(np.split(log_probs, np.cumsum([len(ids) for ids in sentence_ids])[:-1]))
        else:
            pieces = self._log_probs_alone(sentence_ids, batch_size)
        log_unknown(int(unknown_counts.sum()), unknown, self.unk)
        return Scores(pieces, unknown_counts, unknown)

    def _stream_log_probs(self, ids: np.ndarray, window: int) -> np.ndarray:
        """Log-probability of every id of a stream, each from all ids before it and `<eos>` at the start."""
        tf = _tf()
        inputs = np.concatenate([[self.vocabulary[self.eos]], ids[:-1]]).astype(np.int32)
        state, pieces = self.initial_state(1), []
        for start in range(0, len(ids), window):
            result = self.module.score_window(tf.constant(inputs[None, start:start + window]),
                                              tf.constant(ids[None, start:start + window]), state)
            state = result["state"]
            pieces.append(result["target_log_probs"].numpy()[0].astype(np.float64))
        return np.concatenate(pieces)

    def _log_probs_alone(self, sentence_ids: List[np.ndarray], batch_size: int) -> Tuple[np.ndarray, ...]:
        """Each sentence's token log-probabilities, after an `<eos>` at the zero state (`score`)."""
        tf = _tf()
        pieces = []
        for start in range(0, len(sentence_ids), batch_size):
            batch = sentence_ids[start:start + batch_size]
            padded, lengths = self._after_eos(batch, minimum_time=2)  # `score` needs time >= 2
            scored = self.module.score(tf.constant(padded), tf.constant(lengths))["target_log_probs"].numpy()
            pieces.extend(scored[row, :len(ids)].astype(np.float64) for row, ids in enumerate(batch))
        return tuple(pieces)

    def _after_eos(self, rows: Sequence[np.ndarray], minimum_time: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """`<eos>` then each row, padded with zeros: `<int32>[batch, time]` and `<int32>[batch]` lengths."""
        lengths = np.asarray([len(ids) + 1 for ids in rows], np.int32)
        padded = np.zeros((len(rows), max(lengths.max(), minimum_time)), np.int32)
        for row, ids in enumerate(rows):
            padded[row, :lengths[row]] = np.concatenate([[self.vocabulary[self.eos]], ids])
        return padded, lengths

    # ----- generation -----
    def generate(self, prompts: Sequence[str], num_words: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None) -> List[Generated]:
        """`num_words` words continuing each prompt (a batch), drawn as the module docstring says;
        `seed=None` draws a fresh seed."""
        prompts = _batch(prompts, "prompts")
        steps, unknown = self.stream(prompts, num_words, temperature, top_k, top_p, seed)
        columns = list(steps)
        return [Generated(prompt, tuple(step[row] for step in columns), unknown[row], self.eos)
                for row, prompt in enumerate(prompts)]

    def stream(self, prompts: Sequence[str], num_words: int, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, seed: Optional[int] = None) -> Tuple[Iterator[Tuple[str, ...]], List[int]]:
        """Checks the settings and the prompts now; returns an iterator whose every step draws one word
        per prompt (a tuple), and how many words of each prompt were mapped to <unk>."""
        prompts = _batch(prompts, "prompts")
        problem = sampling_problem(num_words, temperature, top_k, top_p, seed, prefix="")
        if problem:
            raise ExportUseError(problem)
        empty = [index for index, prompt in enumerate(prompts) if not prompt.split()]
        if empty:
            raise ExportUseError(f"Prompt {empty[0] + 1} of {len(prompts)} is empty: give at least one word, "
                                 f"e.g. 'the company said'.")
        converted = [self.to_ids(prompt.split()) for prompt in prompts]
        unknown = [count for _, count in converted]
        if sum(unknown):
            logging.warning("%d prompt word(s) not in the vocabulary were mapped to %s.", sum(unknown), self.unk)
        seed = secrets.randbits(63) if seed is None else operator.index(seed)
        tf = _tf()
        sampling = (tf.constant(seed, tf.int64), tf.constant(temperature, tf.float32), tf.constant(top_k, tf.int32),
                    tf.constant(top_p, tf.float32))
        return self._draw(self._after_eos([ids for ids, _ in converted]), num_words, sampling), unknown

    def _draw(self, fed: Tuple[np.ndarray, np.ndarray], num_words: int, sampling: Tuple) -> Iterator[Tuple[str, ...]]:
        """Feeds `fed` (padded ids and lengths), then draws `num_words` steps with `sampling`: the seed,
        temperature, top_k and top_p tensors of `draw_next`."""
        (ids, lengths), state = fed, self.initial_state(len(fed[1]))
        seed, settings = sampling[0], sampling[1:]
        for step in range(num_words):  # NumPy in and out: eager slicing would cost more than the step
            result = self.module.draw_next(ids, lengths, state, seed, np.int32(step), *settings)
            state, drawn = result["state"], result["next_ids"].numpy()
            ids, lengths = drawn[:, np.newaxis], np.ones_like(drawn)
            yield tuple(self.words[index] for index in drawn)


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


def unknown_action(unknown: str, unk: str = "<unk>") -> str:
    """What scoring did with words outside the vocabulary: "mapped to <unk>" or "dropped"."""
    return UNKNOWN_ACTIONS[unknown].format(unk=unk)


# ----- loading -----
def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _read_metadata(directory: str) -> Dict:
    path = os.path.join(directory, layout.METADATA_FILE)
    if not os.path.isdir(directory):
        raise ExportUseError(f"No export at {directory}: the folder does not exist (make one with "
                             f"python -m gradual_rnn export).")
    if not os.path.isfile(path):
        raise ExportUseError(f"{directory} is not an export: it has no {layout.METADATA_FILE} (make one with "
                             f"python -m gradual_rnn export).")
    try:
        with open(path, encoding="utf-8") as handle:
            metadata = json.load(handle)
        int(metadata["vocab_size"])
        version = int(metadata.get("format_version", 1))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportUseError(f"{path} is corrupted ({type(error).__name__}: {error}); export again.") from None
    if version != layout.FORMAT_VERSION:
        raise ExportUseError(f"{directory} is an export of format {version}, and this gradual_rnn reads format "
                             f"{layout.FORMAT_VERSION} (a SavedModel in {layout.SAVED_MODEL_DIR}/"
                             f"{layout.SAVED_MODEL_VERSION}/ with text signatures): export again.")
    return metadata


def _read_vocabulary(directory: str, vocab_size: int, sha256: Optional[str]) -> List[str]:
    path = os.path.join(directory, layout.VOCAB_FILE)
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
    path = layout.saved_model_path(directory)
    if not os.path.isdir(path):
        raise ExportUseError(f"The export {directory} lacks its SavedModel folder {os.path.relpath(path, directory)}/.")
    try:
        module = tf.saved_model.load(path)
    except (OSError, ValueError, RuntimeError, IndexError, tf.errors.OpError) as error:
        raise ExportUseError(f"The SavedModel in {path} cannot be loaded ({_first_line(error)}); the export is "
                             f"corrupted or incomplete: export again.") from None
    missing = [name for name in layout.ID_SIGNATURES if not hasattr(module, name)]
    if missing:
        raise ExportUseError(f"The SavedModel in {path} lacks the signature(s) {missing}; export again.")
    return module


def load(export_dir: str) -> ExportedModel:
    """Opens an export folder for inference, checking that its parts belong together."""
    metadata = _read_metadata(export_dir)
    words = _read_vocabulary(export_dir, int(metadata["vocab_size"]), metadata.get("vocab_sha256"))
    module = _load_saved_model(export_dir)
    tf = _tf()
    try:
        log_probs = module.step(tf.zeros([1, 1], tf.int32), module.initial_state(tf.constant(1))["state"])
    except (ValueError, RuntimeError, IndexError, tf.errors.OpError) as error:
        raise ExportUseError(f"The SavedModel in {layout.saved_model_path(export_dir)} cannot run "
                             f"({_first_line(error)}); the export is corrupted or incomplete: export again.") from None
    model_size = int(log_probs["log_probs"].shape[-1])
    if model_size != len(words):
        raise ExportUseError(f"The SavedModel predicts {model_size} words but the vocabulary has "
                             f"{len(words)}: they do not belong together; export again.")
    return ExportedModel(export_dir, metadata, words, module)
