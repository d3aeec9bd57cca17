"""Golden numbers: four small PTB runs recomputed through today's code equal, bit for bit, the numbers
recorded by record_golden.py (tests/fixtures/golden/golden.json), and agree with what the 0.1.0 code
computed (golden_0_1_0.json) until float32 chaos sets in.

0.3.0 computes the cross-entropy's gradient with one softmax kernel instead of TensorFlow's
cross-entropy kernel (nn/cross_entropy.py): the same function, other float32 rounding, a few units in
the last place. Training at a learning rate of 1 amplifies such differences window by window, so the
0.1.0 numbers hold to 2e-6 relative for the first 15 windows of every case (the first window past
2e-6 is window 16 with Nesterov momentum and h-detach, windows 22-23 in the other cases) and the
perplexities after 52-60 windows differ by up to 10% (docs/reference.md, "Numerics")."""
import json
import os

import pytest

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import loop
from gradual_rnn.train.context import RunOptions

FOLDER = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")
WINDOWS_BEFORE_CHAOS = 15


def _load(name):
    with open(os.path.join(FOLDER, name), encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def golden():
    return _load("golden.json")


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


def test_the_recorded_numbers_agree_with_0_1_0_until_chaos_sets_in():
    """Both files hold the same cases on the same corpus prefixes; the window costs agree to 2e-6
    relative for the first WINDOWS_BEFORE_CHAOS windows, and the first window of every case within
    1e-6 (one forward pass: only the loss's rounding differs)."""
    now, before = _load("golden.json"), _load("golden_0_1_0.json")
    assert sorted(now["cases"]) == sorted(before["cases"]) and now["train_tokens"] == before["train_tokens"]
    for name, case in now["cases"].items():
        old = before["cases"][name]
        assert (case["config"], case["overrides"]) == (old["config"], old["overrides"])
        assert len(case["window_costs"]) == len(old["window_costs"])
        for mine, theirs in list(zip(case["window_costs"], old["window_costs"]))[:WINDOWS_BEFORE_CHAOS]:
            assert mine == pytest.approx(theirs, rel=2e-6), name
        assert case["window_costs"][0] == pytest.approx(old["window_costs"][0], rel=1e-6)
