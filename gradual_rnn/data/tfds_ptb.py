"""PTB as a TensorFlow Datasets builder, `gradual_rnn_ptb`, whose examples rebuild the reader exactly.

Each example is one line of a PTB file: `{"index": <int64>[], "text": <string>[]}`, where `index` is
the line's position in its file (0-based) and `text` the line without its newline. Joining a split's
lines in `index` order with newlines gives back the file's text, so `load_corpus_from_tfds` yields
the same id streams as `ptb.load_corpus` (the last piece after the final newline is stored too,
usually empty, so the number of `<eos>` tokens is preserved).

Usage with the three files in a folder of your own (the manual directory)::

    corpus = load_corpus_from_tfds(data_dir="tfds_data", manual_dir="path/to/ptb")

Without a manual directory the builder falls back to `sources.resolve_data_dir()` (the variable
`PTB_DATA_DIR`, the cache, then the download).

This builder serves PTB only. WikiText and corpora of one's own are read by `reader.load_corpus`
(streaming, any layout, any size) from the folder `sources.resolve_corpus_files` finds; asking
`load_corpus_from_tfds` for another dataset is a one-line DataError saying so.
"""
from typing import Dict, List, Optional

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gradual_rnn.data import ptb
from gradual_rnn.data import sources

NAME = "gradual_rnn_ptb"


class GradualRnnPtb(tfds.core.GeneratorBasedBuilder):
    """The Penn Treebank word corpus of Mikolov's simple-examples, one example per line."""

    name = NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per line: the line text and its index in the file."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Place {', '.join(ptb.FILE_NAMES.values())} (the folder simple-examples/data of
    {sources.CANONICAL_URL}) in the manual directory, e.g.
    `tfds build gradual_rnn_ptb --manual_dir=/path/to/ptb` or
    `DownloadConfig(manual_dir="/path/to/ptb")`. Without it, the builder uses the variable
    {sources.DATA_DIR_VARIABLE}, the gradual_rnn cache, or downloads the archive.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Penn Treebank (Mikolov's preprocessing), one example per line, in order.",
            features=tfds.features.FeaturesDict({
                "index": tfds.features.Scalar(dtype=np.int64),
                "text": tfds.features.Text(),
            }),
            homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        directory = _source_directory(dl_manager)
        return {split: self._generate_examples(directory / name)
                for split, name in ptb.FILE_NAMES.items()}

    def _generate_examples(self, path: epath.Path):
        for index, line in enumerate(read_lines(path)):
            yield index, {"index": index, "text": line}


def _source_directory(dl_manager: tfds.download.DownloadManager) -> epath.Path:
    """The manual directory when it exists, else the folder `sources.resolve_data_dir` finds."""
    try:
        directory = epath.Path(dl_manager.manual_dir)
    except AssertionError:  # TFDS signals a missing or empty manual directory this way.
        return epath.Path(sources.resolve_data_dir())
    missing = [name for name in ptb.FILE_NAMES.values() if not (directory / name).exists()]
    if missing:
        raise ptb.DataError(f"The manual directory {directory} lacks {', '.join(missing)}.")
    return directory


def read_lines(path: epath.Path) -> List[str]:
    """The file's text split on newlines (the last piece, after the final newline, included).

    The same checks as `ptb.read_words`: the file must be non-empty UTF-8 text without NUL bytes.
    """
    raw = epath.Path(path).read_bytes()
    if b"\x00" in raw:
        raise ptb.DataError(f"{path} is not a text file (it contains NUL bytes); expected UTF-8 text.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ptb.DataError(f"{path} is not UTF-8 text ({error}).") from None
    if not text.split():
        raise ptb.DataError(f"{path} is empty: it holds no words.")
    return text.split("\n")


def split_words(builder: tfds.core.DatasetBuilder, split: str) -> List[str]:
    """The words of one prepared split, lines sorted by index, each newline becoming `<eos>`."""
    examples = tfds.as_numpy(builder.as_dataset(split=split))
    lines = sorted((int(example["index"]), example["text"].decode("utf-8")) for example in examples)
    if [index for index, _ in lines] != list(range(len(lines))):
        raise ptb.DataError(f"Split {split} of {builder.name} has missing or repeated line indices.")
    return "\n".join(text for _, text in lines).replace("\n", f" {ptb.EOS} ").split()


def load_corpus_from_tfds(data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                          map_unknown_to_unk: bool = False, dataset: str = "ptb") -> ptb.Corpus:
    """Prepares `gradual_rnn_ptb` in `data_dir` if needed and returns the reader's `ptb.Corpus`.

    The ids (`<int32>[len]` per split), vocabulary and unknown-word counts equal those of
    `ptb.load_corpus` on the same three files. `dataset` must be "ptb": the builder serves PTB only.
    """
    if dataset != "ptb":
        raise ptb.DataError(f"The TFDS builder {NAME} serves PTB only, not {dataset!r}; read other "
                            f"corpora with gradual_rnn.data.reader.load_corpus.")
    builder = GradualRnnPtb(data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    words: Dict[str, List[str]] = {split: split_words(builder, split) for split in ptb.SPLITS}
    vocabulary = ptb.build_vocabulary(words["train"])
    conversions = {split: ptb.words_to_ids(words[split], vocabulary, map_unknown_to_unk,
                                            source=f"{NAME}/{split}") for split in ptb.SPLITS}
    return ptb.Corpus(train=conversions["train"].ids, valid=conversions["valid"].ids,
                       test=conversions["test"].ids, vocabulary=vocabulary,
                       unknown_counts={split: conversions[split].unknown_count for split in ptb.SPLITS})
