"""Where the data comes from: flag, variable, cache and an offline download of a tiny archive."""
import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
import urllib.request

import pytest

from conftest import write_corpus
from gradual_rnn.data import ptb
from gradual_rnn.data import sources

UNREACHABLE_URL = "http://127.0.0.1:9/simple-examples.tgz"
TINY_LINES = {"train": ["a b c", "a b"], "valid": ["b a"], "test": ["c a b"]}


@pytest.fixture(autouse=True)
def no_environment_sources(monkeypatch):
    """CI sets PTB_DATA_DIR; these tests decide themselves which sources exist."""
    monkeypatch.delenv(sources.DATA_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(sources.CACHE_VARIABLE, raising=False)


def _tiny_texts():
    return {split: "".join(f" {line} \n" for line in lines) for split, lines in TINY_LINES.items()}


def _md5(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _add_file(archive, name, text):
    payload = text.encode("utf-8")
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    archive.addfile(member, io.BytesIO(payload))


def _write_archive(path, prefix="./simple-examples/data/", splits=ptb.SPLITS):
    """A tiny simple-examples.tgz with decoys: another file and a member escaping the folder."""
    texts = _tiny_texts()
    with tarfile.open(path, "w:gz") as archive:
        for split in splits:
            _add_file(archive, f"{prefix}ptb.{split}.txt", texts[split])
        _add_file(archive, "./simple-examples/data/ptb.char.train.txt", "a _ b\n")
        _add_file(archive, "../../escaped.txt", "outside\n")
    return str(path)


@pytest.fixture
def tiny_md5():
    return {f"ptb.{split}.txt": _md5(text) for split, text in _tiny_texts().items()}


@pytest.fixture
def archive_dir(tmp_path):
    directory = tmp_path / "served"
    directory.mkdir()
    _write_archive(directory / "simple-examples.tgz")
    return directory


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        del format, args


@pytest.fixture
def http_url(archive_dir):
    """Serves `archive_dir` on 127.0.0.1 at a free port for the duration of one test."""
    handler = functools.partial(_QuietHandler, directory=str(archive_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple-examples.tgz"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def file_url(archive_dir):
    return (archive_dir / "simple-examples.tgz").as_uri()


def _forbid_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _assert_cache_holds_the_tiny_corpus(cache_dir):
    assert sorted(os.listdir(cache_dir)) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    corpus = ptb.load_corpus(cache_dir)
    assert corpus.train.tolist() == [1, 2, 3, 0, 1, 2, 0]


# --- Download, end to end and offline. ---

@pytest.mark.parametrize("url_fixture", ["http_url", "file_url"])
def test_download_fills_the_cache_then_the_cache_is_used(request, tmp_path, tiny_md5, monkeypatch,
                                                         url_fixture):
    url = request.getfixturevalue(url_fixture)
    cache_dir = str(tmp_path / "cache" / "ptb")
    found = sources.resolve_data_dir(cache_dir=cache_dir, url=url, expected_md5=tiny_md5)
    assert found == cache_dir
    _assert_cache_holds_the_tiny_corpus(cache_dir)
    assert os.listdir(tmp_path / "cache") == ["ptb"]  # no staging folder left behind
    assert not (tmp_path / "cache" / "escaped.txt").exists()
    _forbid_network(monkeypatch)
    assert sources.resolve_data_dir(cache_dir=cache_dir, url=url, expected_md5=tiny_md5) == cache_dir


def test_cache_variable_sets_the_default_cache(tmp_path, monkeypatch, file_url, tiny_md5):
    monkeypatch.setenv(sources.CACHE_VARIABLE, str(tmp_path / "elsewhere"))
    assert sources.default_cache_dir() == str(tmp_path / "elsewhere")
    assert sources.resolve_data_dir(url=file_url, expected_md5=tiny_md5) == str(tmp_path / "elsewhere")
    _assert_cache_holds_the_tiny_corpus(str(tmp_path / "elsewhere"))


def test_default_cache_is_under_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sources.default_cache_dir() == str(tmp_path / ".cache" / "gradual_rnn" / "ptb")


def test_download_into_an_existing_empty_cache_folder(tmp_path, file_url, tiny_md5):
    cache_dir = tmp_path / "ptb"
    cache_dir.mkdir()
    assert sources.resolve_data_dir(cache_dir=str(cache_dir), url=file_url,
                                    expected_md5=tiny_md5) == str(cache_dir)
    _assert_cache_holds_the_tiny_corpus(str(cache_dir))


def test_checksum_mismatch_is_refused_and_leaves_no_cache(tmp_path, http_url, tiny_md5):
    wrong = dict(tiny_md5, **{"ptb.valid.txt": "0" * 32})
    cache_dir = tmp_path / "cache" / "ptb"
    with pytest.raises(sources.ChecksumError) as raised:
        sources.resolve_data_dir(cache_dir=str(cache_dir), url=http_url, expected_md5=wrong)
    assert str(raised.value) == (f"Checksum mismatch for ptb.valid.txt: expected MD5 {'0' * 32}, "
                                 f"got {tiny_md5['ptb.valid.txt']}. The file is refused.")
    assert os.listdir(tmp_path / "cache") == []


def test_canonical_checksums_refuse_the_tiny_archive(tmp_path, file_url, tiny_md5):
    with pytest.raises(sources.ChecksumError) as raised:
        sources.resolve_data_dir(cache_dir=str(tmp_path / "ptb"), url=file_url)
    assert str(raised.value) == (f"Checksum mismatch for ptb.test.txt: expected MD5 "
                                 f"8b80168b89c18661a38ef683c0dc3721, got {tiny_md5['ptb.test.txt']}. "
                                 f"The file is refused.")
    assert not (tmp_path / "ptb").exists()


def test_archive_without_the_files_is_refused(tmp_path, tiny_md5):
    archive = _write_archive(tmp_path / "partial.tgz", splits=("train",))
    with pytest.raises(ptb.DataError) as raised:
        sources.resolve_data_dir(cache_dir=str(tmp_path / "ptb"), url=f"file://{archive}",
                                 expected_md5=tiny_md5)
    assert str(raised.value) == ("The archive lacks the regular file(s) simple-examples/data/"
                                 "ptb.test.txt, simple-examples/data/ptb.valid.txt.")
    assert not (tmp_path / "ptb").exists()


def test_symlink_member_is_not_followed(tmp_path, tiny_md5):
    path = tmp_path / "links.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for split in ("valid", "test"):
            _add_file(archive, f"simple-examples/data/ptb.{split}.txt", _tiny_texts()[split])
        link = tarfile.TarInfo("simple-examples/data/ptb.train.txt")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    with pytest.raises(ptb.DataError, match=r"lacks the regular file\(s\) simple-examples/data/"
                                             r"ptb\.train\.txt\.$"):
        sources.resolve_data_dir(cache_dir=str(tmp_path / "ptb"), url=path.as_uri(),
                                 expected_md5=tiny_md5)


def test_archive_without_dot_prefix_is_accepted(tmp_path, tiny_md5):
    archive = _write_archive(tmp_path / "plain.tgz", prefix="simple-examples/data/")
    cache_dir = str(tmp_path / "ptb")
    assert sources.resolve_data_dir(cache_dir=cache_dir, url=f"file://{archive}",
                                    expected_md5=tiny_md5) == cache_dir


# --- Resolution order: flag, variable, cache, download. ---

@pytest.fixture
def three_sources(tmp_path, monkeypatch):
    flag_dir = write_corpus(tmp_path / "flag", ["f"], ["f"], ["f"])
    env_dir = write_corpus(tmp_path / "env", ["e"], ["e"], ["e"])
    cache_dir = write_corpus(tmp_path / "cache", ["c"], ["c"], ["c"])
    _forbid_network(monkeypatch)
    return flag_dir, env_dir, cache_dir


def test_flag_beats_variable_beats_cache(three_sources, monkeypatch):
    flag_dir, env_dir, cache_dir = three_sources
    monkeypatch.setenv(sources.DATA_DIR_VARIABLE, env_dir)
    assert sources.resolve_data_dir(flag_dir, cache_dir=cache_dir) == flag_dir
    assert sources.resolve_data_dir(None, cache_dir=cache_dir) == env_dir
    monkeypatch.delenv(sources.DATA_DIR_VARIABLE)
    assert sources.resolve_data_dir(None, cache_dir=cache_dir, url=UNREACHABLE_URL) == cache_dir


def test_wrong_flag_names_the_flag(tmp_path, three_sources):
    wrong = str(tmp_path / "typo")
    with pytest.raises(ptb.DataError) as raised:
        sources.resolve_data_dir(wrong, cache_dir=three_sources[2])
    assert str(raised.value) == (f"The flag --data_path points to {wrong}, which is not a corpus "
                                 f"folder: Corpus folder not found: {wrong}")


def test_wrong_variable_names_the_variable(tmp_path, three_sources, monkeypatch):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "ptb.valid.txt").write_text("a\n", encoding="utf-8")
    monkeypatch.setenv(sources.DATA_DIR_VARIABLE, str(incomplete))
    with pytest.raises(ptb.DataError) as raised:
        sources.resolve_data_dir(cache_dir=three_sources[2])
    assert str(raised.value) == (
        f"The variable PTB_DATA_DIR points to {incomplete}, which is not a PTB data folder: "
        f"{incomplete} lacks the PTB file(s) ptb.train.txt, ptb.test.txt; expected ptb.train.txt, "
        f"ptb.valid.txt, ptb.test.txt (the data/ folder of simple-examples.tgz).")


def test_no_data_and_no_network_names_the_flag_and_the_variable(tmp_path):
    cache_dir = str(tmp_path / "cache" / "ptb")
    with pytest.raises(ptb.DataError) as raised:
        sources.resolve_data_dir(cache_dir=cache_dir, url=UNREACHABLE_URL)
    message = str(raised.value)
    assert message.startswith(f"PTB data not found: no --data_path flag, no PTB_DATA_DIR variable, "
                              f"no cache at {cache_dir}, and the download from {UNREACHABLE_URL} "
                              f"failed (URL fetch failure on {UNREACHABLE_URL}: ")
    assert "Connection refused). Set --data_path or the environment variable PTB_DATA_DIR" in message
    assert message.endswith("Set --data_path or the environment variable PTB_DATA_DIR to a folder "
                            "holding ptb.train.txt, ptb.valid.txt, ptb.test.txt.")
    assert os.listdir(tmp_path / "cache") == []


def test_no_data_and_download_disabled(tmp_path):
    cache_dir = str(tmp_path / "ptb")
    with pytest.raises(ptb.DataError, match=r"failed \(downloading is disabled\)\. Set --data_path "
                                             r"or the environment variable PTB_DATA_DIR"):
        sources.resolve_data_dir(cache_dir=cache_dir, download=False)


def test_unsupported_url_scheme(tmp_path):
    with pytest.raises(ptb.DataError, match=r"failed \(ValueError: unsupported URL scheme 'ftp'; "
                                             r"expected one of \('http', 'https', 'file'\)\)"):
        sources.resolve_data_dir(cache_dir=str(tmp_path / "ptb"), url="ftp://127.0.0.1/x.tgz")


def test_missing_http_file_is_a_no_data_error(tmp_path, http_url):
    missing = http_url.replace("simple-examples.tgz", "absent.tgz")
    with pytest.raises(ptb.DataError, match=r"failed \(URL fetch failure on .*absent.tgz: 404 -- File not found\)"):
        sources.resolve_data_dir(cache_dir=str(tmp_path / "ptb"), url=missing)


# --- Checksums of a folder. ---

def test_verify_checksums_accepts_and_refuses(tmp_path, tiny_md5):
    texts = _tiny_texts()
    for split, text in texts.items():
        (tmp_path / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    sources.verify_checksums(str(tmp_path), tiny_md5)
    (tmp_path / "ptb.test.txt").write_text("tampered\n", encoding="utf-8")
    with pytest.raises(sources.ChecksumError) as raised:
        sources.verify_checksums(str(tmp_path), tiny_md5)
    assert str(raised.value) == (f"Checksum mismatch for ptb.test.txt: expected MD5 "
                                 f"{tiny_md5['ptb.test.txt']}, got {_md5('tampered' + chr(10))}. "
                                 f"The file is refused.")


def test_real_ptb_has_the_canonical_checksums(ptb_dir):
    sources.verify_checksums(ptb_dir)
    assert sources.file_md5(os.path.join(ptb_dir, "ptb.train.txt")) == "f26c4b92c5fdc7b3f8c7cdcb991d8420"
