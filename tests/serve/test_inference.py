"""The inference API (`gradual_rnn.serve.inference`, `gradual_rnn.load`) and the SavedModel's text
signatures: per-token scores, `serving_default` in this process and through `saved_model_cli` with
only TensorFlow, seeded batched generation with top-p, the sampler against a NumPy reference,
one-line errors, and the streaming TFLite model against the SavedModel on real PTB.

The export is the tiny untrained model of tests/serve/test_generate.py (init_scale 1, so that its
predictions are peaked and depend strongly on the state); the TFLite test makes its own over PTB's
vocabulary."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.serve import export, inference, layout, signatures
from gradual_rnn.train.models import build_model
from serve.test_generate import export_dir, exported  # noqa: F401 (fixtures)

PROMPTS = ["w1 w2", "w3 zzz w4 w5 w6", "w7"]
# exported.generate(PROMPTS, 8, top_p=0.9, seed=5): pinned, as the seed promises the same words anywhere.
PINNED_WORDS = [("w5", "w8", "w6", "w1", "<unk>", "w4", "<unk>", "w8"),
                ("w7", "w8", "w5", "w2", "w6", "w6", "w2", "w1"),
                ("<unk>", "w5", "w3", "w3", "w3", "<unk>", "w1", "w1")]


def step_log_probs(exported, stream):
    """log p(stream[t] | <eos>, stream[:t]) for each t, from the SavedModel's id-level `step`."""
    ids = [exported.vocabulary[exported.eos]] + list(stream)
    log_probs = exported.module.step(tf.constant([ids[:-1]], tf.int32), exported.initial_state(1))["log_probs"]
    return log_probs.numpy()[0, np.arange(len(stream)), ids[1:]].astype(np.float64)


# ----- scoring -----
def test_score_gives_token_sentence_and_total_log_probabilities(exported):
    texts = ["w1 w2 zzz w3", "w4 w5", ""]
    alone = exported.score(texts)
    ids = [exported.to_ids(text.split() + ["<eos>"])[0] for text in texts]
    assert [len(pieces) for pieces in alone.token_log_probs] == [5, 3, 1]
    assert alone.unknown.tolist() == [1, 0, 0] and alone.unknown_count == 1
    for pieces, sentence in zip(alone.token_log_probs, ids):
        np.testing.assert_allclose(pieces, step_log_probs(exported, sentence), rtol=1e-6)
    np.testing.assert_allclose(alone.log_probs, [pieces.sum() for pieces in alone.token_log_probs], rtol=1e-12)
    assert alone.total_perplexity == pytest.approx(math.exp(-alone.log_probs.sum() / 9), rel=1e-12)
    carried = exported.score(texts, carry_state=True)
    np.testing.assert_allclose(np.concatenate(carried.token_log_probs), step_log_probs(exported, np.concatenate(ids)),
                               rtol=1e-6)
    assert abs(carried.log_probs[1] - alone.log_probs[1]) > 1e-3  # the carried state changes the numbers


def test_serving_default_scores_text_as_the_api_does(exported):
    """Python's whitespace (a no-break space, a tab), a word outside the vocabulary, an empty text."""
    assert set(signatures.PYTHON_WHITESPACE) == {chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace()}
    texts = ["w1 w2 zzz w3", "w4\u00a0w5\tw6 ", ""]
    served = {key: value.numpy() for key, value in exported.module.signatures["serving_default"](
        texts=tf.constant(texts)).items()}
    scores = exported.score(texts)
    np.testing.assert_allclose(served["log_prob"], scores.log_probs, rtol=1e-6)
    np.testing.assert_allclose(served["perplexity"], scores.perplexities(), rtol=1e-6)
    assert served["token_count"].tolist() == scores.tokens.tolist() == [5, 4, 1]
    assert served["unknown_count"].tolist() == scores.unknown.tolist() == [1, 0, 0]
    for row, pieces in enumerate(scores.token_log_probs):
        np.testing.assert_allclose(served["token_log_probs"][row, :len(pieces)], pieces, rtol=1e-6)
        assert not served["token_log_probs"][row, len(pieces):].any()
    empty = exported.module.signatures["serving_default"](texts=tf.constant([], tf.string))
    assert empty["log_prob"].shape == (0,)


def test_the_vocabulary_table_maps_unknown_words_and_needs_eos():
    with_unk = signatures.Vocabulary(["<unk>", "<eos>", "a"], "<eos>", "<unk>")
    ids, unknown = with_unk.ids(tf.ragged.constant([["a", "zz"], []]))
    assert ids.to_list() == [[2, 0], []] and unknown.to_list() == [[False, True], []]
    without_unk = signatures.Vocabulary(["<eos>", "a"], "<eos>", "<unk>")
    with pytest.raises(tf.errors.InvalidArgumentError, match="words outside the vocabulary, which has no <unk>"):
        without_unk.ids(tf.ragged.constant([["a", "zz"]]))
    with pytest.raises(ValueError, match="The vocabulary has no <eos>, which text scoring feeds first."):
        signatures.Vocabulary(["<unk>", "a"], "<eos>", "<unk>")


def test_an_export_of_format_1_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "export.json").write_text(json.dumps(dict(format_version=1, vocab_size=12)))
    message = r"is an export of format 1, and this gradual_rnn reads format 2 .*saved_model/1/.*export again"
    with pytest.raises(inference.ExportUseError, match=message):
        inference.load(str(tmp_path / "old"))


# ----- sampling -----
def reference_draw(probabilities, uniform, temperature, top_k, top_p):
    """The sampler of serve/signatures.py in NumPy: temperature, top-k, top-p, inverse CDF in id order."""
    if temperature == 0:
        return int(np.argmax(probabilities))
    weights = probabilities ** (1 / temperature)
    order = np.argsort(-weights, kind="stable")
    if top_k:
        weights[order[top_k:]] = 0
    shares = weights[order] / weights.sum()
    weights[order[np.cumsum(shares) - shares >= top_p]] = 0
    return int(np.searchsorted(np.cumsum(weights) / weights.sum(), uniform, side="right"))


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (1.0, 0, 0.7), (1.0, 2, 1.0), (2.0, 3, 0.8),
                                                       (0.5, 0, 0.95), (0.0, 0, 1.0)])
def test_draw_equals_a_numpy_reference_on_a_toy_distribution(temperature, top_k, top_p):
    probabilities = np.array([0.1, 0.5, 0.25, 0.15])
    uniforms = (np.arange(200) + 0.5) / 200  # off every boundary of these distributions
    drawn = draw(np.tile(np.log(probabilities), (200, 1)), uniforms, temperature, top_k, top_p)
    assert drawn == [reference_draw(probabilities, u, temperature, top_k, top_p) for u in uniforms]


def draw(log_probs, uniforms, temperature=1.0, top_k=0, top_p=1.0):
    return signatures.draw(tf.constant(log_probs, tf.float32), tf.constant(uniforms, tf.float64),
                           tf.constant(temperature), tf.constant(top_k), tf.constant(top_p)).numpy().tolist()


def test_draw_keeps_the_nucleus_and_breaks_ties_by_id():
    log_probs = np.log([[0.1, 0.5, 0.25, 0.15], [0.4, 0.4, 0.2, 1e-9]])
    assert draw(log_probs[[0, 0, 0]], [0.0, 0.66, 0.67], top_p=0.7) == [1, 1, 2]  # {0.5, 0.25} -> {2/3, 1/3}
    assert draw(log_probs, [0.99, 0.99], temperature=0.0) == [1, 0]


def test_the_draws_of_a_row_do_not_depend_on_the_batch_size():
    one, four = signatures.uniforms_for(1, 5, 3).numpy(), signatures.uniforms_for(4, 5, 3).numpy()
    assert one[0] == four[0] and len(set(four)) == 4
    assert signatures.uniforms_for(1, 5, 4).numpy()[0] != one[0]


def test_generate_draws_the_pinned_words_for_a_seed_with_top_p(exported):
    generated = exported.generate(PROMPTS, 8, top_p=0.9, seed=5)
    assert [item.words for item in generated] == PINNED_WORDS
    assert [item.prompt_unknown for item in generated] == [0, 1, 0]
    assert exported.generate(PROMPTS, 8, top_p=0.9, seed=5) == generated
    assert [item.words for item in exported.generate(PROMPTS[:2], 8, top_p=0.9, seed=5)] == PINNED_WORDS[:2]
    assert [item.words for item in exported.generate(PROMPTS, 8, top_p=0.9, seed=6)] != PINNED_WORDS
    served = exported.module.generate(prompts=tf.constant(PROMPTS), num_words=tf.constant(8),
                                      seed=tf.constant(5, tf.int64), temperature=tf.constant(1.0),
                                      top_k=tf.constant(0), top_p=tf.constant(0.9))
    assert [tuple(word.decode() for word in row) for row in served["words"].numpy()] == PINNED_WORDS
    assert [text.decode() for text in served["text"].numpy()] == [item.text for item in generated]
    documented = exported.generate(["w1 w2", "w3 w4 w5"], 8, top_p=0.9, seed=1)  # docs/serving.md
    assert [item.text for item in documented] == ["<unk> w7 w6 w7 w3 <unk> w2 w5", "w7 w5 w8 <unk>\nw6 <unk> w8"]


def test_generate_at_temperature_zero_is_greedy(exported):
    [generated] = exported.generate(["w1 w2"], 6, temperature=0.0)
    ids, words = exported.to_ids(["<eos>", "w1", "w2"])[0], []
    for _ in range(6):
        log_probs = exported.module.step(tf.constant([ids], tf.int32), exported.initial_state(1))["log_probs"]
        next_id = int(np.argmax(log_probs[0, -1]))
        ids, words = np.append(ids, next_id), words + [exported.words[next_id]]
    assert list(generated.words) == words


BAD_INPUT = [
    (dict(top_p=0.0), "top_p must be in (0, 1] (1 = no nucleus cut), got 0.0."),
    (dict(top_p=1.5), "top_p must be in (0, 1] (1 = no nucleus cut), got 1.5."),
    (dict(top_p=float("nan")), "top_p must be in (0, 1] (1 = no nucleus cut), got nan."),
    (dict(temperature=-1.0), "temperature must be a finite number >= 0 (0 = greedy), got -1.0."),
    (dict(top_k=-1), "top_k must be >= 0 (0 = the whole vocabulary), got -1."),
    (dict(top_k=2.5), "top_k must be an integer, got 2.5."),
    (dict(num_words=0), "num_words must be at least 1, got 0."),
    (dict(seed=-1), "seed must be >= 0, got -1."),
    (dict(seed=2 ** 63), "seed must be below 2**63, got 9223372036854775808."),
    (dict(prompts=[]), "The batch of prompts is empty: give at least one."),
    (dict(prompts="w1 w2"), "Give the prompts as a list of strings, e.g. ['w1 w2'], not one string."),
    (dict(prompts=["w1", "  "]), "Prompt 2 of 2 is empty: give at least one word, e.g. 'the company said'."),
    (dict(prompts=["w1", 7]), "Every one of the prompts must be a string, got 7."),
]


@pytest.mark.parametrize("change, message", BAD_INPUT)
def test_bad_generation_input_gives_one_line_errors(exported, change, message):
    arguments = dict(dict(prompts=["w1"], num_words=3), **change)
    with pytest.raises(inference.ExportUseError) as refused:
        exported.generate(**arguments)
    assert str(refused.value) == message


def test_bad_texts_to_score_give_one_line_errors(exported):
    for texts, message in (([], "The batch of texts is empty: give at least one."),
                           ("w1", "Give the texts as a list of strings, e.g. ['w1'], not one string.")):
        with pytest.raises(inference.ExportUseError) as refused:
            exported.score(texts)
        assert str(refused.value) == message
    with pytest.raises(inference.ExportUseError, match="The batch of sentences is empty"):
        exported.score_sentences([])


# ----- the SavedModel with TensorFlow only -----
def saved_model_cli():
    """The command that ships with TensorFlow: the venv's script, else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def printed_outputs(stdout):
    """{output key: numbers} from saved_model_cli's `Result for output key NAME:` blocks."""
    blocks = re.findall(r"Result for output key (\w+):\n(.*?)(?=\nResult for output key|\Z)", stdout, re.S)
    return {key: [float(number) for number in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", text)]
            for key, text in blocks}


@pytest.mark.slow
def test_saved_model_cli_scores_two_sentences_as_the_api_does(export_dir, exported, tmp_path):
    """`saved_model_cli run` in a process where gradual_rnn cannot even be imported."""
    stub = tmp_path / "stub" / "gradual_rnn"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('gradual_rnn was imported')\n")
    texts = ["w1 w2 zzz w3", "w4 w5 w6"]
    command = saved_model_cli() + ["run", "--dir", layout.saved_model_path(export_dir), "--tag_set", "serve",
                                   "--signature_def", "serving_default", "--input_exprs", f"texts={texts!r}"]
    environment = dict(os.environ, PYTHONPATH=str(tmp_path / "stub"), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = printed_outputs(done.stdout)
    scores = exported.score(texts)
    assert printed["log_prob"] == pytest.approx(scores.log_probs.tolist(), rel=1e-5)
    assert printed["token_count"] == [5, 4] and printed["unknown_count"] == [1, 0]


# ----- TFLite -----
@pytest.fixture(scope="module")
def ptb_export(ptb_dir, tmp_path_factory):
    """An export with model.tflite of an untrained (seeded, init_scale 1) 2x16 model over PTB's vocabulary."""
    words = export.training_vocabulary(ptb_dir, 10_000)
    config = configs.Config(name="tiny", num_layers=2, hidden_size=16, num_steps=5, vocab_size=len(words),
                            init_scale=1.0, seed=5)
    directory = str(tmp_path_factory.mktemp("ptb_tflite") / "exported")
    metadata = export.write_export(build_model(config), words, dict(vocab_size=len(words)), directory,
                                   with_tflite=True)
    assert metadata["files"]["tflite"] == "model.tflite" and os.path.isfile(os.path.join(directory, "model.tflite"))
    return directory


def tflite_log_probs(path, ids, eos_id, carry_state=True):
    """log p(ids[t] | ...) through the TFLite model, fed `<eos>` then each id (state carried or not)."""
    runner = tf.lite.Interpreter(model_path=path, num_threads=1).get_signature_runner()
    zeros = np.zeros(runner.get_input_details()["state"]["shape"], np.float32)
    state, previous, log_probs = zeros, eos_id, []
    for token in ids:
        result = runner(token=np.array([previous], np.int32), state=state if carry_state else zeros)
        state, previous = result["state"], token
        log_probs.append(result["log_probs"][0, token])
    return np.asarray(log_probs, np.float64)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_perplexity_of_2000_ptb_test_tokens_equals_the_saved_model(ptb_dir, ptb_export):
    with open(os.path.join(ptb_dir, "ptb.test.txt"), encoding="utf-8") as handle:
        tokens = [word for line in handle for word in line.split() + ["<eos>"]][:2000]
    exported = inference.load(ptb_export)
    saved_model = exported.score_sentences([tokens], carry_state=True)
    ids, unknown = exported.to_ids(tokens)
    assert unknown == 0
    path = os.path.join(ptb_export, "model.tflite")
    streamed = tflite_log_probs(path, ids, exported.vocabulary["<eos>"])
    assert math.exp(-streamed.mean()) == pytest.approx(saved_model.total_perplexity, rel=1e-5)
    np.testing.assert_allclose(streamed, saved_model.token_log_probs[0], rtol=1e-5, atol=1e-5)
    without_state = tflite_log_probs(path, ids, exported.vocabulary["<eos>"], carry_state=False)
    assert abs(math.exp(-without_state.mean()) / saved_model.total_perplexity - 1) > 0.01  # the state matters


def test_format_2_export_folder(export_dir):
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        metadata = json.load(handle)
    assert metadata["format_version"] == 2
    assert metadata["files"] == dict(keras="model.keras", saved_model="saved_model/1", vocabulary="vocab.txt")
    assert metadata["signatures"] == sorted(["initial_state", "step", "score_window", "score", "draw_next",
                                             "serving_default", "generate"])
    assert sorted(os.listdir(os.path.join(export_dir, "saved_model"))) == ["1"]
