"""Where a corpus's three files are: a folder in one of the common layouts, or three explicit paths.

A word-level corpus is three text files, one per split. The layouts a folder may have::

    layout     train              valid              test               comes from
    ptb        ptb.train.txt      ptb.valid.txt      ptb.test.txt       simple-examples.tgz, data/
    wikitext   wiki.train.tokens  wiki.valid.tokens  wiki.test.tokens   wikitext-{2,103}-v1.zip
    plain      train.txt          valid.txt          test.txt           a corpus of one's own

`find_corpus_files(folder)` recognises the layout by the file names. A folder holding the files of
no layout, of two layouts at once, or only some of one layout's files is a one-line `DataError`.
`explicit_corpus_files(train, valid, test)` takes three paths instead, under any names.

This module only finds files; `reader.py` reads them (the same rules for every layout).
"""
import dataclasses
import os
from typing import Dict, List, Mapping, Optional

SPLITS = ("train", "valid", "test")
EXPLICIT = "explicit"  # the layout name of a corpus given as three paths
LISTED_NAMES = 8  # how many of a folder's names an error message shows


class DataError(ValueError):
    """A corpus file or folder is missing, empty, unreadable, ambiguous or too short for the batching."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """The file names of one corpus layout: `pattern.format(split=...)` for each of SPLITS."""

    name: str  # the layout's key in LAYOUTS, e.g. "ptb"
    label: str  # how messages name it, e.g. "PTB"
    pattern: str  # e.g. "ptb.{split}.txt"
    origin: str  # where a folder of this layout usually comes from, for messages

    def file_names(self) -> Dict[str, str]:
        """Split -> file name, e.g. {"train": "ptb.train.txt", ...}."""
        return {split: self.pattern.format(split=split) for split in SPLITS}

    def describe(self) -> str:
        """The three names in one brace pattern, e.g. `ptb.{train,valid,test}.txt`."""
        return self.pattern.replace("{split}", "{" + ",".join(SPLITS) + "}")


PTB = Layout("ptb", "PTB", "ptb.{split}.txt", "the data/ folder of simple-examples.tgz")
WIKITEXT = Layout("wikitext", "WikiText", "wiki.{split}.tokens",
                  "the wikitext-2/ or wikitext-103/ folder of the WikiText zip archives")
PLAIN = Layout("plain", "plain", "{split}.txt", "a corpus of one's own")
LAYOUTS = {layout.name: layout for layout in (PTB, WIKITEXT, PLAIN)}


@dataclasses.dataclass(frozen=True)
class CorpusFiles:
    """The three files of one corpus.

    paths: split -> path of the file (every split of SPLITS);
    layout: the name of the layout that named them (a key of LAYOUTS) or EXPLICIT;
    directory: the folder they were found in, None when the paths were given explicitly.
    """

    paths: Mapping[str, str]
    layout: str
    directory: Optional[str] = None

    def describe(self) -> str:
        """One line for logs: the folder and its layout, or the three paths."""
        if self.directory is None:
            return "files " + ", ".join(f"{split}={self.paths[split]}" for split in SPLITS)
        return f"{self.directory} ({self.layout} layout)"


def get_layout(name: str) -> Layout:
    """The layout called `name`; a DataError lists the known ones."""
    if name not in LAYOUTS:
        raise DataError(f"Unknown corpus layout {name!r}; expected one of {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def _listing(directory: str) -> str:
    """What a folder holds, for one line of an error: its first names, sorted, and how many more."""
    names = sorted(os.listdir(directory))
    if not names:
        return "it is empty"
    shown = ", ".join(names[:LISTED_NAMES])
    more = len(names) - LISTED_NAMES
    return f"it holds {shown}" + (f" and {more} more" if more > 0 else "")


def _present(directory: str, layout: Layout) -> List[str]:
    """The splits whose file of `layout` exists as a file in `directory`."""
    return [split for split, name in layout.file_names().items()
            if os.path.isfile(os.path.join(directory, name))]


def _present_names(directory: str, layout: Layout) -> str:
    """The names of the files of `layout` that `directory` holds, comma-separated."""
    names = layout.file_names()
    return ", ".join(names[split] for split in _present(directory, layout))


def _expected_layouts() -> str:
    """Every layout's names, for the 'no corpus here' error."""
    return ", ".join(f"{layout.describe()} ({layout.label})" for layout in LAYOUTS.values())


def _files_of(directory: str, layout: Layout) -> CorpusFiles:
    """The corpus files of `layout` in `directory`; a DataError names the missing ones."""
    names = layout.file_names()
    missing = [names[split] for split in SPLITS if split not in _present(directory, layout)]
    if missing:
        raise DataError(f"{directory} lacks the {layout.label} file(s) {', '.join(missing)}; expected "
                        f"{', '.join(names.values())} ({layout.origin}).")
    paths = {split: os.path.join(directory, name) for split, name in names.items()}
    return CorpusFiles(paths=paths, layout=layout.name, directory=directory)


def find_corpus_files(directory: str, layout: Optional[str] = None) -> CorpusFiles:
    """Finds the train/valid/test files of `directory`, by their names or in the given `layout`.

    Args:
      directory: the corpus folder.
      layout: a key of LAYOUTS to insist on; None recognises the layout from the file names.

    Returns:
      The CorpusFiles of the folder (paths joined to `directory`, layout named).

    Raises:
      DataError: the folder is missing, holds no layout's files, files of two layouts, or lacks a
        split's file of its layout.
    """
    if layout is not None:
        chosen = get_layout(layout)
        if not os.path.isdir(directory):
            raise DataError(f"{chosen.label} data directory not found: {directory}")
        return _files_of(directory, chosen)
    if not os.path.isdir(directory):
        raise DataError(f"Corpus folder not found: {directory}")
    candidates = [layout for layout in LAYOUTS.values() if _present(directory, layout)]
    if not candidates:
        raise DataError(f"{directory} holds no corpus files ({_listing(directory)}); expected "
                        f"{_expected_layouts()}, or three files given explicitly.")
    if len(candidates) > 1:
        found = " and ".join(f"{layout.label} ({_present_names(directory, layout)})"
                             for layout in candidates)
        raise DataError(f"{directory} holds the files of more than one layout, {found}; name the "
                        f"layout ({', '.join(layout.name for layout in candidates)}) or give the three "
                        f"files explicitly.")
    return _files_of(directory, candidates[0])


def _check_file(path: str, split: str) -> str:
    """Returns `path` if it is an existing file; else a DataError naming the split and the path."""
    if not os.path.exists(path):
        raise DataError(f"The {split} file {path} was not found.")
    if os.path.isdir(path):
        raise DataError(f"The {split} file {path} is a directory; expected a text file.")
    return path


def explicit_corpus_files(train_file: str, valid_file: str, test_file: str) -> CorpusFiles:
    """The corpus of three files given by path (any names); a DataError names a missing one."""
    given = {"train": train_file, "valid": valid_file, "test": test_file}
    paths = {split: _check_file(path, split) for split, path in given.items()}
    return CorpusFiles(paths=paths, layout=EXPLICIT, directory=None)


def locate_corpus_files(data_dir: Optional[str] = None, layout: Optional[str] = None,
                        train_file: Optional[str] = None, valid_file: Optional[str] = None,
                        test_file: Optional[str] = None) -> CorpusFiles:
    """The corpus files from either a folder (`data_dir`, `layout`) or all three explicit paths.

    Raises:
      DataError: both a folder and files are given, only some of the three files, or neither; or
        `find_corpus_files` / `explicit_corpus_files` refuse what was given.
    """
    given = {"train_file": train_file, "valid_file": valid_file, "test_file": test_file}
    named = [name for name, path in given.items() if path]
    if not named:
        if not data_dir:
            raise DataError("No corpus given: name a corpus folder or the three files "
                            "train_file, valid_file, test_file.")
        return find_corpus_files(data_dir, layout)
    if data_dir or layout:
        source = f"the folder {data_dir}" if data_dir else f"the layout {layout!r}"
        raise DataError(f"Give either a corpus folder or the three files, not both: got {source} and "
                        f"{', '.join(named)}.")
    if len(named) < len(given):
        missing = [name for name in given if name not in named]
        raise DataError(f"Explicit corpus files need all three of train_file, valid_file, test_file; "
                        f"missing {', '.join(missing)}.")
    return explicit_corpus_files(train_file, valid_file, test_file)
