"""The TFDS builder `gradual_rnn_ptb`: TFDS's own builder test, and ids equal to the reader's."""
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import write_corpus
from gradual_rnn.data import ptb
from gradual_rnn.data import sources
from gradual_rnn.data import tfds_ptb

# Fake example lines: distinct across splits, since TFDS's test refuses examples shared by splits.
FAKE_LINES = {"train": ["a b c", "a b", "c a"], "valid": ["b a b"], "test": ["c c", "a"]}


@pytest.fixture(autouse=True)
def no_environment_sources(monkeypatch):
    """CI sets PTB_DATA_DIR; these tests decide themselves which sources exist."""
    monkeypatch.delenv(sources.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(sources.CACHE_VARIABLE, raising=False)


def _has_dill():
    # tfds.testing.DatasetBuilderTestCase imports dill, which tensorflow-datasets does not install.
    try:
        import dill  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def test_tfds_builder_test_case_can_run():
    """Makes a missing dill visible as a skip instead of a silently absent test class."""
    if not _has_dill():
        pytest.skip("tfds.testing.DatasetBuilderTestCase needs the package dill (pip install dill).")


if _has_dill():

    class GradualRnnPtbBuilderTest(tfds.testing.DatasetBuilderTestCase):
        """TFDS's generic checks: registration, generation, as_dataset, example counts, reload."""

        DATASET_CLASS = tfds_ptb.GradualRnnPtb
        # One example per line plus the empty piece after each file's final newline.
        SPLITS = {split: len(lines) + 1 for split, lines in FAKE_LINES.items()}

        @classmethod
        def setUpClass(cls):
            cls.EXAMPLE_DIR = write_corpus(tempfile.mkdtemp(prefix="fake_ptb_"), **FAKE_LINES)
            super().setUpClass()

        @classmethod
        def tearDownClass(cls):
            super().tearDownClass()
            shutil.rmtree(cls.EXAMPLE_DIR, ignore_errors=True)


def _assert_same_corpus(actual, expected):
    for split in ptb.SPLITS:
        np.testing.assert_array_equal(actual.split(split), expected.split(split))
        assert actual.split(split).dtype == np.int32
    assert actual.vocabulary == expected.vocabulary
    assert actual.unknown_counts == expected.unknown_counts


def test_examples_are_lines_with_their_index(tmp_path):
    manual_dir = write_corpus(tmp_path / "manual", **FAKE_LINES)
    builder = tfds_ptb.GradualRnnPtb(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    examples = sorted((int(example["index"]), example["text"].decode("utf-8"))
                      for example in tfds.as_numpy(builder.as_dataset(split="valid")))
    assert examples == [(0, " b a b "), (1, "")]
    assert builder.info.name == "gradual_rnn_ptb" and str(builder.info.version) == "1.0.0"
    assert builder.info.splits["train"].num_examples == 4


def test_tfds_corpus_equals_the_reader_on_awkward_text(tmp_path, caplog):
    manual_dir = write_corpus(tmp_path / "manual", ["a b  c", "", "b\tc a"], ["a zebra", "c"], ["b"])
    with open(f"{manual_dir}/ptb.test.txt", "w", encoding="utf-8") as handle:
        handle.write("a b\r\nc\n\nb a")  # CRLF, an empty line, no final newline
    corpus = tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), manual_dir=manual_dir)
    _assert_same_corpus(corpus, ptb.load_corpus(manual_dir))
    assert corpus.unknown_counts == {"train": 0, "valid": 1, "test": 0}
    assert "gradual_rnn_ptb/valid: 1 words not in the vocabulary were dropped, as the reference does." in [
        record.getMessage() for record in caplog.records]


def test_tfds_corpus_maps_unknown_words_to_unk(tmp_path):
    manual_dir = write_corpus(tmp_path / "manual", ["a <unk> b"], ["a zebra"], ["yak"])
    corpus = tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), manual_dir=manual_dir,
                                            map_unknown_to_unk=True)
    _assert_same_corpus(corpus, ptb.load_corpus(manual_dir, map_unknown_to_unk=True))
    assert corpus.unknown_counts == {"train": 0, "valid": 1, "test": 1}


def test_without_manual_dir_the_builder_uses_the_variable(tmp_path, tiny_corpus_dir, monkeypatch):
    monkeypatch.setenv(sources.DATA_DIR_VARIABLE, tiny_corpus_dir)
    corpus = tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"))
    _assert_same_corpus(corpus, ptb.load_corpus(tiny_corpus_dir))


def test_manual_dir_without_the_files(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "ptb.train.txt").write_text("a b\n", encoding="utf-8")
    with pytest.raises(ptb.DataError) as raised:
        tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
    assert str(raised.value) == f"The manual directory {manual_dir} lacks ptb.valid.txt, ptb.test.txt."


def test_binary_file_in_manual_dir(tmp_path):
    manual_dir = write_corpus(tmp_path / "manual", ["a"], ["a"], ["a"])
    with open(f"{manual_dir}/ptb.valid.txt", "wb") as handle:
        handle.write(b"a\x00b\n")
    with pytest.raises(ptb.DataError) as raised:
        tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), manual_dir=manual_dir)
    assert str(raised.value) == (f"{manual_dir}/ptb.valid.txt is not a text file (it contains NUL "
                                 f"bytes); expected UTF-8 text.")


def test_real_ptb_lines_through_tfds_equal_the_reader(ptb_dir, tmp_path):
    """The first lines of each real split (TFDS writes and reads back every example, so the whole
    corpus took 30 s for the same code path): the same ids as the reader on the same files."""
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    for split, lines in (("train", 4000), ("valid", 400), ("test", 400)):
        with open(f"{ptb_dir}/ptb.{split}.txt", encoding="utf-8") as source:
            (manual_dir / f"ptb.{split}.txt").write_text("".join(next(source) for _ in range(lines)),
                                                           encoding="utf-8")
    corpus = tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual_dir))
    expected = ptb.load_corpus(str(manual_dir))
    _assert_same_corpus(corpus, expected)
    assert len(corpus.train) > 80_000 and len(corpus.valid) > 8_000 and len(corpus.test) > 8_000
    assert corpus.train[:10].tolist() == expected.train[:10].tolist()


def test_the_builder_serves_ptb_only(tmp_path):
    with pytest.raises(ptb.DataError) as raised:
        tfds_ptb.load_corpus_from_tfds(data_dir=str(tmp_path / "tfds"), dataset="wikitext2")
    assert str(raised.value) == ("The TFDS builder gradual_rnn_ptb serves PTB only, not 'wikitext2'; "
                                 "read other corpora with gradual_rnn.data.reader.load_corpus.")
    assert not (tmp_path / "tfds").exists()
