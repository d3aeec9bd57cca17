"""The tiny corpus of the training tests, read once per test."""
import pytest

from gradual_rnn.data import ptb


@pytest.fixture
def tiny_corpus(tiny_corpus_dir):
    return ptb.load_corpus(tiny_corpus_dir)
