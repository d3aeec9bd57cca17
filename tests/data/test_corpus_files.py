"""Finding a corpus's three files: each layout by its names, explicit paths, and every refusal."""
import os

import pytest

from gradual_rnn.data import corpus_files
from gradual_rnn.data.corpus_files import DataError


def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text("a b\n", encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize("names, layout", [
    (("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), "ptb"),
    (("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"), "wikitext"),
    (("train.txt", "valid.txt", "test.txt"), "plain"),
])
def test_each_layout_is_recognised_by_its_names(tmp_path, names, layout):
    folder = _touch(tmp_path / "corpus", *names, "README", "ptb.char.train.txt")
    files = corpus_files.find_corpus_files(folder)
    assert files.layout == layout and files.directory == folder
    assert dict(files.paths) == {split: os.path.join(folder, name)
                                 for split, name in zip(corpus_files.SPLITS, names)}
    assert files.describe() == f"{folder} ({layout} layout)"


def test_layout_descriptions():
    assert [layout.describe() for layout in corpus_files.LAYOUTS.values()] == [
        "ptb.{train,valid,test}.txt", "wiki.{train,valid,test}.tokens", "{train,valid,test}.txt"]


def test_explicit_files_under_any_names(tmp_path):
    folder = _touch(tmp_path / "mine", "a.tok", "b.tok", "c.tok")
    files = corpus_files.locate_corpus_files(train_file=f"{folder}/a.tok", valid_file=f"{folder}/b.tok",
                                             test_file=f"{folder}/c.tok")
    assert files.layout == "explicit" and files.directory is None
    assert files.paths == {"train": f"{folder}/a.tok", "valid": f"{folder}/b.tok", "test": f"{folder}/c.tok"}
    assert files.describe() == f"files train={folder}/a.tok, valid={folder}/b.tok, test={folder}/c.tok"


def test_a_folder_of_no_layout(tmp_path):
    folder = _touch(tmp_path / "other", "notes.md", "data.csv")
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(folder)
    assert str(raised.value) == (
        f"{folder} holds no corpus files (it holds data.csv, notes.md); expected "
        f"ptb.{{train,valid,test}}.txt (PTB), wiki.{{train,valid,test}}.tokens (WikiText), "
        f"{{train,valid,test}}.txt (plain), or three files given explicitly.")


def test_an_empty_folder_and_a_long_listing(tmp_path):
    empty = _touch(tmp_path / "empty")
    with pytest.raises(DataError, match=r"holds no corpus files \(it is empty\); expected"):
        corpus_files.find_corpus_files(empty)
    crowded = _touch(tmp_path / "crowded", *(f"file{index:02d}.csv" for index in range(11)))
    with pytest.raises(DataError, match=r"\(it holds file00.csv, .*, file07.csv and 3 more\); expected"):
        corpus_files.find_corpus_files(crowded)


def test_a_folder_of_two_layouts(tmp_path):
    folder = _touch(tmp_path / "both", "ptb.train.txt", "ptb.valid.txt", "ptb.test.txt", "train.txt")
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(folder)
    assert str(raised.value) == (
        f"{folder} holds the files of more than one layout, PTB (ptb.train.txt, ptb.valid.txt, "
        f"ptb.test.txt) and plain (train.txt); name the layout (ptb, plain) or give the three files "
        f"explicitly.")
    assert corpus_files.find_corpus_files(folder, layout="ptb").layout == "ptb"


def test_a_layout_lacking_a_split(tmp_path):
    folder = _touch(tmp_path / "wiki", "wiki.train.tokens", "wiki.valid.tokens")
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(folder)
    assert str(raised.value) == (
        f"{folder} lacks the WikiText file(s) wiki.test.tokens; expected wiki.train.tokens, "
        f"wiki.valid.tokens, wiki.test.tokens (the wikitext-2/ or wikitext-103/ folder of the "
        f"WikiText zip archives).")


def test_missing_folder_and_unknown_layout(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(missing)
    assert str(raised.value) == f"Corpus folder not found: {missing}"
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(missing, layout="wikitext")
    assert str(raised.value) == f"WikiText data directory not found: {missing}"
    with pytest.raises(DataError) as raised:
        corpus_files.find_corpus_files(str(tmp_path), layout="csv")
    assert str(raised.value) == "Unknown corpus layout 'csv'; expected one of ptb, wikitext, plain."


def test_explicit_files_must_be_three_existing_files(tmp_path):
    folder = _touch(tmp_path / "mine", "a.txt", "b.txt")
    with pytest.raises(DataError) as raised:
        corpus_files.locate_corpus_files(train_file=f"{folder}/a.txt", test_file=f"{folder}/b.txt")
    assert str(raised.value) == ("Explicit corpus files need all three of train_file, valid_file, "
                                 "test_file; missing valid_file.")
    with pytest.raises(DataError) as raised:
        corpus_files.locate_corpus_files(train_file=f"{folder}/a.txt", valid_file=f"{folder}/gone.txt",
                                         test_file=f"{folder}/b.txt")
    assert str(raised.value) == f"The valid file {folder}/gone.txt was not found."
    with pytest.raises(DataError) as raised:
        corpus_files.explicit_corpus_files(f"{folder}/a.txt", f"{folder}/b.txt", folder)
    assert str(raised.value) == f"The test file {folder} is a directory; expected a text file."


def test_a_folder_and_files_together_or_nothing(tmp_path):
    folder = _touch(tmp_path / "mine", "a.txt")
    with pytest.raises(DataError) as raised:
        corpus_files.locate_corpus_files(folder, train_file=f"{folder}/a.txt")
    assert str(raised.value) == (f"Give either a corpus folder or the three files, not both: got the "
                                 f"folder {folder} and train_file.")
    with pytest.raises(DataError) as raised:
        corpus_files.locate_corpus_files()
    assert str(raised.value) == ("No corpus given: name a corpus folder or the three files train_file, "
                                 "valid_file, test_file.")
