"""Export of a trained tiny model (.keras, SavedModel, vocabulary), scoring and generation from it."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import write_corpus
from serve.test_generate import options as generate_options
from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.nn import language_model as lm
from gradual_rnn.serve import export
from gradual_rnn.cli import generate as generate_command
from gradual_rnn.serve import generate, inference, layout, signatures
from gradual_rnn.train import checkpoint as checkpoints
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train import loop as trainer
from gradual_rnn.train.context import RunOptions
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress, perplexity
from gradual_rnn.train.run_folder import RunFolder

pytestmark = pytest.mark.slow  # a trained run for every test, and subprocesses

RELATIVE = 1e-5


def start_module(command, *args, environment=None):
    """`python -m gradual_rnn COMMAND ARGS...` in a subprocess."""
    environment = dict(environment or os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "gradual_rnn", command, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_module(command, *args, environment=None):
    return finish(start_module(command, *args, environment=environment))


def checkpoint_names(save_path):
    return [os.path.basename(prefix) for prefix in RunFolder(save_path).complete()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny 2-layer gradual run (one epoch per phase) on a corpus holding <unk>, exported."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.RandomState(0)
    words = [f"w{i}" for i in range(39)] + [ptb.UNK]

    def sentences(count):
        return [" ".join(rng.choice(words, size=rng.randint(3, 12))) for _ in range(count)]

    corpus_dir = write_corpus(root / "corpus", sentences(300), sentences(40), sentences(40))
    corpus = ptb.load_corpus(corpus_dir)
    config = configs.Config(name="tiny", num_layers=2, hidden_size=8, num_steps=5, batch_size=4,
                            vocab_size=corpus.vocab_size, max_epochs=1, layer_epochs=1, full_lr_epochs=1,
                            gradual=True, seed=7)
    save_path = str(root / "run")
    trainer.train(config, RunOptions(data_dir=corpus_dir, save_path=save_path), corpus)
    export_dir = str(root / "exported")
    metadata = export.export_checkpoint(save_path, export_dir, which="latest")
    checkpoint = export.select_checkpoint(save_path, "latest")
    model = build_model(config, checkpoint.progress.model_depth)
    checkpoints.restore_model(checkpoint.prefix, model)
    return dataclasses.make_dataclass("Run", ["root", "corpus_dir", "corpus", "config", "save_path",
                                              "export_dir", "metadata", "model"])(
        root, corpus_dir, corpus, config, save_path, export_dir, metadata, model)


def valid_perplexity(keras_model, run):
    inputs, targets = ptb.window_arrays(run.corpus.valid, run.config.batch_size, run.config.num_steps)
    evaluate = evaluation.make_eval_step(keras_model, keras_model.num_layers)
    nll, count, _ = evaluate(tf.constant(inputs), tf.constant(targets), tf.ones(inputs.shape),
                             keras_model.initial_state(run.config.batch_size))
    return perplexity(float(nll), float(count))


def test_export_folder_describes_the_checkpoint(run):
    names = sorted(os.listdir(run.export_dir))
    assert names == ["export.json", "model.keras", "saved_model", "vocab.txt"]
    assert os.listdir(os.path.join(run.export_dir, "saved_model")) == ["1"]  # TensorFlow Serving's <model>/<version>
    assert run.metadata["files"]["saved_model"] == "saved_model/1" and "tflite" not in run.metadata["files"]
    with open(os.path.join(run.export_dir, "vocab.txt"), encoding="utf-8") as handle:
        assert handle.read().splitlines() == run.corpus.words()
    weights = run.metadata["weights"]
    where = (run.metadata["depth"], weights["phase"], weights["epoch"], weights["epoch_complete"])
    assert where == (2, 2, 1, True)
    assert run.metadata["source"]["checkpoint"] == checkpoint_names(run.save_path)[-1]
    assert run.metadata["config"] == json.loads(run.config.to_json())
    best = weights["best_validation"]
    assert weights["is_best_validation"] == ((best["phase"], best["epoch"]) == (2, 1))


def test_keras_file_round_trips_and_scores_the_same(run):
    in_memory = valid_perplexity(run.model, run)
    assert run.metadata["weights"]["valid_perplexity"] == pytest.approx(in_memory, rel=RELATIVE)
    reloaded = keras.saving.load_model(os.path.join(run.export_dir, "model.keras"), safe_mode=True)
    assert isinstance(reloaded, lm.LanguageModel)
    ignored = dict(name=None, rnn_mode=None)  # the export runs rnn_mode "auto"; names are per process
    assert dict(reloaded.get_config(), **ignored) == dict(run.model.get_config(), **ignored)
    assert valid_perplexity(reloaded, run) == pytest.approx(in_memory, rel=RELATIVE)


SAVED_MODEL_SCRIPT = textwrap.dedent("""
    import json, math, sys
    import numpy as np
    import tensorflow as tf
    windows = np.load(sys.argv[2])
    module = tf.saved_model.load(sys.argv[1])
    state = module.initial_state(tf.constant(windows["inputs"].shape[1]))["state"]
    nll = count = 0.0
    for inputs, targets in zip(windows["inputs"], windows["targets"]):
        result = module.score_window(tf.constant(inputs), tf.constant(targets), state)
        state = result["state"]
        nll -= float(tf.reduce_sum(tf.cast(result["target_log_probs"], tf.float64)))
        count += targets.size
    scored = module.score(tf.constant(windows["rows"]), tf.constant(windows["lengths"]))
    step = module.step(tf.constant(windows["rows"]), module.initial_state(tf.constant(2))["state"])
    assert "gradual_rnn" not in sys.modules, sorted(sys.modules)
    print(json.dumps(dict(perplexity=math.exp(nll / count), nll_sum=scored["nll_sum"].numpy().tolist(),
                          count=scored["token_count"].numpy().tolist(),
                          log_probs=step["log_probs"].numpy().tolist(),
                          no_gradual_rnn="gradual_rnn" not in sys.modules)))
""")


def test_saved_model_scores_the_same_without_gradual_rnn(run, tmp_path):
    inputs, targets = ptb.window_arrays(run.corpus.valid, run.config.batch_size, run.config.num_steps)
    rows, lengths = run.corpus.valid[:14].reshape(2, 7), np.asarray([7, 4], np.int32)
    np.savez(tmp_path / "windows.npz", inputs=inputs, targets=targets, rows=rows, lengths=lengths)
    script = tmp_path / "use_saved_model.py"
    script.write_text(SAVED_MODEL_SCRIPT)
    done = subprocess.run([sys.executable, str(script), layout.saved_model_path(run.export_dir),
                           str(tmp_path / "windows.npz")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["no_gradual_rnn"]
    assert result["perplexity"] == pytest.approx(valid_perplexity(run.model, run), rel=RELATIVE)
    logits, _ = run.model(tf.constant(rows), run.model.initial_state(2))
    log_probs = tf.nn.log_softmax(logits).numpy()
    np.testing.assert_allclose(result["log_probs"], log_probs, rtol=1e-5, atol=1e-6)
    expected = [-sum(log_probs[row, t, rows[row, t + 1]] for t in range(length - 1))
                for row, length in enumerate(lengths)]
    np.testing.assert_allclose(result["nll_sum"], expected, rtol=1e-5)
    assert result["count"] == [6.0, 3.0]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_cli_exports_a_lower_depth_of_a_named_checkpoint(run, tmp_path):
    from gradual_rnn.cli import export as export_command

    name = checkpoint_names(run.save_path)[0]
    with pytest.raises(SystemExit) as stopped:  # the command, in this process
        export_command.run_main(["export", f"--save_path={run.save_path}", f"--export_dir={tmp_path / 'd1'}",
                                 f"--checkpoint={name}", "--depth=1", "--tflite"])
    assert not stopped.value.code
    metadata = json.loads((tmp_path / "d1" / "export.json").read_text())
    assert (metadata["depth"], metadata["checkpoint_depth"], metadata["source"]["checkpoint"]) == (1, 2, name)
    assert metadata["files"]["tflite"] == "model.tflite"
    module = tf.saved_model.load(layout.saved_model_path(str(tmp_path / "d1")))
    model = build_model(run.config, 2)
    checkpoints.restore_model(export.select_checkpoint(run.save_path, name).prefix, model)
    ids = run.corpus.test[None, :9]
    logits, _ = model(tf.constant(ids), model.initial_state(1), depth=1)
    exported = module.step(tf.constant(ids), module.initial_state(tf.constant(1))["state"])["log_probs"]
    np.testing.assert_allclose(exported.numpy(), tf.nn.log_softmax(logits).numpy(), rtol=1e-5, atol=1e-6)
    runner = tf.lite.Interpreter(model_path=str(tmp_path / "d1" / "model.tflite")).get_signature_runner()
    state = np.zeros([1, 2, 1, run.config.hidden_size], np.float32)
    for position, token in enumerate(ids[0]):
        streamed = runner(token=np.array([token], np.int32), state=state)
        state = streamed["state"]
        np.testing.assert_allclose(streamed["log_probs"][0], exported.numpy()[0, position], rtol=1e-5, atol=1e-5)


def test_one_step_at_a_time_path_equals_the_model_when_forget_bias_is_not_zero():
    model = lm.LanguageModel(vocab_size=11, hidden_size=4, num_layers=2, init_scale=0.3, forget_bias=1.0,
                             rnn_mode="auto", seed=3)
    ids = tf.constant(np.arange(12).reshape(2, 6) % 11, tf.int32)
    state = tf.random.stateless_normal([2, 2, 2, 4], seed=[1, 2])
    function = tf.function(signatures.run_model, reduce_retracing=True)
    logits, new_state = function(model, ids, state)
    expected, expected_pairs = model(ids, signatures.state_pairs(state, 2))
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.numpy(), signatures.state_tensor(expected_pairs).numpy(), rtol=1e-5)


def test_checkpoint_rule_on_scripted_progress(run):
    row = dict(phase=2, epoch=3, train_perplexity=50.0, valid_perplexity=60.0)
    best = dict(phase=2, epoch=3, valid=60.0)
    described = export.describe_weights(Progress(window=0, rows=(row,), best=best))
    assert described["is_best_validation"] and described["valid_perplexity"] == 60.0
    later = export.describe_weights(Progress(window=0, rows=(row, dict(row, epoch=4)), best=best))
    assert not later["is_best_validation"] and later["best_validation"]["epoch"] == 3
    middle = export.describe_weights(Progress(phase=2, epoch=4, window=7, rows=(row,), best=best))
    assert (middle["epoch"], middle["epoch_complete"], middle["valid_perplexity"]) == (5, False, None)
    chosen = export.select_checkpoint(run.save_path, "best")
    assert chosen.label == "best" and export.describe_weights(chosen.progress)["is_best_validation"]


def test_best_falls_back_to_latest_without_a_pinned_copy(run, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(run.save_path, copy)
    shutil.rmtree(copy / "checkpoints" / "best")
    names = checkpoint_names(str(copy))
    retained = [export.select_checkpoint(str(copy), name) for name in names]
    chosen = export.select_checkpoint(str(copy), "best")
    if any(export.describe_weights(c.progress)["is_best_validation"] for c in retained):
        assert export.describe_weights(chosen.progress)["is_best_validation"]
    else:
        assert chosen.name == names[-1] and "is used instead" in caplog.text


def greedy_words(run, prompt, count):
    """Greedy decoding with the in-memory Keras model, independent of gradual_rnn.generate."""
    vocabulary = run.corpus.vocabulary
    ids = [vocabulary[ptb.EOS]] + [vocabulary[word] for word in prompt.split()]
    state, chosen = run.model.initial_state(1), []
    for _ in range(count):
        logits, state = run.model(tf.constant([ids], tf.int32), state)
        ids = [int(np.argmax(logits[0, -1]))]
        chosen.append(run.corpus.words()[ids[0]])
    return chosen


def test_generation_is_seeded_and_greedy_at_temperature_zero(run):
    exported = inference.load(run.export_dir)

    def words(prompt="w1 w2", **settings):
        return list(exported.generate([prompt], 12, **settings)[0].words)

    assert words(seed=5) == words(seed=5) != words(seed=6)
    greedy = greedy_words(run, "w1 w2", 12)
    assert words(temperature=0.0) == greedy
    assert words(temperature=1e-6, seed=3) == greedy
    assert words(top_k=1, seed=9) == greedy
    assert words(top_p=1e-6, seed=9) == greedy  # the nucleus of the smallest mass is the most likely word
    batch = exported.generate(["w1 w2", "w3", "w4 w5 w6"], 12, temperature=0.0)
    assert [list(item.words) for item in batch] == [greedy_words(run, prompt, 12) for prompt in ("w1 w2", "w3",
                                                                                                "w4 w5 w6")]


def test_scoring_matches_the_model_in_both_modes(run):
    exported = inference.load(run.export_dir)
    sentences = generate.split_sentences("w1 w2 zzz\nw3 qqq w4 w5\nw6", ptb.EOS)
    assert sentences == [["w1", "w2", "zzz", ptb.EOS], ["w3", "qqq", "w4", "w5", ptb.EOS], ["w6"]]
    vocabulary = run.corpus.vocabulary
    ids = [[vocabulary.get(word, vocabulary[ptb.UNK]) for word in sentence] for sentence in sentences]

    def nll(stream):
        logits, _ = run.model(tf.constant([stream[:-1]], tf.int32), run.model.initial_state(1))
        log_probs = tf.nn.log_softmax(logits).numpy()[0]
        return -log_probs[np.arange(len(stream) - 1), stream[1:]]

    eos = vocabulary[ptb.EOS]
    stream = nll([eos] + sum(ids, []))
    carried = exported.score_sentences(sentences, carry_state=True, window=3)
    expected = [stream[:4].sum(), stream[4:9].sum(), stream[9:].sum()]
    np.testing.assert_allclose(carried.nll, expected, rtol=1e-5)
    alone = exported.score_sentences(sentences, carry_state=False)
    np.testing.assert_allclose(alone.nll, [nll([eos] + row).sum() for row in ids], rtol=1e-5)
    assert alone.unknown.tolist() == [1, 1, 0] and alone.tokens.tolist() == [4, 5, 1]
    assert carried.total_perplexity == pytest.approx(np.exp(stream.mean()), rel=1e-5)


def test_generate_commands_score_and_generate_from_the_trained_export(run, tmp_path, capsys, caplog):
    """`generate score` and `generate generate` on the export of a real training run, called as the
    command calls them (the real process: tests/serve/test_generate.py)."""
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 zzz\nw3 w4\n")
    generate_command.score(generate_options(run.export_dir, text_file=str(text)))
    scored = capsys.readouterr().out
    assert "sentences 2, tokens 7 (words and <eos>), words mapped to <unk>: 1" in scored
    assert "1 words not in the vocabulary were mapped to <unk>" in caplog.text
    exported = inference.load(run.export_dir)
    total = exported.score_sentences([["w1", "w2", "zzz", "<eos>"], ["w3", "w4", "<eos>"]], carry_state=True)
    assert f"total perplexity {total.total_perplexity:.3f}" in scored
    generate_command.generate(generate_options(run.export_dir, prompt="w1 w2", num_words=8, temperature=0.7,
                                                top_k=5, top_p=0.8, seed=4))
    [generated] = exported.generate(["w1 w2"], 8, temperature=0.7, top_k=5, top_p=0.8, seed=4)
    assert capsys.readouterr().out.strip() == inference.render(["w1", "w2", *generated.words]).strip()
    assert inference.render(["a", "<eos>", "b", "c"]) == "a\nb c"


@pytest.fixture
def broken_copy(run, tmp_path):
    """A fresh copy of the export, for damaging."""
    return shutil.copytree(run.export_dir, tmp_path / "copy")


def test_bad_exports_give_clear_messages(run, broken_copy, tmp_path):
    with pytest.raises(inference.ExportUseError, match="No export at .*does not exist"):
        inference.load(str(tmp_path / "nowhere"))
    vocab = broken_copy / "vocab.txt"
    vocab.write_text("".join(vocab.read_text().splitlines(keepends=True)[:-1]))
    size = run.config.vocab_size
    message = f"has {size - 1} words but the model has {size}: it is not"
    with pytest.raises(inference.ExportUseError, match=message):
        inference.load(str(broken_copy))
    words = run.corpus.words()
    vocab.write_text("".join(f"{word}\n" for word in [words[1], words[0]] + words[2:]))
    with pytest.raises(inference.ExportUseError, match="differs from the one exported with this model"):
        inference.load(str(broken_copy))
    shutil.copy(os.path.join(run.export_dir, "vocab.txt"), vocab)
    (broken_copy / "saved_model" / "1" / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(inference.ExportUseError, match="cannot be loaded .*corrupted or incomplete"):
        inference.load(str(broken_copy))
    (broken_copy / "export.json").write_text("{not json")
    with pytest.raises(inference.ExportUseError, match="export.json is corrupted"):
        inference.load(str(broken_copy))
    done = run_module("generate", "score", f"--export_dir={broken_copy}", f"--text_file={vocab}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "ExportUseError:" in done.stderr and "export.json is corrupted" in done.stderr


def test_bad_prompts_and_words_give_clear_messages(run):
    exported = inference.load(run.export_dir)
    with pytest.raises(inference.ExportUseError, match="Prompt 1 of 1 is empty"):
        exported.generate(["   "], 5)
    with pytest.raises(inference.ExportUseError, match="temperature must be"):
        exported.generate(["w1"], 5, temperature=-1.0)
    assert exported.to_ids(["w1", "zzz", "yyy"])[1] == 2
    without_unk = dataclasses.replace(exported, words=[w for w in exported.words if w != ptb.UNK])
    message = r"1 word\(s\) are not in the vocabulary .*'zzz'.* no <unk>"
    with pytest.raises(inference.ExportUseError, match=message):
        without_unk.to_ids(["w1", "zzz"])


def test_bad_export_requests_give_clear_messages(run, tmp_path):
    with pytest.raises(export.ExportError, match="is not a folder of a training run"):
        export.export_checkpoint(str(tmp_path / "none"), str(tmp_path / "out"))
    with pytest.raises(export.ExportError, match=r"--depth=3 is outside 1..2"):
        export.export_checkpoint(run.save_path, str(tmp_path / "out"), which="latest", depth=3)
    with pytest.raises(export.ExportError, match="Checkpoint ckpt-999999 not found"):
        export.export_checkpoint(run.save_path, str(tmp_path / "out"), which="ckpt-999999")
    # A run from before runs kept their vocabulary: rebuilt from the corpus named, which must fit.
    old = shutil.copytree(run.save_path, tmp_path / "old")
    os.remove(old / "vocab.txt")
    with pytest.raises(export.ExportError, match="keeps no vocabulary .* pass --data_path"):
        export.export_checkpoint(str(old), str(tmp_path / "out"))
    other = write_corpus(tmp_path / "other", ["a b c"] * 5, ["a"], ["b"])
    message = f"gives 4 words but the model has vocab_size={run.config.vocab_size}"
    with pytest.raises(export.ExportError, match=message):
        export.export_checkpoint(str(old), str(tmp_path / "out"), other)
    (old / "vocab.txt").write_text("changed\n" * run.config.vocab_size)
    with pytest.raises(export.ExportError, match="differs from the vocabulary the run trained on"):
        export.export_checkpoint(str(old), str(tmp_path / "out"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="non-empty folder that holds no export"):
        export.export_checkpoint(run.save_path, str(tmp_path / "busy"))
    assert not os.path.exists(tmp_path / "out")


def test_corrupted_checkpoints_are_named_or_skipped(run, tmp_path):
    copy = shutil.copytree(run.save_path, tmp_path / "run")
    names = checkpoint_names(str(copy))
    (copy / "checkpoints" / f"{names[-1]}.data-00000-of-00001").write_bytes(b"truncated")
    with pytest.raises(export.ExportError, match=f"Checkpoint .*{names[-1]} cannot be read"):
        export.select_checkpoint(str(copy), names[-1])
    assert export.select_checkpoint(str(copy), "latest").name == names[-2]


NO_CORPUS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from gradual_rnn import export_run
    from gradual_rnn.serve import generate, inference, report
    save_path, export_dir, text, out = sys.argv[1:]
    export_run(save_path, export_dir)
    exported = inference.load(export_dir)
    scores = exported.score_sentences(generate.split_sentences(open(text).read()), carry_state=True)
    written = report.write_report([save_path], out)
    print(json.dumps(dict(perplexity=scores.total_perplexity, table=written["table"])))
""")


def test_export_score_and_report_need_no_corpus(run, tmp_path):
    """The run folder holds its vocabulary: in a process with no PTB anywhere (no PTB_DATA_DIR, an
    empty cache, downloads impossible), a run is exported, the export scores text, and the report
    reads the run."""
    environment = {key: value for key, value in os.environ.items() if key != "PTB_DATA_DIR"}
    environment.update(GRADUAL_RNN_CACHE=str(tmp_path / "empty_cache"), TF_CPP_MIN_LOG_LEVEL="2")
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 w3\nw4 w5\n")
    done = subprocess.run([sys.executable, "-c", NO_CORPUS_SCRIPT, run.save_path, str(tmp_path / "e"), str(text),
                           str(tmp_path / "report")], capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = inference.load(str(tmp_path / "e")).score_sentences(
        generate.split_sentences(text.read_text()), carry_state=True).total_perplexity
    assert result["perplexity"] == pytest.approx(expected, rel=1e-9)
    assert "| run | tiny | measured | all | 2 | 2 |" in open(result["table"]).read()
    assert not os.path.exists(tmp_path / "empty_cache")
