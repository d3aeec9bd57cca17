"""The word-level corpus reader: the references' rules, read as a stream so a corpus of any size fits.

The rules (Zaremba et al.'s `reader.py`, kept by the Gradual Learning code), the same for every
corpus and layout (`corpus_files.py`):

1. every newline becomes the token `<eos>`, then the text is split on whitespace (Python's
   `str.split()`); a WikiText `= Heading =` line is ordinary text;
2. the vocabulary comes from the training file only, ordered by descending count, then by word,
   so `the`=0, `<unk>`=1, `<eos>`=2 on PTB;
3. a valid or test word outside the vocabulary is dropped (the references' rule) or, with
   `map_unknown_to_unk`, becomes `<unk>`; either way it is counted in `Corpus.unknown_counts`.

How the stream is read, in two passes that never hold a split's words::

    pass 1, train:        1 MiB chunk -> cut at the last newline -> decode -> split -> Counter
                          vocabulary = Counter sorted by (-count, word)
    pass 2, every split:  1 MiB chunk -> ... -> split -> ids of the chunk -> <int32>[tokens] array

A chunk ends at its last newline (or, in a line longer than a chunk, its last space or tab), so no
word and no UTF-8 character is cut, and splitting chunk by chunk gives the words of the whole text.
The train array is allocated once at its exact size (pass 1 counted its tokens). On PTB the result
equals, id for id, the word-list reader the package had before (`ptb.read_words`,
`ptb.build_vocabulary`, `ptb.words_to_ids`), which is kept for small inputs.
"""
import collections
import dataclasses
import hashlib
import itertools
import os
from typing import Dict, Iterator, List, Mapping, Optional

import numpy as np
from absl import logging

from gradual_rnn.data import corpus_files
from gradual_rnn.data.corpus_files import SPLITS, CorpusFiles, DataError

EOS = "<eos>"
UNK = "<unk>"
CHUNK_BYTES = 1 << 20
FINGERPRINT_VERSION = b"gradual_rnn corpus fingerprint 1\n"
# Bytes a token takes at least on average in ordinary text; sizes the first buffer of valid/test.
BYTES_PER_TOKEN_GUESS = 4


@dataclasses.dataclass(frozen=True)
class Conversion:
    """Word ids of one split, `<int32>[tokens]`, and how many of its words were not in the vocabulary."""

    ids: np.ndarray
    unknown_count: int


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The three splits as id streams, `<int32>[tokens]` each, plus the vocabulary they were built with.

    vocabulary: word -> id, ids 0..vocab_size-1; unknown_counts: split -> number of its words that
    were not in the vocabulary (dropped, or mapped to `<unk>`).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocabulary: Dict[str, int]
    unknown_counts: Dict[str, int]

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, name)

    def words(self) -> List[str]:
        """The vocabulary as a list indexed by id."""
        return sorted(self.vocabulary, key=self.vocabulary.get)

    def fingerprint(self) -> str:
        """The corpus's identity: SHA-256 (hex) over the three id arrays and the vocabulary in id order.

        Equal for the same ids and vocabulary, whatever files or layout they came from; a changed
        word, another treatment of unknown words, or a prefix of a split gives another value.
        """
        digest = hashlib.sha256(FINGERPRINT_VERSION)
        for name in SPLITS:
            ids = np.ascontiguousarray(self.split(name), dtype="<i4")
            digest.update(f"{name} {len(ids)}\n".encode("ascii"))
            digest.update(ids)
        words = self.words()
        digest.update(f"vocabulary {len(words)}\n".encode("ascii"))
        digest.update("\n".join(words).encode("utf-8"))
        return digest.hexdigest()


def vocabulary_from_counts(counts: Mapping[str, int]) -> Dict[str, int]:
    """Word -> id in the references' order: descending count, ties broken by the word itself."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {word: index for index, (word, _) in enumerate(ordered)}


def check_file(path: str) -> None:
    """Raises a DataError when `path` does not exist or is a directory."""
    if not os.path.exists(path):
        raise DataError(f"Corpus file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"Expected a text file but found a directory: {path}")


def _decode_error_text(error: UnicodeDecodeError, offset: int) -> str:
    """Python's own wording of `error`, with positions counted from the start of the file."""
    start = offset + error.start
    if error.end - error.start == 1:
        where = f"byte 0x{error.object[error.start]:02x} in position {start}"
    else:
        where = f"bytes in position {start}-{offset + error.end - 1}"
    return f"'{error.encoding}' codec can't decode {where}: {error.reason}"


def decode_text(raw: bytes, path: str, offset: int = 0) -> str:
    """Decodes bytes of the file `path` that start at byte `offset`; a DataError for NUL or non-UTF-8."""
    if b"\x00" in raw:
        raise DataError(f"{path} is not a text file (it contains NUL bytes); expected UTF-8 text.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({_decode_error_text(error, offset)}).") from None


def _last_separator(data: bytes) -> int:
    """Index of the last newline of `data`, else of its last space or tab, else -1."""
    cut = data.rfind(b"\n")
    if cut < 0:
        cut = max(data.rfind(b" "), data.rfind(b"\t"))
    return cut


def text_chunks(path: str, chunk_bytes: Optional[int] = None) -> Iterator[str]:
    """The file's text in pieces of about `chunk_bytes` (CHUNK_BYTES by default), each ending at a
    newline, space or tab.

    Joined, the pieces are the whole text; no word or character is cut between two pieces.
    """
    check_file(path)
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    offset = 0
    carry = b""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            data = carry + block if carry else block
            cut = _last_separator(data)
            if cut < 0:  # no separator yet: one word longer than a chunk
                carry = data
                continue
            yield decode_text(data[:cut + 1], path, offset)
            offset += cut + 1
            carry = data[cut + 1:]
    if carry:
        yield decode_text(carry, path, offset)


def chunk_words(text: str) -> List[str]:
    """The tokens of one piece of text: each newline an `<eos>`, then a whitespace split."""
    return text.replace("\n", f" {EOS} ").split()


def count_words(path: str) -> collections.Counter:
    """Word -> count over the whole file (`<eos>` included), one chunk at a time."""
    counts = collections.Counter()
    for text in text_chunks(path):
        counts.update(chunk_words(text))
    if not counts:
        raise DataError(f"{path} is empty: it holds no words.")
    return counts


class _IdBuffer:
    """An `<int32>` array filled chunk by chunk, growing by doubling when a guess was too small."""

    def __init__(self, capacity: int):
        self._array = np.empty(max(capacity, 1), dtype=np.int32)
        self._length = 0

    def extend(self, ids: np.ndarray) -> None:
        end = self._length + len(ids)
        if end > len(self._array):
            grown = np.empty(max(end, 2 * len(self._array)), dtype=np.int32)
            grown[:self._length] = self._array[:self._length]
            self._array = grown
        self._array[self._length:end] = ids
        self._length = end

    def result(self) -> np.ndarray:
        """`<int32>[filled]`: the array itself when it was sized exactly, else a trimmed copy."""
        if self._length == len(self._array):
            return self._array
        return self._array[:self._length].copy()


def unknown_word_id(vocabulary: Mapping[str, int], map_unknown_to_unk: bool) -> Optional[int]:
    """The id unknown words become: `<unk>`'s with `map_unknown_to_unk`, else None (dropped)."""
    if not map_unknown_to_unk:
        return None
    if UNK not in vocabulary:
        raise DataError(f"map_unknown_to_unk needs '{UNK}' in the vocabulary; it has none.")
    return vocabulary[UNK]


def log_unknown_words(source: str, unknown_count: int, map_unknown_to_unk: bool) -> None:
    """Logs how many words of `source` were not in the vocabulary and what became of them."""
    if unknown_count:
        action = f"mapped to {UNK}" if map_unknown_to_unk else "dropped, as the reference does"
        logging.warning("%s: %d words not in the vocabulary were %s.", source, unknown_count, action)


def encode_file(path: str, vocabulary: Mapping[str, int], map_unknown_to_unk: bool = False,
                expected_tokens: Optional[int] = None, source: Optional[str] = None) -> Conversion:
    """The ids of a whole file, `<int32>[tokens]`, read chunk by chunk.

    Args:
      path: the split's text file.
      vocabulary: word -> id.
      map_unknown_to_unk: map words outside the vocabulary to `<unk>` instead of dropping them.
      expected_tokens: the exact number of ids, when known (the train split's, from its counts),
        so the array is allocated once; None guesses from the file size and grows.
      source: how the log names the file; its base name by default.
    """
    unknown_id = unknown_word_id(vocabulary, map_unknown_to_unk)
    check_file(path)
    capacity = expected_tokens or os.path.getsize(path) // BYTES_PER_TOKEN_GUESS + 1
    buffer = _IdBuffer(capacity)
    lookup = vocabulary.get
    read = unknown_count = 0
    for text in text_chunks(path):
        words = chunk_words(text)
        read += len(words)
        ids = np.fromiter(map(lookup, words, itertools.repeat(-1)), dtype=np.int32, count=len(words))
        unknown = ids < 0
        missing = int(np.count_nonzero(unknown))
        if missing:
            unknown_count += missing
            if unknown_id is None:
                ids = ids[~unknown]
            else:
                ids[unknown] = unknown_id
        buffer.extend(ids)
    if not read:
        raise DataError(f"{path} is empty: it holds no words.")
    log_unknown_words(source or os.path.basename(path), unknown_count, map_unknown_to_unk)
    return Conversion(buffer.result(), unknown_count)


def load_corpus_files(files: CorpusFiles, map_unknown_to_unk: bool = False) -> Corpus:
    """Reads the three files of `files` with the references' rules, streaming (see the module doc)."""
    paths = files.paths
    counts = count_words(paths["train"])
    vocabulary = vocabulary_from_counts(counts)
    train_tokens = sum(counts.values())
    del counts
    unknown_word_id(vocabulary, map_unknown_to_unk)  # refuse before reading valid and test
    conversions = {
        split: encode_file(paths[split], vocabulary, map_unknown_to_unk,
                           expected_tokens=train_tokens if split == "train" else None)
        for split in SPLITS}
    corpus = Corpus(train=conversions["train"].ids, valid=conversions["valid"].ids,
                    test=conversions["test"].ids, vocabulary=vocabulary,
                    unknown_counts={split: conversions[split].unknown_count for split in SPLITS})
    logging.info("Corpus %s: vocabulary %d, tokens train %d / valid %d / test %d.",
                 files.describe(), corpus.vocab_size, len(corpus.train), len(corpus.valid),
                 len(corpus.test))
    return corpus


def load_corpus(data_dir: Optional[str] = None, map_unknown_to_unk: bool = False, *,
                layout: Optional[str] = None, train_file: Optional[str] = None,
                valid_file: Optional[str] = None, test_file: Optional[str] = None) -> Corpus:
    """Reads a corpus from a folder (any layout of `corpus_files`, or the one named) or three files.

    `load_corpus(folder)` reads `ptb.{train,valid,test}.txt`, `wiki.{train,valid,test}.tokens` or
    `{train,valid,test}.txt`, whichever the folder holds; `load_corpus(train_file=..., valid_file=...,
    test_file=...)` reads three files by path. Every split becomes `<int32>[tokens]` ids.
    """
    files = corpus_files.locate_corpus_files(data_dir, layout, train_file, valid_file, test_file)
    return load_corpus_files(files, map_unknown_to_unk)
