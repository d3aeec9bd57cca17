"""Many windows per compiled call: the same costs and weights, to the bit, as one window a call,
for plain SGD, Nesterov with h-detach and variational masks. A run stopped inside a call of 16
windows resumes exactly: tests/train/test_training.py, test_interrupted_run_resumes_to_identical_numbers."""
import dataclasses

import numpy as np
import pytest

from gradual_rnn import configs
from gradual_rnn.train import epoch
from train.tiny import final_weights as _final_weights
from train.tiny import run_tiny as _run
from train.tiny import tiny_config

pytestmark = pytest.mark.slow  # repeated training runs or subprocesses


def _costs_and_calls(tmp_path, corpus, config, name, **options):
    """(every window's cost, the windows of every compiled call, the results), from the run's
    window observer."""
    records = []
    results = _run(tmp_path, corpus, config, name, window_observer=records.append, **options)
    calls = [record.call_size for record in records if record.call_offset == 0]
    return [record.cost for record in records], calls, results


def test_k_windows_per_call_equal_one_window_per_call(tmp_path, tiny_corpus):
    """Nesterov, h-detach and variational masks (plain SGD: the next test, and golden case (a))."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, gradual=True, layer_epochs=1, max_epochs=1,
                         optimizer="nesterov", momentum=0.9, h_detach=0.3, dropout_style="variational",
                         keep_prob_embed=0.8, keep_output=configs.uniform_table(2, 0.7),
                         keep_state=configs.uniform_table(2, 0.8))
    one, one_calls, one_results = _costs_and_calls(tmp_path, tiny_corpus, config, "one",
                                                   windows_per_call=1)
    many, many_calls, many_results = _costs_and_calls(tmp_path, tiny_corpus, config, "many",
                                                      windows_per_call=16, checkpoint_every_windows=40)
    assert set(one_calls) == {1} and max(many_calls) == 16
    # Calls end at checkpoints (every 40 windows) and at epoch ends (115 windows per epoch).
    assert many_calls[:4] == [16, 16, 8, 16] and sum(many_calls) == 230
    assert many == one
    assert many_results["test_perplexity"] == one_results["test_perplexity"]
    a, b = _final_weights(tmp_path, "one"), _final_weights(tmp_path, "many")
    for key in a:
        if key.startswith("model/"):
            np.testing.assert_array_equal(a[key], b[key])


def test_chosen_windows_per_call_grows_and_gives_the_same_numbers(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    one, _, _ = _costs_and_calls(tmp_path, tiny_corpus, config, "one", windows_per_call=1)
    chosen, calls, _ = _costs_and_calls(tmp_path, tiny_corpus, config, "chosen")
    assert calls[0] == epoch.FIRST_WINDOWS_PER_CALL and max(calls) > epoch.FIRST_WINDOWS_PER_CALL
    assert chosen == one


def test_masks_drawn_every_window_run_one_window_per_call(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1, dropout_style="variational",
                         keep_output=configs.uniform_table(2, 0.7), mask_refresh="batch")
    batch_costs, calls, _ = _costs_and_calls(tmp_path, tiny_corpus, config, "batch",
                                             windows_per_call=16)
    epoch_costs, _, _ = _costs_and_calls(tmp_path, tiny_corpus, dataclasses.replace(config, mask_refresh="epoch"),
                                         "epoch", windows_per_call=16)
    assert set(calls) == {1}
    assert batch_costs[0] == epoch_costs[0] and batch_costs[1] != epoch_costs[1]  # new masks at window 1
