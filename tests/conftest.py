"""Shared fixtures: the real PTB directory (required under CI=true) and tiny generated corpora."""
import os

import numpy as np
import pytest

# Two xdist workers share two cores: one compute thread each (and in the processes they start), so
# TensorFlow's thread pools do not spin against each other. Every comparison in the suite is
# between runs under the same setting; the golden numbers, recorded with the default two threads,
# hold bit for bit with one. Set TF_NUM_INTRAOP_THREADS to test another count.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


def _ptb_dir():
    candidate = os.environ.get("PTB_DATA_DIR")
    if candidate and os.path.isfile(os.path.join(candidate, "ptb.train.txt")):
        return os.path.abspath(candidate)
    return None


@pytest.fixture(scope="session")
def ptb_dir():
    """The real PTB; under CI=true its absence fails the test instead of skipping it."""
    found = _ptb_dir()
    if found is None:
        message = "Real PTB not found: set PTB_DATA_DIR to the folder holding ptb.train.txt."
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def environment_without_tensorflow(folder):
    """os.environ in which `import tensorflow` fails (a stub module written into `folder`): a command
    run with it shows that its check comes before TensorFlow loads."""
    stub = folder / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "tensorflow.py").write_text("raise ImportError('TensorFlow was imported')\n")
    return dict(os.environ, PYTHONPATH=f"{stub}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def write_corpus(directory, train, valid, test):
    """Writes ptb.{train,valid,test}.txt (each a list of sentence strings) and returns the folder."""
    os.makedirs(directory, exist_ok=True)
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(directory, f"ptb.{split}.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f" {line} \n" for line in lines))
    return str(directory)


def random_corpus(directory, seed, num_words, sentence_counts):
    """Writes a seeded corpus of sentences of 3-11 words drawn from `num_words` words `w0, w1, ...`;
    `sentence_counts` gives the (train, valid, test) sentence numbers."""
    rng = np.random.RandomState(seed)
    words = [f"w{i}" for i in range(num_words)]

    def sentences(count):
        return [" ".join(rng.choice(words, size=rng.randint(3, 12))) for _ in range(count)]

    return write_corpus(directory, *(sentences(count) for count in sentence_counts))


@pytest.fixture
def tiny_corpus_dir(tmp_path):
    """A seeded random corpus of 40 words, big enough for the test config and a few windows."""
    return random_corpus(tmp_path / "corpus", 0, 40, (300, 40, 40))


def pytest_collection_modifyitems(config, items):
    """The long tests (marked slow) first: two workers that start on them and end on the quick ones
    finish together, instead of one waiting on a 30-second test that came last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
