"""Datasets by name: WikiText through an offline zip archive (checksums, published sizes, the cache
left untouched on refusal), the cache folders, and a corpus of one's own through the flag or files."""
import dataclasses
import hashlib
import os
import stat
import urllib.request
import zipfile

import pytest

from conftest import write_corpus
from gradual_rnn.data import reader
from gradual_rnn.data import sources
from gradual_rnn.data.corpus_files import DataError

# Tokens per split with one <eos> per line: train 24, valid 8, test 4; vocabulary 11 with <eos>.
WIKI_TEXTS = {
    "train": " \n = Heading = \n \n the cat sat on the <unk> @-@ mat \n = = Sub = = \n the cat \n",
    "valid": " = Heading = \n the dog sat \n",
    "test": " \n the mat \n",
}
TINY_STATISTICS = sources.CorpusStatistics(tokens={"train": 24, "valid": 8, "test": 4},
                                           vocabulary_size=11)


@pytest.fixture(autouse=True)
def no_environment_sources(monkeypatch):
    """CI sets PTB_DATA_DIR; these tests decide themselves which sources exist."""
    monkeypatch.delenv(sources.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(sources.CACHE_VARIABLE, raising=False)


def _forbid_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _write_zip(path, splits=("train", "valid", "test"), symlink_train=False):
    """A tiny wikitext-2-v1.zip: wikitext-2/wiki.*.tokens plus decoys (a raw file, an escaping name)."""
    with zipfile.ZipFile(path, "w") as archive:
        for split in splits:
            archive.writestr(f"wikitext-2/wiki.{split}.tokens", WIKI_TEXTS[split])
        archive.writestr("wikitext-2/wiki.train.raw", "The cat sat.\n")
        archive.writestr("../../escaped.tokens", "outside\n")
        if symlink_train:
            link = zipfile.ZipInfo("wikitext-2/wiki.train.tokens")
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(link, "/etc/passwd")
    return path.as_uri()


def _md5s():
    return {f"wiki.{split}.tokens": hashlib.md5(text.encode("utf-8")).hexdigest()
            for split, text in WIKI_TEXTS.items()}


def _wikitext2(url, **changes):
    return dataclasses.replace(sources.DATASETS["wikitext2"], url=url, **changes)


@pytest.fixture
def zip_url(tmp_path):
    return _write_zip(tmp_path / "wikitext-2-v1.zip")


@pytest.fixture
def cache_root(tmp_path):
    """A cache root that already holds a PTB folder, which no WikiText download may touch."""
    write_corpus(tmp_path / "cache" / "ptb", ["a"], ["a"], ["a"])
    return tmp_path / "cache"


def _assert_untouched(cache_root):
    assert os.listdir(cache_root) == ["ptb"]
    assert sorted(os.listdir(cache_root / "ptb")) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


# --- The named datasets. ---

def test_the_named_datasets():
    assert list(sources.DATASETS) == ["ptb", "wikitext2", "wikitext103"]
    wikitext2, wikitext103 = sources.DATASETS["wikitext2"], sources.DATASETS["wikitext103"]
    assert wikitext2.url == "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
    assert wikitext103.url == "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"
    assert (wikitext2.archive_folder, wikitext103.archive_folder) == ("wikitext-2", "wikitext-103")
    assert wikitext2.file_names() == {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens",
                                      "test": "wiki.test.tokens"}
    assert wikitext2.expected_statistics == sources.CorpusStatistics(
        {"train": 2_088_628, "valid": 217_646, "test": 245_569}, 33_278)
    assert wikitext103.expected_statistics == sources.CorpusStatistics({"train": 103_227_021}, 267_735)
    assert sources.DATASETS["ptb"].expected_md5 == sources.PTB_MD5
    with pytest.raises(DataError) as raised:
        sources.get_dataset("wikitext3")
    assert str(raised.value) == "Unknown dataset 'wikitext3'; expected one of ptb, wikitext2, wikitext103."


def test_cache_folders_per_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    root = tmp_path / ".cache" / "gradual_rnn"
    assert sources.default_cache_dir("wikitext2") == str(root / "wikitext2")
    assert sources.default_cache_dir("wikitext103") == str(root / "wikitext103")
    monkeypatch.setenv(sources.CACHE_VARIABLE, str(tmp_path / "data" / "ptb"))
    assert sources.default_cache_dir() == str(tmp_path / "data" / "ptb")
    assert sources.default_cache_dir("wikitext2") == str(tmp_path / "data" / "wikitext2")


# --- WikiText downloads through a local zip archive. ---

def test_zip_download_with_the_right_checksums_is_used(tmp_path, zip_url, cache_root, monkeypatch):
    spec = _wikitext2(zip_url, expected_md5=_md5s(), expected_statistics=None)
    cache_dir = str(cache_root / "wikitext2")
    files = sources.resolve_corpus_files(dataset=spec, cache_dir=cache_dir)
    assert (files.directory, files.layout) == (cache_dir, "wikitext")
    assert sorted(os.listdir(cache_root)) == ["ptb", "wikitext2"]  # no staging folder left behind
    assert sorted(os.listdir(cache_dir)) == ["wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"]
    assert not (tmp_path / "escaped.tokens").exists()
    corpus = reader.load_corpus(cache_dir)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test), corpus.vocab_size) == (24, 7, 4, 11)
    _forbid_network(monkeypatch)
    assert sources.resolve_data_dir(dataset=spec, cache_dir=cache_dir) == cache_dir


def test_zip_download_with_a_wrong_checksum_is_refused(zip_url, cache_root):
    wrong = dict(_md5s(), **{"wiki.valid.tokens": "0" * 32})
    spec = _wikitext2(zip_url, expected_md5=wrong, expected_statistics=None)
    with pytest.raises(sources.ChecksumError) as raised:
        sources.resolve_corpus_files(dataset=spec, cache_dir=str(cache_root / "wikitext2"))
    assert str(raised.value) == (f"Checksum mismatch for wiki.valid.tokens: expected MD5 {'0' * 32}, "
                                 f"got {_md5s()['wiki.valid.tokens']}. The file is refused.")
    _assert_untouched(cache_root)


def test_the_published_sizes_refuse_a_tiny_archive(zip_url, cache_root):
    with pytest.raises(sources.StatisticsError) as raised:
        sources.resolve_corpus_files(dataset=_wikitext2(zip_url), cache_dir=str(cache_root / "wikitext2"))
    assert str(raised.value) == ("wiki.train.tokens has 24 tokens, but the published WikiText-2 has "
                                 "2,088,628 (counting one <eos> per line). The files are refused.")
    _assert_untouched(cache_root)


def test_sizes_are_checked_split_by_split_and_the_vocabulary(zip_url, cache_root):
    cache_dir = str(cache_root / "wikitext2")
    wrong_vocabulary = dataclasses.replace(TINY_STATISTICS, vocabulary_size=12)
    with pytest.raises(sources.StatisticsError) as raised:
        sources.resolve_data_dir(dataset=_wikitext2(zip_url, expected_statistics=wrong_vocabulary),
                                 cache_dir=cache_dir)
    assert str(raised.value) == ("wiki.train.tokens gives a vocabulary of 11 words, but the published "
                                 "WikiText-2 has 12 (counting one <eos> per line). The files are refused.")
    wrong_test = dataclasses.replace(TINY_STATISTICS, tokens=dict(TINY_STATISTICS.tokens, test=5))
    with pytest.raises(sources.StatisticsError, match=r"^wiki.test.tokens has 4 tokens, but the "):
        sources.resolve_data_dir(dataset=_wikitext2(zip_url, expected_statistics=wrong_test),
                                 cache_dir=cache_dir)
    _assert_untouched(cache_root)
    spec = _wikitext2(zip_url, expected_statistics=TINY_STATISTICS)
    assert sources.resolve_data_dir(dataset=spec, cache_dir=cache_dir) == cache_dir
    sources.verify_statistics(cache_dir, spec)


def test_zip_without_a_file_or_with_a_symlink_is_refused(tmp_path, cache_root):
    partial = _write_zip(tmp_path / "partial.zip", splits=("train",))
    with pytest.raises(DataError) as raised:
        sources.resolve_data_dir(dataset=_wikitext2(partial), cache_dir=str(cache_root / "wikitext2"))
    assert str(raised.value) == ("The archive lacks the regular file(s) wikitext-2/wiki.test.tokens, "
                                 "wikitext-2/wiki.valid.tokens.")
    linked = _write_zip(tmp_path / "linked.zip", splits=("valid", "test"), symlink_train=True)
    with pytest.raises(DataError, match=r"lacks the regular file\(s\) wikitext-2/wiki\.train\.tokens\.$"):
        sources.resolve_data_dir(dataset=_wikitext2(linked), cache_dir=str(cache_root / "wikitext2"))
    _assert_untouched(cache_root)


def test_wikitext_without_data_ignores_the_ptb_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.DATA_DIR_VARIABLE, write_corpus(tmp_path / "ptb", ["a"], ["a"], ["a"]))
    cache_dir = str(tmp_path / "cache" / "wikitext2")
    with pytest.raises(DataError) as raised:
        sources.resolve_corpus_files(dataset="wikitext2", cache_dir=cache_dir, download=False)
    assert str(raised.value) == (
        f"WikiText-2 data not found: no --data_path flag, no cache at {cache_dir}, and the download "
        f"from {sources.WIKITEXT2_URL} failed (downloading is disabled). Set --data_path to a folder "
        f"holding wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens.")


# --- A corpus of one's own: the flag takes any layout, or three files. ---

def test_the_flag_takes_any_layout(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for split, text in WIKI_TEXTS.items():
        (folder / f"{split}.txt").write_text(text, encoding="utf-8")
    files = sources.resolve_corpus_files(str(folder), dataset="wikitext103", download=False)
    assert (files.directory, files.layout) == (str(folder), "plain")
    assert sources.resolve_data_dir(str(folder), download=False) == str(folder)


def test_explicit_files_through_the_resolver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for split, text in WIKI_TEXTS.items():
        (tmp_path / f"{split}.tok").write_text(text, encoding="utf-8")
    files = sources.resolve_corpus_files(train_file="train.tok", valid_file="valid.tok",
                                         test_file="test.tok", download=False)
    assert files.layout == "explicit" and files.directory is None
    assert files.paths == {split: str(tmp_path / f"{split}.tok") for split in ("train", "valid", "test")}
    with pytest.raises(DataError, match=r"^Give either a corpus folder or the three files, not both"):
        sources.resolve_corpus_files(str(tmp_path), train_file="train.tok", valid_file="valid.tok",
                                     test_file="test.tok")
