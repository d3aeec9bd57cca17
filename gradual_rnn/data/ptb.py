"""Window layouts of the PTB word language model (the TensorFlow tutorial's reader.py), and the
small word-list reader.

Reading a corpus, any layout, is `reader.py` (streaming; `load_corpus` and `Corpus` are re-exported
here for the callers that import them from this module); finding its files is `corpus_files.py`.
Both references (Zaremba et al.'s tutorial and the Gradual Learning code) read PTB the same way:

1. every newline becomes the token `<eos>`, then the text is split on whitespace;
2. the vocabulary comes from the training file only, ordered by descending count, then by word,
   so `the`=0, `<unk>`=1, `<eos>`=2 on PTB;
3. each split is turned into one long id stream, cut into `batch_size` contiguous streams, and the
   streams are read in windows of `num_steps` tokens, never shuffled.

How one split is laid into batch streams and windows (batch_size B=3, num_steps n=2)::

    ids:  4 3 2 1 0 | 5 6 1 1 1 | 1 0 3 4 1      (the tail beyond B * batch_len is dropped)

    data [B, batch_len]        window 0       window 1
    row 0:  4 3 2 1 0          x: 4 3          x: 2 1
    row 1:  5 6 1 1 1          y: 3 2          y: 1 0
    row 2:  1 0 3 4 1          ...             ...

    x = data[:, i*n:(i+1)*n]      y = data[:, i*n+1:(i+1)*n+1]
    epoch_size = (batch_len - 1) // n

Each row is one stream of text; the recurrent state of row b at the end of window i is the state
row b starts window i+1 with.

`read_words`, `build_vocabulary` and `words_to_ids` are the reader this package had first: the same
rules on a list of every word of a file (about 60 bytes a word), kept for small inputs and as the
reference the streaming reader is tested against.
"""
import collections
import dataclasses
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from gradual_rnn.data import corpus_files
from gradual_rnn.data import reader
# Re-exported: callers import the reader's names, the error and the splits from this module.
from gradual_rnn.data.corpus_files import SPLITS, DataError  # pylint: disable=unused-import
from gradual_rnn.data.reader import (EOS, UNK, Conversion, Corpus,  # pylint: disable=unused-import
                                     load_corpus, load_corpus_files)

FILE_NAMES = corpus_files.PTB.file_names()


def read_words(path: str) -> List[str]:
    """Reads a text file into words, each newline becoming `<eos>` (the reference tokenisation)."""
    reader.check_file(path)
    with open(path, "rb") as handle:
        text = reader.decode_text(handle.read(), path)
    # Same words as `text.replace("\n", " <eos> ").split()`, built line by line with one shared
    # string object per distinct word: the peak memory of reading PTB's train split drops by ~80 MB.
    canonical = {EOS: EOS}
    words = []
    lines = text.split("\n")
    del text
    for number, line in enumerate(lines):
        if number:
            words.append(EOS)
        words.extend([canonical.setdefault(word, word) for word in line.split()])
    del lines
    if not words:
        raise DataError(f"{path} is empty: it holds no words.")
    return words


def build_vocabulary(words: Sequence[str]) -> Dict[str, int]:
    """Maps each word to its id: descending count, ties broken by the word itself."""
    return reader.vocabulary_from_counts(collections.Counter(words))


def words_to_ids(words: Sequence[str], vocabulary: Dict[str, int], map_unknown_to_unk: bool = False,
                 source: str = "corpus") -> Conversion:
    """Converts words to `<int32>[len]` ids.

    Faithful default: words missing from the vocabulary are dropped, as the reference's
    `[word_to_id[w] for w in words if w in word_to_id]` does, and their number is logged.
    With `map_unknown_to_unk` they become `<unk>` instead (which must be in the vocabulary).
    """
    unknown_id = reader.unknown_word_id(vocabulary, map_unknown_to_unk)
    ids = np.empty(len(words), dtype=np.int32)
    kept = unknown_count = 0
    for word in words:
        index = vocabulary.get(word)
        if index is None:
            unknown_count += 1
            if not map_unknown_to_unk:
                continue
            index = unknown_id
        ids[kept] = index
        kept += 1
    ids = ids[:kept].copy()
    reader.log_unknown_words(source, unknown_count, map_unknown_to_unk)
    return Conversion(ids, unknown_count)


def check_directory(data_dir: str) -> None:
    """Raises a DataError naming every missing PTB file of `data_dir` (the PTB layout only)."""
    corpus_files.find_corpus_files(data_dir, layout=corpus_files.PTB.name)


def batch_streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Lays `<int32>[len]` ids into `<int32>[batch_size, batch_len]` contiguous streams (tail dropped)."""
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    batch_len = len(ids) // batch_size
    return np.asarray(ids[:batch_size * batch_len], dtype=np.int32).reshape(batch_size, batch_len)


def epoch_size(num_tokens: int, batch_size: int, num_steps: int) -> int:
    """Number of windows in one pass: `(num_tokens // batch_size - 1) // num_steps`."""
    if num_steps < 1:
        raise DataError(f"num_steps must be at least 1, got {num_steps}.")
    return (num_tokens // batch_size - 1) // num_steps


def check_epoch_size(num_tokens: int, batch_size: int, num_steps: int, name: str = "given") -> int:
    """Returns the epoch size, raising a DataError when the split yields no window at all."""
    size = epoch_size(num_tokens, batch_size, num_steps)
    if size < 1:
        raise DataError(f"The {name} split has {num_tokens} tokens: too few for one window of "
                        f"batch_size={batch_size} x num_steps={num_steps} (needs at least "
                        f"{batch_size * (num_steps + 1)}).")
    return size


def windows(ids: np.ndarray, batch_size: int, num_steps: int,
            name: str = "given") -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yields the `(x, y)` windows of one pass, each `<int32>[batch_size, num_steps]`, in order."""
    data = batch_streams(ids, batch_size)
    for index in range(check_epoch_size(len(ids), batch_size, num_steps, name)):
        start = index * num_steps
        yield data[:, start:start + num_steps], data[:, start + 1:start + num_steps + 1]


def window_arrays(ids: np.ndarray, batch_size: int, num_steps: int,
                  name: str = "given") -> Tuple[np.ndarray, np.ndarray]:
    """All windows of one pass stacked: x and y of `<int32>[epoch_size, batch_size, num_steps]`."""
    size = check_epoch_size(len(ids), batch_size, num_steps, name)
    data = batch_streams(ids, batch_size)
    used = data[:, :size * num_steps + 1]
    inputs = used[:, :-1].reshape(batch_size, size, num_steps).transpose(1, 0, 2)
    targets = used[:, 1:].reshape(batch_size, size, num_steps).transpose(1, 0, 2)
    return np.ascontiguousarray(inputs), np.ascontiguousarray(targets)


def make_dataset(ids: np.ndarray, batch_size: int, num_steps: int, start_window: int = 0):
    """A `tf.data.Dataset` of `(x, y)` windows, `<int32>[batch_size, num_steps]`, in order, no shuffle.

    `start_window` skips the first windows, for resuming a pass in the middle.
    """
    import tensorflow as tf

    inputs, targets = window_arrays(ids, batch_size, num_steps)
    dataset = tf.data.Dataset.from_tensor_slices((inputs[start_window:], targets[start_window:]))
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class ExactWindows:
    """A split laid out so that every target token is scored exactly once, at any batch size.

    inputs, targets, weights: `[num_windows, batch_size, num_steps]`. The split's `len - 1` targets
    are cut into `batch_size` contiguous streams of `ceil((len - 1) / batch_size)` targets; the last
    stream and the last window are padded with weight 0.
    """

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray

    @property
    def num_targets(self) -> int:
        return int(self.weights.sum())


def exact_windows(ids: np.ndarray, batch_size: int, num_steps: int) -> ExactWindows:
    """Lays out `ids` for the exact evaluation (a documented deviation from the references)."""
    num_targets = len(ids) - 1
    if num_targets < 1:
        raise DataError(f"Exact evaluation needs at least 2 tokens, got {len(ids)}.")
    stream_len = -(-num_targets // batch_size)
    num_windows = -(-stream_len // num_steps)
    padded = num_windows * num_steps
    inputs = np.zeros((batch_size, padded), np.int32)
    targets = np.zeros((batch_size, padded), np.int32)
    weights = np.zeros((batch_size, padded), np.float32)
    for row in range(batch_size):
        start = row * stream_len
        count = max(0, min(stream_len, num_targets - start))
        inputs[row, :count] = ids[start:start + count]
        targets[row, :count] = ids[start + 1:start + 1 + count]
        weights[row, :count] = 1.0

    def to_windows(array):
        return np.ascontiguousarray(array.reshape(batch_size, num_windows, num_steps).transpose(1, 0, 2))

    return ExactWindows(to_windows(inputs), to_windows(targets), to_windows(weights))


def describe(corpus: Corpus) -> str:
    """One line of corpus statistics for logs."""
    return (f"vocabulary {corpus.vocab_size}, tokens train {len(corpus.train):,} / "
            f"valid {len(corpus.valid):,} / test {len(corpus.test):,}, words not in the vocabulary "
            f"{corpus.unknown_counts}")



@dataclasses.dataclass(frozen=True)
class RunWindows:
    """Every window layout one training run reads, laid out once from its corpus.

    train_inputs, train_targets: every training window at the run's (batch_size, num_steps),
    `epoch_size` windows a pass;
    valid: `(inputs, targets, weights)` of the validation pass at the training shape; test and
    exact_test: the references' test windows at (test_batch_size, test_num_steps), and the exact
    layout that scores every test token once. Arrays are `[windows, batch, steps]`.
    """

    batch_size: int
    num_steps: int
    epoch_size: int
    train_inputs: np.ndarray  # every training window of a pass, `<int32>[epoch_size, batch, steps]`
    train_targets: np.ndarray
    valid: Tuple[np.ndarray, np.ndarray, np.ndarray]
    test: Tuple[np.ndarray, np.ndarray, np.ndarray]
    exact_test: Tuple[np.ndarray, np.ndarray, np.ndarray]

    def train_block(self, start_window: int, count: int) -> Tuple[np.ndarray, np.ndarray]:
        """Training windows `start_window .. start_window + count - 1`, `[count, batch, steps]` each."""
        end = start_window + count
        return self.train_inputs[start_window:end], self.train_targets[start_window:end]


def _weighted(inputs: np.ndarray, targets: np.ndarray):
    return inputs, targets, np.ones(inputs.shape, np.float32)


def run_windows(corpus: Corpus, batch_size: int, num_steps: int, test_batch_size: int,
                test_num_steps: int) -> RunWindows:
    """Lays out the splits of `corpus` for a run; a DataError names a split too short for its shape."""
    size = check_epoch_size(len(corpus.train), batch_size, num_steps, "train")
    train = window_arrays(corpus.train, batch_size, num_steps, "train split")
    valid = window_arrays(corpus.valid, batch_size, num_steps, "valid split")
    test = window_arrays(corpus.test, test_batch_size, test_num_steps, "test split")
    exact = exact_windows(corpus.test, test_batch_size, test_num_steps)
    return RunWindows(batch_size, num_steps, size, *train, _weighted(*valid), _weighted(*test),
                      (exact.inputs, exact.targets, exact.weights))
