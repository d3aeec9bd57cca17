"""The tiny corpus of the training tests, read once per test."""
import pytest

from gradual_rnn.data import ptb


@pytest.fixture
def tiny_corpus(tiny_corpus_dir):
    return ptb.load_corpus(tiny_corpus_dir)


@pytest.fixture
def short_corpus(tiny_corpus):
    """The tiny corpus with a training split of 25 windows an epoch at batch 4 and 5 steps (the full
    one has 115): for tests whose point is the run's rules, not the number of windows."""
    import dataclasses

    return dataclasses.replace(tiny_corpus, train=tiny_corpus.train[:4 * (25 * 5 + 1)])
