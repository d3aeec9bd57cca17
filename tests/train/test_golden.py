"""Golden numbers: four small PTB runs recomputed through today's code equal, bit for bit, what the
0.1.0 code computed (tests/fixtures/golden/golden.json, made by record_golden.py beside it)."""
import json
import os

import pytest

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import loop
from gradual_rnn.train.context import RunOptions

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden", "golden.json")


@pytest.fixture(scope="module")
def golden():
    with open(GOLDEN, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def prefix_corpus(ptb_dir, golden):
    corpus = ptb.load_corpus(ptb_dir)
    return ptb.Corpus(corpus.train[:golden["train_tokens"]], corpus.valid[:golden["valid_tokens"]],
                      corpus.test[:golden["test_tokens"]], corpus.vocabulary, corpus.unknown_counts)


def _recorded_run(case, corpus, save_path, windows_per_call):
    """Trains the case through the real loop, recording every window's cost as the loop sees it."""
    costs = []
    config = configs.override(configs.get_config(case["config"]), case["overrides"])
    options = RunOptions(data_dir="", save_path=save_path, windows_per_call=windows_per_call,
                         window_observer=lambda record: costs.append(record.cost))
    return costs, loop.train(config, options, corpus)


# 7 windows per compiled call (a graph loop; 7 divides neither epoch, so calls end early at epoch
# ends); one window per call (the 0.1.0 way) for Ω, which always runs one window a call (see
# steps.make_train_step). tests/train/test_windows_per_call.py shows K=1 and K=16 equal.
CASES = [("small_h32", 7), ("gl_2x32_variational", 7), ("gl_2x32_nesterov_hdetach", 7), ("gl_2x32_omega", 1)]


@pytest.mark.slow
@pytest.mark.parametrize("name, windows_per_call", CASES)
def test_golden_numbers_are_unchanged(name, windows_per_call, golden, prefix_corpus, tmp_path):
    case = golden["cases"][name]
    costs, results = _recorded_run(case, prefix_corpus, str(tmp_path / name), windows_per_call)
    assert len(costs) == len(case["window_costs"]) >= 30
    assert costs == case["window_costs"]  # bit for bit: the same float32 values
    assert [row["valid_perplexity"] for row in results["rows"]] == case["valid_perplexities"]
    assert results["test_perplexity"] == case["test_perplexity"]
    assert results["exact_test_perplexity"] == case["exact_test_perplexity"]
