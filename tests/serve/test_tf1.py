"""TF1 checkpoints of the original programs (tests/fixtures/tf1_checkpoints): import, the programs'
own perplexities and window costs, write-back, broken checkpoints, export, a run started from one."""
import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import environment_without_tensorflow
from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.serve import tf1
from gradual_rnn.serve import tf1_command

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                        "tf1_checkpoints")
FOLDERS = ("tutorial_2x16", "gl_2x16")
RELATIVE = 1e-5
# Roles (fixture.json's variable_roles) of the variables that are not part of the model.
NON_MODEL_ROLES = ("learning rate", "global step", "global_step", "VariationalDropoutWrapper")


def fixture_file(folder, name):
    with open(os.path.join(FIXTURES, folder, name), encoding="utf-8") as handle:
        return json.load(handle)


def checkpoint_cases():
    return [(folder, entry["prefix"]) for folder in FOLDERS
            for entry in fixture_file(folder, "fixture.json")["checkpoints"]]


def checkpoint_entry(folder, prefix):
    return next(entry for entry in fixture_file(folder, "fixture.json")["checkpoints"] if entry["prefix"] == prefix)


def model_variables(folder, prefix):
    """{name: (shape, dtype)} of the fixture's variables whose role is a model variable."""
    roles = fixture_file(folder, "fixture.json")["variable_roles"]
    return {variable["name"]: (variable["shape"], variable["dtype"])
            for variable in checkpoint_entry(folder, prefix)["variables"]
            if not any(word in roles[variable["name"]] for word in NON_MODEL_ROLES)}


def all_variables(folder, prefix):
    return {variable["name"]: (variable["shape"], variable["dtype"])
            for variable in checkpoint_entry(folder, prefix)["variables"]}


def written_variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    return {name: (list(shape), dtypes[name].name) for name, shape in reader.get_variable_to_shape_map().items()}


def settings_of(folder, prefix):
    """The evaluation settings the fixture's numbers were computed with."""
    data, expected = fixture_file(folder, "fixture.json")["data"], checkpoint_entry(folder, prefix)["expected"]
    valid = next(value for key, value in expected.items() if key.startswith("valid"))
    test = next(value for key, value in expected.items() if key.startswith("test"))
    return tf1.EvalSettings(valid["batch_size"], valid["num_steps"], test["batch_size"], test["num_steps"],
                            data["valid_prefix"]["count"], data["test_prefix"]["count"])


def expected_perplexities(folder, prefix, num_layers):
    """{depth: {split: perplexity}}; the tutorial's keys have no depth: its one head is the top."""
    result = {}
    for key, value in checkpoint_entry(folder, prefix)["expected"].items():
        split, _, depth = key.partition("/depth")
        result.setdefault(int(depth) if depth else num_layers, {})[split] = value["perplexity"]
    return result


def cost_key(folder, split, depth):
    return split if folder.startswith("tutorial") else f"{split}/depth{depth}"


@pytest.fixture(scope="module")
def corpus(ptb_dir):
    return ptb.load_corpus(ptb_dir)


@pytest.fixture(scope="module")
def imported():
    cache = {}

    def load(folder, prefix):
        if (folder, prefix) not in cache:
            cache[folder, prefix] = tf1.import_checkpoint(os.path.join(FIXTURES, folder, prefix))
        return cache[folder, prefix]

    return load


def raw_tensors(folder, prefix):
    reader = tf.train.load_checkpoint(os.path.join(FIXTURES, folder, prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def save_raw(tensors, prefix):
    """Writes `tensors` with the SaveV2 op, as a TF1 Saver does."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    return prefix


# ----- the programs' own numbers -----
@pytest.mark.parametrize("folder,prefix", checkpoint_cases())
def test_imported_checkpoint_reproduces_the_programs_perplexities_and_window_costs(folder, prefix, corpus,
                                                                                   imported):
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
            assert score.window_costs.shape == reference.shape
            np.testing.assert_allclose(score.window_costs, reference, rtol=RELATIVE)


def test_import_infers_program_sizes_and_config_and_reports_what_it_skipped(imported):
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


def test_one_lstm_step_equals_numpy_basic_lstm_cell_on_the_raw_tf1_kernel(imported):
    """The gate mapping on its own: TF1's [x; h] -> (i, j, f, o) kernel, stepped in NumPy."""
    result = imported("tutorial_2x16", "model-199")
    kernel = result.checkpoint.tensors["Model/RNN/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"]
    bias = result.checkpoint.tensors["Model/RNN/multi_rnn_cell/cell_1/basic_lstm_cell/bias"]
    rng = np.random.RandomState(0)
    inputs, cell, hidden = (rng.uniform(-1, 1, [3, 16]).astype(np.float32) for _ in range(3))
    gates = np.concatenate([inputs, hidden], axis=1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=1)

    def sigmoid(value):
        return 1 / (1 + np.exp(-value))

    new_cell = cell * sigmoid(f) + sigmoid(i) * np.tanh(j)
    outputs, (cell_out, hidden_out) = result.model.lstm_layers[1](inputs[:, None, :], (cell, hidden))
    np.testing.assert_allclose(cell_out, new_cell, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hidden_out, np.tanh(new_cell) * sigmoid(o), rtol=1e-5, atol=1e-6)


# ----- writing back -----
@pytest.mark.parametrize("folder,prefix", [("tutorial_2x16", "model-199"), ("gl_2x16", "model-2")])
def test_write_back_has_the_programs_names_layout_and_values(folder, prefix, imported, tmp_path):
    result = imported(folder, prefix)
    model_only = tf1.write_tf1_checkpoint(result.model, str(tmp_path / "model_only" / "model"), auxiliary=False)
    assert written_variables(model_only) == model_variables(folder, prefix)
    original = raw_tensors(folder, prefix)
    written = tf.train.load_checkpoint(model_only)
    for name in model_variables(folder, prefix):
        assert np.array_equal(written.get_tensor(name), original[name]), name
    again = tf1.import_checkpoint(str(tmp_path / "model_only"))
    for mine, theirs in zip(result.model.weights, again.model.weights, strict=True):
        assert np.array_equal(mine.numpy(), theirs.numpy())
    config = configs.override(result.config, {"batch_size": "8"})
    full = tf1.write_tf1_checkpoint(result.model, str(tmp_path / "full" / "model-1"), config)
    assert written_variables(full) == all_variables(folder, prefix)
    assert tf.train.latest_checkpoint(str(tmp_path / "full")) == full


def test_a_saver_built_like_the_programs_restores_the_written_checkpoint(imported, tmp_path):
    """The program's main() graph: every variable of the fixture, restored by tf.compat.v1's Saver."""
    result = imported("gl_2x16", "model-2")
    prefix = tf1.write_tf1_checkpoint(result.model, str(tmp_path / "model-2"),
                                      configs.override(result.config, {"batch_size": "8"}))
    original = raw_tensors("gl_2x16", "model-2")
    with tf.Graph().as_default():
        variables = {name: tf.compat.v1.get_variable(name, shape, getattr(tf, dtype),
                                                     initializer=tf.compat.v1.zeros_initializer())
                     for name, (shape, dtype) in all_variables("gl_2x16", "model-2").items()}
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver().restore(session, prefix)
            values = session.run(variables)
    for name in model_variables("gl_2x16", "model-2"):
        assert np.array_equal(values[name], original[name]), name


def test_block_mode_names_write_and_import_with_the_same_gate_order(imported, tmp_path):
    result = imported("tutorial_2x16", "model-199")
    prefix = tf1.write_tf1_checkpoint(result.model, str(tmp_path / "block"), cell="block", auxiliary=False)
    names = written_variables(prefix)
    assert "Model/RNN/multi_rnn_cell/cell_0/lstm_cell/kernel" in names
    original = raw_tensors("tutorial_2x16", "model-199")
    block = tf.train.load_checkpoint(prefix)
    assert np.array_equal(block.get_tensor("Model/RNN/multi_rnn_cell/cell_1/lstm_cell/kernel"),
                          original["Model/RNN/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"])
    again = tf1.import_checkpoint(prefix)
    assert again.checkpoint.layout.key == "tutorial_block"
    for mine, theirs in zip(result.model.weights, again.model.weights, strict=True):
        assert np.array_equal(mine.numpy(), theirs.numpy())


def test_writing_a_model_under_the_other_programs_names_is_refused(imported, tmp_path):
    with pytest.raises(tf1.Tf1CheckpointError, match="tied_weights=True and embedding_bias=True has no "
                                                      "TensorFlow tutorial"):
        tf1.write_tf1_checkpoint(imported("gl_2x16", "model-1").model, str(tmp_path / "x"), program="tutorial",
                                 auxiliary=False)


# ----- broken checkpoints -----
def _drop(name):
    return lambda tensors: {key: value for key, value in tensors.items() if key != name}


def _change(name, value):
    return lambda tensors: dict(tensors, **{name: value})


GL_BIAS_2 = "Model/lstm_layer_2/basic_lstm_cell/bias"
EDITED = {"tutorial_2x16": "model-199", "gl_2x16": "model-1"}  # the checkpoint each broken case edits
BROKEN = {
    "another shape": ("gl_2x16", _change("Model/b_embed_out", np.zeros([9999], np.float32)),
                      "Tensor 'Model/b_embed_out' has shape [9999]; expected [10000] for 2 layers × 16 units"),
    "another dtype": ("gl_2x16", _change(GL_BIAS_2, np.zeros([64], np.float64)),
                      f"Tensor '{GL_BIAS_2}' has dtype float64; expected float32."),
    "missing": ("gl_2x16", _drop(GL_BIAS_2), f"Missing tensor '{GL_BIAS_2}': a 2-layer checkpoint of the "
                                             "Gradual Learning code needs it."),
    "mixed": ("tutorial_2x16", _change("Model/b_embed_out", np.zeros([10000], np.float32)),
              "Mixed naming schemes: tensor 'Model/RNN/multi_rnn_cell/cell_0/basic_lstm_cell/bias' is named as by "
              "the TensorFlow tutorial, rnn_mode BASIC (BasicLSTMCell) but tensor 'Model/b_embed_out' as by the "
              "Gradual Learning code."),
    "unknown": ("tutorial_2x16", lambda tensors: {"encoder/weights": np.zeros([2], np.float32)},
                "Unknown naming scheme: no tensor is named as by the tutorial or the GL code (the checkpoint "
                "holds 'encoder/weights')."),
    "unrecognised": ("tutorial_2x16", _change("Model/RNN/projection", np.zeros([2], np.float32)),
                     "Unrecognised tensor 'Model/RNN/projection' in a checkpoint of the TensorFlow tutorial"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_checkpoint_is_refused_naming_the_tensor(case, tmp_path):
    folder, edit, message = BROKEN[case]
    prefix = save_raw(edit(raw_tensors(folder, EDITED[folder])), str(tmp_path / "broken"))
    with pytest.raises(tf1.Tf1CheckpointError) as raised:
        tf1.read_tf1_checkpoint(prefix)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_paths_that_are_no_checkpoint_are_refused(tmp_path):
    with pytest.raises(tf1.Tf1CheckpointError, match=r"nothing is no checkpoint: there is no .*nothing.index"):
        tf1.read_tf1_checkpoint(str(tmp_path / "nothing"))
    with pytest.raises(tf1.Tf1CheckpointError, match="is no checkpoint folder: no 'checkpoint' file names an "
                                                      "existing prefix and it holds 0 .index files"):
        tf1.read_tf1_checkpoint(str(tmp_path))
    (tmp_path / "junk.index").write_text("not a table")
    with pytest.raises(tf1.Tf1CheckpointError, match="junk is no readable checkpoint: "):
        tf1.read_tf1_checkpoint(str(tmp_path / "junk"))
    object_based = tf.train.Checkpoint(weights=tf.Variable([1.0])).write(str(tmp_path / "objects" / "ckpt"))
    with pytest.raises(tf1.Tf1CheckpointError, match="object-based TF2 checkpoint"):
        tf1.read_tf1_checkpoint(object_based)


# ----- the command line, in this process (one subprocess test below) -----
def run_command(*arguments):
    tf1_command.main(tf1_command.parse_command_line(["gradual_rnn.tf1", *arguments]))


def evaluate_arguments(folder, prefix, ptb_dir):
    settings = settings_of(folder, prefix)
    return ["evaluate", f"--checkpoint={os.path.join(FIXTURES, folder, prefix)}", f"--data_path={ptb_dir}",
            f"--batch_size={settings.batch_size}", f"--num_steps={settings.num_steps}",
            f"--test_batch_size={settings.test_batch_size}", f"--test_num_steps={settings.test_num_steps}",
            f"--valid_tokens={settings.valid_tokens}", f"--test_tokens={settings.test_tokens}"]


def check_printed(output, folder, prefix):
    printed = json.loads(output.strip().splitlines()[-1])
    assert printed["program"] == folder.split("_")[0]
    expected = expected_perplexities(folder, prefix, 2)
    assert sorted(printed["depths"]) == sorted(str(depth) for depth in expected)
    for depth, splits in expected.items():
        assert sorted(printed["depths"][str(depth)]) == ["test", "valid"]
        for split, value in splits.items():
            assert printed["depths"][str(depth)][split] == pytest.approx(value, rel=RELATIVE)


@pytest.mark.parametrize("folder,prefix", checkpoint_cases())
def test_evaluate_command_prints_the_programs_numbers(folder, prefix, ptb_dir, capsys):
    run_command(*evaluate_arguments(folder, prefix, ptb_dir))
    check_printed(capsys.readouterr().out, folder, prefix)


def test_bad_command_lines_exit_with_one_line(ptb_dir, tmp_path):
    cases = [(["evaluate", f"--checkpoint={tmp_path / 'none'}", f"--data_path={ptb_dir}", "--batch_size=1",
               "--num_steps=1", "--test_batch_size=1", "--test_num_steps=1"], "Tf1CheckpointError: "),
             (["evaluate", "--checkpoint=x"], "UsageError: evaluate needs --data_path, --batch_size, --num_steps, "
                                              "--test_batch_size, --test_num_steps."),
             (["rename"], "UsageError: Expected one command of evaluate, export, start, write; got ['rename']."),
             (["evaluate", "--valid_tokens=many"], "UsageError: "),
             (evaluate_arguments("gl_2x16", "model-1", ptb_dir) + ["--valid_tokens=99999999"],
              "DataError: --valid_tokens=99999999 is outside 1..73760")]
    for arguments, message in cases:
        with pytest.raises(SystemExit) as raised:
            run_command(*arguments)
        assert str(raised.value.code).startswith(message) and "\n" not in str(raised.value.code)


def test_a_bad_command_line_is_refused_before_tensorflow_loads(tmp_path):
    """Unknown command, missing flags, a bad window size, a checkpoint path that names nothing: one
    line each, from a process that never imports TensorFlow."""
    cases = [(["rename"], "UsageError: Expected one command of evaluate, export, start, write; got ['rename']."),
             (["export", "--checkpoint=x"], "UsageError: export needs --data_path, --export_dir."),
             (["evaluate", "--checkpoint=x", "--data_path=d", "--batch_size=0", "--num_steps=1",
               "--test_batch_size=1", "--test_num_steps=1"], "UsageError: --batch_size must be at least 1, got 0."),
             (["start", f"--checkpoint={tmp_path / 'none'}", "--save_path=run"],
              f"Tf1CheckpointError: {tmp_path / 'none'} is no checkpoint: there is no {tmp_path / 'none'}.index")]
    for arguments, message in cases:
        done = subprocess.run([sys.executable, "-m", "gradual_rnn.tf1", *arguments], capture_output=True, text=True,
                              timeout=120, env=environment_without_tensorflow(tmp_path))
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(message)


@pytest.mark.slow
def test_evaluate_command_in_a_fresh_process_on_a_folder(ptb_dir, tmp_path):
    """The real `python -m gradual_rnn.tf1` (a folder resolves to its newest checkpoint), and a bad
    path: one line on stderr, no traceback. Both programs' checkpoints are evaluated in-process by
    test_evaluate_command_prints_the_programs_numbers."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    commands = {(folder, prefix): evaluate_arguments(folder, prefix, ptb_dir)
                for folder, prefix in (("gl_2x16", "model-2"),)}
    for arguments in commands.values():
        arguments[1] = "--checkpoint=" + os.path.dirname(arguments[1].split("=", 1)[1])
    commands["bad", None] = ["evaluate", f"--checkpoint={tmp_path}", *commands["gl_2x16", "model-2"][2:]]
    processes = {key: subprocess.Popen([sys.executable, "-m", "gradual_rnn.tf1", *arguments], text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
                 for key, arguments in commands.items()}
    results = {key: (process.communicate(timeout=300), process.returncode) for key, process in processes.items()}
    for (folder, prefix), ((stdout, stderr), code) in results.items():
        if folder == "bad":
            assert code != 0 and "Traceback" not in stderr
            assert stderr.strip().splitlines()[-1].startswith("Tf1CheckpointError: ")
            assert "is no checkpoint folder" in stderr.strip().splitlines()[-1]
        else:
            assert code == 0, stderr
            check_printed(stdout, folder, prefix)


# ----- export, and a run started from an imported checkpoint -----
@pytest.mark.slow
def test_export_of_an_imported_head_scores_like_the_imported_model(imported, ptb_dir, tmp_path, capsys):
    result = imported("gl_2x16", "model-2")
    export_dir = str(tmp_path / "export")
    run_command("export", f"--checkpoint={os.path.join(FIXTURES, 'gl_2x16', 'model-2')}", f"--data_path={ptb_dir}",
                f"--export_dir={export_dir}", "--depth=1")
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["depth"] == 1
    with open(os.path.join(export_dir, "export.json"), encoding="utf-8") as handle:
        metadata = json.load(handle)
    assert (metadata["depth"], metadata["checkpoint_depth"], metadata["source"]["program"]) == (1, 2, "gl")
    assert sorted(os.listdir(export_dir)) == ["export.json", "model.keras", "saved_model", "vocab.txt"]
    ids = np.array([[1132, 93, 358, 5, 329]], np.int32)
    expected, _ = result.model(ids, result.model.initial_state(1, 1), depth=1)
    loaded = keras.saving.load_model(os.path.join(export_dir, "model.keras"))
    logits, _ = loaded(ids, loaded.initial_state(1))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    saved = tf.saved_model.load(os.path.join(export_dir, "saved_model"))
    log_probs = saved.step(tf.constant(ids), saved.initial_state(tf.constant(1))["state"])["log_probs"]
    np.testing.assert_allclose(log_probs, tf.nn.log_softmax(expected), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_gl_phase_one_checkpoint_continues_as_phase_two_and_trains(corpus, ptb_dir, tmp_path, capsys):
    from gradual_rnn.train.loop import RunOptions, train

    save_path = str(tmp_path / "continued")
    sets = {"batch_size": "8", "num_steps": "10", "test_num_steps": "10", "layer_epochs": "1", "max_epochs": "1"}
    run_command("start", f"--checkpoint={os.path.join(FIXTURES, 'gl_2x16', 'model-1')}",
                f"--save_path={save_path}", "--model=gl", "--phase=2", *[f"--set={k}={v}" for k, v in sets.items()])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
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
    run_command("write", f"--save_path={save_path}", "--run_checkpoint=latest", f"--output={output}")
    assert written_variables(output) == all_variables("gl_2x16", "model-2")
    trained = tf1.import_checkpoint(output)
    assert not np.array_equal(trained.checkpoint.tensors[GL_BIAS_2], seeded.checkpoint.tensors[GL_BIAS_2])
