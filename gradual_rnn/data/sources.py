"""Where a corpus comes from: explicit files, a flag, an environment variable, a local cache, or a download.

Datasets by name (`DATASETS`): `ptb` (Mikolov's Penn Treebank), `wikitext2` and `wikitext103`
(Merity et al. 2016, the tokenised word-level `-v1` archives). `resolve_corpus_files` returns the
corpus's three files (`corpus_files.CorpusFiles`: the folder, its layout, the paths), looking in
this order:

0. three explicit files (`--train_file`, `--valid_file`, `--test_file`), any names;
1. the explicit folder (the `--data_path` flag of `ptb_word_lm.py`), in any layout of
   `corpus_files` (ptb.*.txt, wiki.*.tokens or {train,valid,test}.txt);
2. for `ptb` only, the environment variable `PTB_DATA_DIR` (a folder of the PTB layout);
3. the local cache: `~/.cache/gradual_rnn/<dataset>`. `GRADUAL_RNN_CACHE` names PTB's cache folder
   (as it always has); the other datasets are cached beside it, in `<its parent>/<dataset>`;
4. a download of the dataset's archive; only its three corpus files are extracted into the cache,
   and only after they were verified: PTB by the MD5 of each file, WikiText by the published
   token counts and vocabulary size (no checksum of the WikiText archives is used: none could be
   confirmed from a published source when this was written; see docs/corpora.md).

`resolve_data_dir` is the same lookup returning the folder only (the PTB callers' function).

The download itself is `keras.utils.get_file` (http, https or file URLs). Only the three files are
taken from the archive (tar or zip), under their own names (a member's path is never used to
write), and the download never leaves a half-filled cache: files are written to a temporary folder
beside the cache and renamed into place only after every check passed.
"""
import dataclasses
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import zipfile
from typing import Dict, Iterator, Mapping, Optional, Tuple, Union

from absl import logging

from gradual_rnn.data import corpus_files
from gradual_rnn.data import reader
from gradual_rnn.data.corpus_files import SPLITS, CorpusFiles, DataError

CANONICAL_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
WIKITEXT103_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip"
DATA_DIR_VARIABLE = "PTB_DATA_DIR"
CACHE_VARIABLE = "GRADUAL_RNN_CACHE"
DATA_PATH_FLAG = "--data_path"
ARCHIVE_DATA_FOLDER = "simple-examples/data"
URL_SCHEMES = ("http", "https", "file")
ARCHIVE_NAME = "simple-examples.tgz"
CHUNK_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True)
class CorpusStatistics:
    """Sizes a corpus must have, counted as `reader.py` counts (one `<eos>` per newline).

    tokens: split -> number of tokens (only the splits named are checked);
    vocabulary_size: the number of distinct tokens of the train file, `<eos>` included (None: not
    checked).
    """

    tokens: Mapping[str, int]
    vocabulary_size: Optional[int] = None


# The published sizes of WikiText (Merity, Xiong, Bradbury & Socher 2016, "Pointer Sentinel
# Mixture Models", Table 1; the same figures on the WikiText page of Salesforce/MetaMind).
# Convention: they are the sizes this reader gives when every line of wiki.*.tokens, the empty
# lines and the ` = Heading = ` lines included, ends in one `<eos>`, and the vocabulary counts
# `<eos>` and `<unk>` among its words. That is how pytorch/examples' word_language_model counts
# (`line.split() + ['<eos>']` for every line; its WikiText-2 model has a 33,278-row embedding). This
# convention was not checked against the real archives here (no network where it was written): if
# it were wrong, the download is refused with a message giving both numbers, and the extracted
# folder can still be used through --data_path, which checks nothing.
# WikiText-103's valid and test splits are the same articles as WikiText-2's; only its train size
# and vocabulary are checked, the two figures stated for it.
WIKITEXT2_STATISTICS = CorpusStatistics(
    tokens={"train": 2_088_628, "valid": 217_646, "test": 245_569}, vocabulary_size=33_278)
WIKITEXT103_STATISTICS = CorpusStatistics(tokens={"train": 103_227_021}, vocabulary_size=267_735)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named corpus that can be downloaded: where its archive is and how its files are checked.

    name: the key in DATASETS and the cache folder's name; label: how messages name it;
    url: the archive (tar or zip, recognised by its content); archive_name: the name it is saved
    under; archive_folder: the folder of the archive holding the three files; layout: their names
    (a key of corpus_files.LAYOUTS); expected_md5: file name -> MD5, or None; expected_statistics:
    the sizes the files must have, or None.
    """

    name: str
    label: str
    url: str
    archive_name: str
    archive_folder: str
    layout: str
    expected_md5: Optional[Mapping[str, str]] = None
    expected_statistics: Optional[CorpusStatistics] = None

    def file_names(self) -> Dict[str, str]:
        """Split -> file name in this dataset's layout."""
        return corpus_files.get_layout(self.layout).file_names()


DATASETS = {dataset.name: dataset for dataset in (
    Dataset("ptb", "PTB", CANONICAL_URL, ARCHIVE_NAME, ARCHIVE_DATA_FOLDER, corpus_files.PTB.name,
            expected_md5=PTB_MD5),
    Dataset("wikitext2", "WikiText-2", WIKITEXT2_URL, "wikitext-2-v1.zip", "wikitext-2",
            corpus_files.WIKITEXT.name, expected_statistics=WIKITEXT2_STATISTICS),
    Dataset("wikitext103", "WikiText-103", WIKITEXT103_URL, "wikitext-103-v1.zip", "wikitext-103",
            corpus_files.WIKITEXT.name, expected_statistics=WIKITEXT103_STATISTICS),
)}


def get_dataset(dataset: Union[str, Dataset]) -> Dataset:
    """The Dataset named `dataset` (a Dataset is returned as it is); a DataError lists the names."""
    if isinstance(dataset, Dataset):
        return dataset
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}.")
    return DATASETS[dataset]


class VerificationError(DataError):
    """Downloaded or local corpus files are not the expected ones; they are refused."""


class ChecksumError(VerificationError):
    """A corpus file does not have the expected MD5 checksum."""


class StatisticsError(VerificationError):
    """A corpus file does not have the published number of tokens, or its vocabulary the published size."""


class DownloadError(DataError):
    """The archive could not be fetched (keras.utils.get_file's own message)."""


def file_md5(path: str) -> str:
    """The hexadecimal MD5 digest of the file at `path`, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksums(data_dir: str, expected_md5: Mapping[str, str] = PTB_MD5) -> None:
    """Raises a ChecksumError naming the first file of `data_dir` whose MD5 is not the expected one.

    `expected_md5` maps a file name (e.g. `ptb.train.txt`) to its hexadecimal MD5.
    """
    for name, expected in sorted(expected_md5.items()):
        actual = file_md5(os.path.join(data_dir, name))
        if actual != expected.lower():
            raise ChecksumError(f"Checksum mismatch for {name}: expected MD5 {expected.lower()}, "
                                f"got {actual}. The file is refused.")


def verify_statistics(data_dir: str, dataset: Union[str, Dataset]) -> None:
    """Raises a StatisticsError when the files of `data_dir` lack the dataset's published sizes.

    Counts every token of the checked splits (a streaming pass: about a minute for WikiText-103).
    """
    spec = get_dataset(dataset)
    expected = spec.expected_statistics
    if expected is None:
        return
    files = corpus_files.find_corpus_files(data_dir, spec.layout)
    checked = [split for split in SPLITS if split in expected.tokens
               or (split == "train" and expected.vocabulary_size is not None)]
    for split in checked:
        counts = reader.count_words(files.paths[split])
        name = os.path.basename(files.paths[split])
        _compare(f"{name} has", sum(counts.values()), expected.tokens.get(split), "tokens", spec)
        if split == "train":
            _compare(f"{name} gives a vocabulary of", len(counts), expected.vocabulary_size, "words",
                     spec)


def _compare(what: str, actual: int, expected: Optional[int], unit: str, spec: Dataset) -> None:
    """Raises a StatisticsError when `actual` differs from an `expected` that is not None."""
    if expected is not None and actual != expected:
        raise StatisticsError(f"{what} {actual:,} {unit}, but the published {spec.label} has "
                              f"{expected:,} (counting one <eos> per line). The files are refused.")


def default_cache_dir(dataset: str = "ptb") -> str:
    """The cache folder of `dataset`: `~/.cache/gradual_rnn/<dataset>`.

    `$GRADUAL_RNN_CACHE`, when set, names PTB's folder; the other datasets' folders are beside it.
    """
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        ptb_folder = os.path.abspath(os.path.expanduser(configured))
    else:
        ptb_folder = os.path.join(os.path.expanduser("~"), ".cache", "gradual_rnn", "ptb")
    if dataset == "ptb":
        return ptb_folder
    return os.path.join(os.path.dirname(ptb_folder), get_dataset(dataset).name)


def _checked_source(directory: str, source: str, layout: Optional[str] = None) -> CorpusFiles:
    """The corpus of `directory` (in `layout`, or any), else an error saying which `source` pointed there."""
    try:
        files = corpus_files.find_corpus_files(directory, layout)
    except DataError as error:
        kind = f"a {corpus_files.get_layout(layout).label} data" if layout else "a corpus"
        raise DataError(f"{source} points to {directory}, which is not {kind} folder: {error}") from None
    logging.info("Corpus from %s: %s", source, files.describe())
    return _absolute(files)


def _absolute(files: CorpusFiles) -> CorpusFiles:
    """The same files with absolute paths."""
    paths = {split: os.path.abspath(path) for split, path in files.paths.items()}
    directory = os.path.abspath(files.directory) if files.directory else None
    return CorpusFiles(paths=paths, layout=files.layout, directory=directory)


def _is_complete(directory: str, spec: Dataset) -> bool:
    """Whether `directory` holds all three files of the dataset's layout."""
    return all(os.path.isfile(os.path.join(directory, name)) for name in spec.file_names().values())


def _no_data_error(spec: Dataset, cache_dir: str, url: str, reason: str) -> DataError:
    """The error for 'no data anywhere', naming the flag (and for PTB the variable) to set."""
    variable, remedy = "", DATA_PATH_FLAG
    if spec.name == "ptb":
        variable = f" no {DATA_DIR_VARIABLE} variable,"
        remedy = f"{DATA_PATH_FLAG} or the environment variable {DATA_DIR_VARIABLE}"
    return DataError(
        f"{spec.label} data not found: no {DATA_PATH_FLAG} flag,{variable} no cache at {cache_dir}, "
        f"and the download from {url} failed ({reason}). Set {remedy} to a folder holding "
        f"{', '.join(spec.file_names().values())}.")


def _fetch(url: str, directory: str, archive_name: str) -> str:
    """Downloads the archive at `url` (http, https or file) into `directory`; returns its path."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in URL_SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r}; expected one of {URL_SCHEMES}")
    import keras  # only a download needs it

    try:
        return keras.utils.get_file(fname=archive_name, origin=url, cache_dir=directory, cache_subdir="")
    except Exception as error:  # get_file reports URL and HTTP failures as a bare Exception
        raise DownloadError(str(error) or type(error).__name__) from error


def _without_dot_prefix(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _tar_regular_files(archive: tarfile.TarFile) -> Iterator[Tuple[str, tarfile.TarInfo]]:
    """(name, member) of each regular file of a tar archive; links and folders are skipped."""
    for member in archive.getmembers():
        if member.isfile():
            yield _without_dot_prefix(member.name), member


def _zip_regular_files(archive: zipfile.ZipFile) -> Iterator[Tuple[str, zipfile.ZipInfo]]:
    """(name, member) of each regular file of a zip archive; symbolic links and folders are skipped."""
    for member in archive.infolist():
        if not member.is_dir() and not stat.S_ISLNK(member.external_attr >> 16):
            yield _without_dot_prefix(member.filename), member


def _wanted_members(regular_files, spec: Dataset) -> Dict[str, object]:
    """File name -> archive member of each of the dataset's three files; a DataError names the missing."""
    wanted = {f"{spec.archive_folder}/{name}": name for name in spec.file_names().values()}
    members = {wanted[name]: member for name, member in regular_files if name in wanted}
    missing = sorted(set(wanted.values()) - set(members))
    if missing:
        raise DataError(f"The archive lacks the regular file(s) "
                        f"{', '.join(f'{spec.archive_folder}/{name}' for name in missing)}.")
    return members


def _extract_files(archive_path: str, spec: Dataset, destination: str) -> None:
    """Writes the dataset's three files of the archive (zip or tar) into `destination`, own names only.

    Output paths never come from the archive, so a hostile member name cannot escape `destination`.
    """
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            for name, member in _wanted_members(_zip_regular_files(archive), spec).items():
                _copy_member(archive.open(member), os.path.join(destination, name))
        return
    with tarfile.open(archive_path, "r:*") as archive:
        for name, member in _wanted_members(_tar_regular_files(archive), spec).items():
            _copy_member(archive.extractfile(member), os.path.join(destination, name))


def _copy_member(source, target_path: str) -> None:
    """Copies an open archive member to `target_path` and closes it."""
    with source, open(target_path, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK_BYTES)


def _download_into_cache(spec: Dataset, cache_dir: str) -> None:
    """Downloads, extracts and verifies into a temporary folder, then renames it to `cache_dir`."""
    parent = os.path.dirname(os.path.abspath(cache_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{spec.name}-download-", dir=parent)
    try:
        files_dir = os.path.join(staging, spec.name)
        os.mkdir(files_dir)
        logging.info("Downloading %s from %s", spec.label, spec.url)
        archive_path = _fetch(spec.url, staging, spec.archive_name)
        _extract_files(archive_path, spec, files_dir)
        if spec.expected_md5 is not None:
            verify_checksums(files_dir, spec.expected_md5)
        if spec.expected_statistics is not None:
            logging.info("Counting the tokens of the %s files to check their published sizes.", spec.label)
            verify_statistics(files_dir, spec)
        _move_into_place(files_dir, cache_dir, spec)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(files_dir: str, cache_dir: str, spec: Dataset) -> None:
    """Atomically renames `files_dir` to `cache_dir`, which may exist only as an empty folder."""
    if os.path.isdir(cache_dir) and not os.listdir(cache_dir):
        os.rmdir(cache_dir)
    if os.path.exists(cache_dir):
        raise DataError(f"The cache {cache_dir} exists but lacks {spec.label} files; remove it to "
                        f"download again.")
    os.rename(files_dir, cache_dir)
    logging.info("%s cached in %s", spec.label, cache_dir)


def _resolve_folder(data_path: Optional[str], spec: Dataset, cache_dir: Optional[str],
                    download: bool) -> CorpusFiles:
    """Steps 1-4 of the module doc for the dataset `spec`."""
    if data_path:
        return _checked_source(data_path, f"The flag {DATA_PATH_FLAG}")
    if spec.name == "ptb" and os.environ.get(DATA_DIR_VARIABLE):
        return _checked_source(os.environ[DATA_DIR_VARIABLE], f"The variable {DATA_DIR_VARIABLE}",
                               corpus_files.PTB.name)
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir(spec.name)))
    if _is_complete(cache_dir, spec):
        logging.info("%s data from the cache: %s", spec.label, cache_dir)
        return corpus_files.find_corpus_files(cache_dir, spec.layout)
    if not download:
        raise _no_data_error(spec, cache_dir, spec.url, "downloading is disabled")
    try:
        _download_into_cache(spec, cache_dir)
    except DownloadError as error:
        raise _no_data_error(spec, cache_dir, spec.url, str(error)) from error
    except DataError:
        raise
    except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise _no_data_error(spec, cache_dir, spec.url, f"{type(error).__name__}: {error}") from error
    return corpus_files.find_corpus_files(cache_dir, spec.layout)


def resolve_corpus_files(data_path: Optional[str] = None, dataset: Union[str, Dataset] = "ptb",
                         cache_dir: Optional[str] = None, download: bool = True,
                         train_file: Optional[str] = None, valid_file: Optional[str] = None,
                         test_file: Optional[str] = None) -> CorpusFiles:
    """The corpus's three files: explicit files, flag, variable (PTB), cache, then download.

    Args:
      data_path: the `--data_path` flag; when given it must be a corpus folder in any layout.
      dataset: a name of DATASETS (or a Dataset): what the variable, cache and download provide.
      cache_dir: the dataset's cache folder; `None` means `default_cache_dir(dataset)`.
      download: whether to download when no other source has the corpus.
      train_file, valid_file, test_file: three explicit files, instead of a folder.

    Returns:
      CorpusFiles: the paths of the three files, their layout and their folder (None for files).

    Raises:
      DataError: a given source is not a corpus, or there is no data and no download.
      VerificationError: downloaded files are not the expected ones (the cache is left untouched).
    """
    if train_file or valid_file or test_file:
        return _absolute(corpus_files.locate_corpus_files(data_path, None, train_file, valid_file,
                                                          test_file))
    return _resolve_folder(data_path, get_dataset(dataset), cache_dir, download)


def resolve_data_dir(data_path: Optional[str] = None, cache_dir: Optional[str] = None,
                     download: bool = True, url: Optional[str] = None,
                     expected_md5: Optional[Mapping[str, str]] = None,
                     dataset: Union[str, Dataset] = "ptb") -> str:
    """The folder `resolve_corpus_files` finds (flag, variable, cache, then download).

    Args:
      data_path, cache_dir, download, dataset: as for `resolve_corpus_files`.
      url: another address of the dataset's archive, `http(s)://` or `file://`; None: the dataset's.
      expected_md5: file name -> MD5 the downloaded files must have; None: the dataset's own
        (to skip the check, pass a Dataset whose expected_md5 is None).
    """
    spec = get_dataset(dataset)
    if url:
        spec = dataclasses.replace(spec, url=url)
    if expected_md5 is not None:
        spec = dataclasses.replace(spec, expected_md5=expected_md5)
    return _resolve_folder(data_path, spec, cache_dir, download).directory
