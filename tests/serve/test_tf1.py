"""TF1 checkpoints of the original programs in gradual_rnn (gradual_rnn.serve.tf1): import, the
programs' own perplexities and window costs, export, and a run started from one and written back."""
import hashlib
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.serve import tf1
from gradual_rnn.train import evaluate as evaluation
from serve.tf1_fixtures import (FIXTURES, RELATIVE, all_variables, checkpoint_cases, cost_key, expected_perplexities,
                                fixture_file, imported, model_variables, settings_of, written_variables)


@pytest.fixture(scope="module")
def corpus(ptb_dir):
    return ptb.load_corpus(ptb_dir)


# ----- the programs' own numbers -----
@pytest.mark.parametrize("folder,prefix", checkpoint_cases())
def test_imported_checkpoint_reproduces_the_programs_perplexities_and_window_costs(folder, prefix, corpus):
    data, settings = fixture_file(folder, "fixture.json")["data"], settings_of(folder, prefix)
    model = imported(folder, prefix)
    valid_ids, test_ids = tf1.evaluation_ids(corpus, settings, model.config.vocab_size)
    for ids, key in ((valid_ids, "valid_prefix"), (test_ids, "test_prefix")):
        assert hashlib.sha256(ids.astype("<i4").tobytes()).hexdigest() == data[key]["sha256_int32_le"]
    scores = tf1.evaluate_heads(model.model, model.checkpoint.depths, valid_ids, test_ids, settings)
    expected = expected_perplexities(folder, prefix, model.checkpoint.sizes.num_layers)
    costs = fixture_file(folder, "window_costs.json")[prefix]
    assert sorted(scores) == sorted(expected)
    for depth, splits in scores.items():
        for split, score in splits.items():
            assert score.perplexity == pytest.approx(expected[depth][split], rel=RELATIVE)
            reference = np.asarray(costs[cost_key(folder, split, depth)], np.float64)
            assert score.window_costs.dtype == np.float32 and score.window_costs.shape == reference.shape
            np.testing.assert_allclose(score.window_costs, reference, rtol=RELATIVE)


@pytest.mark.parametrize("chunk_tokens", [1, 8 * 4 * 5, 10000])
def test_window_costs_in_chunks_equal_window_by_window(corpus, chunk_tokens):
    """`evaluate.make_window_costs` joins windows into chunks of 1 window, of 8 (6 chunks and a tail
    of one window) and of more than the pass (only a tail): each gives every window's cost as one
    model call per window does, the sum over steps of the batch-mean cross-entropy."""
    model = imported("tutorial_2x16", "model-199").model
    inputs, targets = ptb.window_arrays(corpus.valid[:1000], 4, 5)
    assert len(inputs) == 49
    state, expected = model.initial_state(4), []
    for window_inputs, window_targets in zip(inputs, targets):
        logits, state = model(tf.constant(window_inputs), state)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=window_targets, logits=logits)
        expected.append(float(tf.reduce_sum(tf.reduce_mean(losses, axis=0))))
    window_costs = evaluation.make_window_costs(model, 2, chunk_tokens=chunk_tokens)
    costs = tf1.pass_costs(window_costs, model, 2, (inputs, targets))
    assert costs.dtype == np.float32
    np.testing.assert_allclose(costs, expected, rtol=1e-6)


def test_evaluation_ids_refuse_another_vocabulary_and_a_prefix_beyond_the_split(corpus):
    settings = tf1.EvalSettings(1, 1, 1, 1, valid_tokens=len(corpus.valid) + 1)
    with pytest.raises(ptb.DataError, match=r"--valid_tokens=73761 is outside 1..73760"):
        tf1.evaluation_ids(corpus, settings, corpus.vocab_size)
    with pytest.raises(ptb.DataError, match="gives a vocabulary of 10000 words but the checkpoint's has 9999"):
        tf1.evaluation_ids(corpus, tf1.EvalSettings(1, 1, 1, 1), 9999)


# ----- import -----
def test_import_infers_program_sizes_and_config_and_reports_what_it_skipped():
    tutorial, gl = imported("tutorial_2x16", "model-199"), imported("gl_2x16", "model-1")
    assert (tutorial.checkpoint.program, tutorial.checkpoint.layout.key, gl.checkpoint.program) == (
        "tutorial", "tutorial_basic", "gl")
    for result, folder, prefix in ((tutorial, "tutorial_2x16", "model-199"), (gl, "gl_2x16", "model-1")):
        sizes = result.checkpoint.sizes
        assert (sizes.num_layers, sizes.units, sizes.vocab_size, sizes.embedding_size) == (2, 16, 10000, 16)
        assert set(result.checkpoint.tensors) == set(model_variables(folder, prefix))
        model_names = set(model_variables(folder, prefix))
        assert set(result.checkpoint.skipped) == set(all_variables(folder, prefix)) - model_names
        assert result.model.num_layers == result.config.num_layers == 2
        assert result.config.forget_bias == 0.0
    assert tutorial.checkpoint.depths == (2,) and gl.checkpoint.depths == (1, 2)
    assert not tutorial.config.tied_weights and not tutorial.config.embedding_bias
    assert gl.config.tied_weights and gl.config.embedding_bias and gl.config.name == "gl"
    assert tutorial.checkpoint.skipped["Model/global_step"] == "int64 scalar = 199"
    assert gl.checkpoint.skipped["Train/Model/variational_masks_1/Variable"] == "float32 [8, 16]"


def test_a_set_that_contradicts_the_checkpoint_is_refused():
    with pytest.raises(configs.ConfigError, match="--set=hidden_size=32 contradicts the checkpoint, which has "
                                                  "hidden_size=16."):
        tf1.checkpoint_config(imported("gl_2x16", "model-1").checkpoint, "gl", {"hidden_size": "32"})


# ----- export, and a run started from an imported checkpoint -----
@pytest.mark.slow
def test_export_of_an_imported_head_scores_like_the_imported_model(ptb_dir, tmp_path):
    result = imported("gl_2x16", "model-2")
    export_dir = str(tmp_path / "export")
    printed = tf1.export_checkpoint(os.path.join(FIXTURES, "gl_2x16", "model-2"), ptb_dir, export_dir, depth=1)
    assert printed["depth"] == 1 and printed["export_dir"] == export_dir
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        metadata = json.load(handle)
    assert (metadata["depth"], metadata["checkpoint_depth"], metadata["source"]["program"]) == (1, 2, "gl")
    assert sorted(os.listdir(export_dir)) == ["export.json", "model.keras", "saved_model", "vocab.txt"]
    ids = np.array([[1132, 93, 358, 5, 329]], np.int32)
    expected, _ = result.model(ids, result.model.initial_state(1, 1), depth=1)
    loaded = keras.saving.load_model(os.path.join(export_dir, "model.keras"))
    logits, _ = loaded(ids, loaded.initial_state(1))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    saved = tf.saved_model.load(os.path.join(export_dir, "saved_model", "1"))
    log_probs = saved.step(tf.constant(ids), saved.initial_state(tf.constant(1))["state"])["log_probs"]
    np.testing.assert_allclose(log_probs, tf.nn.log_softmax(expected), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_gl_phase_one_checkpoint_continues_as_phase_two_and_trains(corpus, ptb_dir, tmp_path):
    from gradual_rnn.train.context import RunOptions
    from gradual_rnn.train.loop import train

    save_path = str(tmp_path / "continued")
    sets = {"batch_size": "8", "num_steps": "10", "test_num_steps": "10", "layer_epochs": "1", "max_epochs": "1"}
    printed = tf1.start_run(os.path.join(FIXTURES, "gl_2x16", "model-1"), save_path, "gl", sets, phase=2)
    assert printed["phase"] == 2 and "--model=gl" in printed["command"]
    command_sets = dict(item.split("=", 1) for item in
                        (word[len("--set="):] for word in printed["command"].split() if word.startswith("--set=")))
    config = configs.override(configs.get_config("gl"), command_sets)
    seeded = tf1.import_checkpoint(os.path.join(FIXTURES, "gl_2x16", "model-1"), "gl", sets)
    assert config == seeded.config
    prefix_corpus = ptb.Corpus(corpus.train[:6000], corpus.valid[:2000], corpus.test[:1000], corpus.vocabulary,
                               corpus.unknown_counts)
    results = train(config, RunOptions(data_dir=ptb_dir, save_path=save_path), prefix_corpus)
    assert [(row["phase"], row["depth"], row["epoch"]) for row in results["rows"]] == [(2, 2, 1)]
    depth_two_before = 1742.694501  # fixture.json: model-1, valid/depth2 at B=8, n=10 on these 2000 ids
    assert results["rows"][0]["valid_perplexity"] < 0.9 * depth_two_before
    assert np.isfinite(results["test_perplexity"])
    output = str(tmp_path / "back" / "model-2")
    written = tf1.write_run_checkpoint(save_path, output, "latest")
    assert (written["program"], written["source"]["depth"]) == ("gl", 2)
    assert written_variables(output) == all_variables("gl_2x16", "model-2")
    trained = tf1.import_checkpoint(output)
    bias = "Model/lstm_layer_2/basic_lstm_cell/bias"
    assert not np.array_equal(trained.checkpoint.tensors[bias], seeded.checkpoint.tensors[bias])
