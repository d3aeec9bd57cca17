"""The streaming reader: equal to the word-list reader on real PTB and on awkward text at any chunk
size, the same rules in every layout, its one-line errors, and the corpus fingerprint."""
import logging
import os

import numpy as np
import pytest

from conftest import write_corpus
from gradual_rnn.data import ptb
from gradual_rnn.data import reader
from gradual_rnn.data.corpus_files import DataError

PTB_FINGERPRINT = "b2f819c360e2671402fb68e410a3f4a3017f4cebb7f14542f07f161fb104502d"

# A WikiText-like corpus: a leading blank line, `= Heading =` lines, `<unk>` and `@-@` tokens.
WIKI_TEXTS = {
    "train": " \n = Heading = \n \n the cat sat on the <unk> @-@ mat \n = = Sub = = \n the cat \n",
    "valid": " = Heading = \n the dog sat \n",
    "test": " \n the mat \n",
}
# Counts: <eos> 6 and = 6 (so <eos> < = by the word), the 3, cat 2, then the words seen once.
WIKI_VOCABULARY = {"<eos>": 0, "=": 1, "the": 2, "cat": 3, "<unk>": 4, "@-@": 5, "Heading": 6,
                   "Sub": 7, "mat": 8, "on": 9, "sat": 10}


def _write_texts(folder, texts, pattern):
    folder.mkdir(exist_ok=True)
    for split, text in texts.items():
        (folder / pattern.format(split=split)).write_text(text, encoding="utf-8")
    return str(folder)


def _word_list_corpus(paths, map_unknown_to_unk=False):
    """The package's first reader: every word of a split held in a list."""
    words = {split: ptb.read_words(path) for split, path in paths.items()}
    vocabulary = ptb.build_vocabulary(words["train"])
    conversions = {split: ptb.words_to_ids(words[split], vocabulary, map_unknown_to_unk)
                   for split in ptb.SPLITS}
    return reader.Corpus(conversions["train"].ids, conversions["valid"].ids, conversions["test"].ids,
                         vocabulary, {split: conversions[split].unknown_count for split in ptb.SPLITS})


def _assert_same_corpus(actual, expected):
    for split in ptb.SPLITS:
        assert actual.split(split).dtype == np.int32
        np.testing.assert_array_equal(actual.split(split), expected.split(split))
    assert actual.vocabulary == expected.vocabulary
    assert list(actual.vocabulary) == list(expected.vocabulary)  # the same order too
    assert actual.unknown_counts == expected.unknown_counts
    assert actual.fingerprint() == expected.fingerprint()


# --- Real PTB: the streaming reader equals the word-list reader. ---

@pytest.fixture(scope="module")
def streamed_ptb(ptb_dir):
    return reader.load_corpus(ptb_dir)


def test_real_ptb_streaming_equals_the_word_lists(ptb_dir, streamed_ptb):
    paths = {split: os.path.join(ptb_dir, name) for split, name in ptb.FILE_NAMES.items()}
    _assert_same_corpus(streamed_ptb, _word_list_corpus(paths))
    assert (len(streamed_ptb.train), len(streamed_ptb.valid), len(streamed_ptb.test)) == (
        929_589, 73_760, 82_430)
    assert streamed_ptb.vocab_size == 10_000
    assert streamed_ptb.unknown_counts == {"train": 0, "valid": 0, "test": 0}
    assert streamed_ptb.fingerprint() == PTB_FINGERPRINT
    sizes = {(split, steps): ptb.epoch_size(len(streamed_ptb.split(split)), 20, steps)
             for split in ptb.SPLITS for steps in (20, 35)}
    assert sizes == {("train", 20): 2323, ("train", 35): 1327, ("valid", 20): 184,
                     ("valid", 35): 105, ("test", 20): 206, ("test", 35): 117}


def test_real_ptb_mapping_unknown_words_changes_nothing(ptb_dir, streamed_ptb):
    """PTB's valid and test words are all in its vocabulary: `<unk>` mapping has nothing to map."""
    assert ptb.load_corpus is reader.load_corpus
    mapped = ptb.load_corpus(ptb_dir, map_unknown_to_unk=True, layout="ptb")
    _assert_same_corpus(mapped, streamed_ptb)


# --- Awkward text at tiny chunk sizes: the same tokens as the word lists. ---

AWKWARD = {
    "train": ("  café au lait\r\nthe\tcat\n\n日本語 the 🙂 cat\u2028dog\x85x\xa0y " + "long" * 20
              + "\nthe"),
    "valid": "the cat\n\nzebra café\n",
    "test": "\n\n\n" + "x" * 50,
}


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64, 1 << 20])
def test_awkward_text_at_any_chunk_size(tmp_path, monkeypatch, chunk_bytes):
    folder = _write_texts(tmp_path / "awkward", AWKWARD, "{split}.txt")
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk_bytes)
    corpus = reader.load_corpus(folder)
    expected = _word_list_corpus({split: f"{folder}/{split}.txt" for split in ptb.SPLITS})
    _assert_same_corpus(corpus, expected)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (18, 6, 3)
    assert corpus.unknown_counts == {"train": 0, "valid": 1, "test": 1}


def test_text_chunks_end_at_separators(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("ab cd\nef\tgh", encoding="utf-8")
    assert list(reader.text_chunks(str(path), chunk_bytes=4)) == ["ab ", "cd\n", "ef\t", "gh"]
    assert reader.chunk_words("a b\n\nc") == ["a", "b", "<eos>", "<eos>", "c"]


def test_a_split_longer_than_its_guessed_size_grows(tmp_path):
    folder = _write_texts(tmp_path / "eos", {"train": "a\n", "valid": "\n" * 100, "test": "a"},
                          "{split}.txt")
    corpus = reader.load_corpus(folder)
    assert corpus.valid.tolist() == [corpus.vocabulary["<eos>"]] * 100


# --- The same rules in every layout. ---

@pytest.fixture
def wiki_dir(tmp_path):
    return _write_texts(tmp_path / "wikitext-2", WIKI_TEXTS, "wiki.{split}.tokens")


def test_wikitext_layout_headings_are_text_and_unknown_words_dropped(wiki_dir, caplog):
    with caplog.at_level(logging.WARNING):
        corpus = reader.load_corpus(wiki_dir)
    assert corpus.vocabulary == WIKI_VOCABULARY and corpus.vocab_size == 11
    assert corpus.words()[:4] == ["<eos>", "=", "the", "cat"]
    assert corpus.train.tolist() == [0, 1, 6, 1, 0, 0, 2, 3, 10, 9, 2, 4, 5, 8, 0, 1, 1, 7, 1, 1, 0,
                                     2, 3, 0]
    assert corpus.valid.tolist() == [1, 6, 1, 0, 2, 10, 0]  # `dog` dropped
    assert corpus.test.tolist() == [0, 2, 8, 0]
    assert corpus.unknown_counts == {"train": 0, "valid": 1, "test": 0}
    assert [record.getMessage() for record in caplog.records] == [
        "wiki.valid.tokens: 1 words not in the vocabulary were dropped, as the reference does."]


def test_wikitext_layout_maps_unknown_words_to_unk(wiki_dir, caplog):
    with caplog.at_level(logging.WARNING):
        corpus = reader.load_corpus(wiki_dir, map_unknown_to_unk=True)
    assert corpus.valid.tolist() == [1, 6, 1, 0, 2, 4, 10, 0]  # `dog` is <unk> (4)
    assert corpus.unknown_counts == {"train": 0, "valid": 1, "test": 0}
    assert [record.getMessage() for record in caplog.records] == [
        "wiki.valid.tokens: 1 words not in the vocabulary were mapped to <unk>."]


def test_every_layout_and_explicit_files_read_the_same(tmp_path, wiki_dir):
    expected = reader.load_corpus(wiki_dir)
    plain = _write_texts(tmp_path / "plain", WIKI_TEXTS, "{split}.txt")
    ptb_named = _write_texts(tmp_path / "ptb", WIKI_TEXTS, "ptb.{split}.txt")
    mine = _write_texts(tmp_path / "mine", WIKI_TEXTS, "my-{split}.tok")
    explicit = reader.load_corpus(train_file=f"{mine}/my-train.tok", valid_file=f"{mine}/my-valid.tok",
                                  test_file=f"{mine}/my-test.tok")
    for corpus in (reader.load_corpus(plain), reader.load_corpus(ptb_named), explicit,
                   reader.load_corpus(plain, layout="plain")):
        _assert_same_corpus(corpus, expected)


def test_ptb_named_corpus_with_unknown_words_counts_them(tmp_path):
    folder = write_corpus(tmp_path / "small", ["a b c", "a b"], ["a zebra b", "yak c"], ["c c a", "emu"])
    corpus = reader.load_corpus(folder)
    assert corpus.vocabulary == {"<eos>": 0, "a": 1, "b": 2, "c": 3}
    assert corpus.test.tolist() == [3, 3, 1, 0, 0]
    assert corpus.unknown_counts == {"train": 0, "valid": 2, "test": 1}


# --- Bad input: one line naming the file. ---

def test_an_empty_split(tmp_path):
    folder = _write_texts(tmp_path / "empty", {"train": "a b\n", "valid": " \t ", "test": "a\n"},
                          "{split}.txt")
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder)
    assert str(raised.value) == f"{folder}/valid.txt is empty: it holds no words."
    _write_texts(tmp_path / "empty", {"train": "", "valid": "a\n"}, "{split}.txt")
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder)
    assert str(raised.value) == f"{folder}/train.txt is empty: it holds no words."


def test_a_missing_split(tmp_path):
    folder = _write_texts(tmp_path / "two", {"train": "a\n", "test": "a\n"}, "{split}.txt")
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder)
    assert str(raised.value) == (f"{folder} lacks the plain file(s) valid.txt; expected train.txt, "
                                 f"valid.txt, test.txt (a corpus of one's own).")


@pytest.mark.parametrize("chunk_bytes", [8, 1 << 20])
def test_non_utf8_names_the_file_and_the_byte_like_the_word_lists(tmp_path, monkeypatch, chunk_bytes):
    folder = _write_texts(tmp_path / "latin", {"train": "a b\n", "valid": "a\n", "test": "a\n"},
                          "{split}.txt")
    path = f"{folder}/test.txt"
    with open(path, "wb") as handle:
        handle.write("a b c\nd e f\ncafé au lait\n".encode("latin-1"))
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk_bytes)
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder)
    assert str(raised.value) == (f"{path} is not UTF-8 text ('utf-8' codec can't decode byte 0xe9 in "
                                 f"position 15: invalid continuation byte).")
    with pytest.raises(DataError) as word_lists:
        ptb.read_words(path)
    assert str(word_lists.value) == str(raised.value)


def test_nul_bytes_name_the_file(tmp_path):
    folder = _write_texts(tmp_path / "nul", {"train": "a b\n", "valid": "a\n", "test": "a\n"},
                          "{split}.txt")
    with open(f"{folder}/train.txt", "wb") as handle:
        handle.write(b"the cat\x00\x01\n")
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder)
    assert str(raised.value) == (f"{folder}/train.txt is not a text file (it contains NUL bytes); "
                                 f"expected UTF-8 text.")


def test_map_unknown_to_unk_without_unk_is_refused_before_valid_is_read(tmp_path):
    folder = _write_texts(tmp_path / "no_unk", {"train": "a b\n", "valid": "\x00", "test": "a\n"},
                          "{split}.txt")
    with pytest.raises(DataError) as raised:
        reader.load_corpus(folder, map_unknown_to_unk=True)
    assert str(raised.value) == "map_unknown_to_unk needs '<unk>' in the vocabulary; it has none."


# --- The fingerprint: the identity a run saves to refuse resuming on other data. ---

def test_fingerprint_same_corpus_same_value(wiki_dir):
    first = reader.load_corpus(wiki_dir).fingerprint()
    assert first == reader.load_corpus(wiki_dir).fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0


def test_fingerprint_changes_with_a_word_the_unknown_rule_or_a_prefix(tmp_path, wiki_dir):
    corpus = reader.load_corpus(wiki_dir)
    changed_texts = dict(WIKI_TEXTS, test=WIKI_TEXTS["test"].replace("mat", "cat"))
    changed = reader.load_corpus(_write_texts(tmp_path / "changed", changed_texts, "wiki.{split}.tokens"))
    mapped = reader.load_corpus(wiki_dir, map_unknown_to_unk=True)
    prefix = reader.Corpus(corpus.train[:20], corpus.valid[:5], corpus.test[:3], corpus.vocabulary,
                           corpus.unknown_counts)
    fingerprints = {corpus.fingerprint(), changed.fingerprint(), mapped.fingerprint(),
                    prefix.fingerprint()}
    assert len(fingerprints) == 4


def test_fingerprint_changes_with_the_vocabulary_alone(wiki_dir):
    corpus = reader.load_corpus(wiki_dir)
    renamed = dict(corpus.vocabulary)
    renamed["dog"] = renamed.pop("mat")
    other = reader.Corpus(corpus.train, corpus.valid, corpus.test, renamed, corpus.unknown_counts)
    assert other.fingerprint() != corpus.fingerprint()
