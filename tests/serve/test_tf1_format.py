"""The TF1 format (gradual_rnn.serve.tf1_format) on the original programs' checkpoints: the gate
mapping, writing back bit for bit under either program's names, broken checkpoints and paths."""
import os

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.serve import tf1_format
from serve.tf1_fixtures import (all_variables, imported, model_variables, raw_tensors, save_raw,
                                written_variables)


def test_one_lstm_step_equals_numpy_basic_lstm_cell_on_the_raw_tf1_kernel():
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
def test_write_back_has_the_programs_names_layout_and_values(folder, prefix, tmp_path):
    result = imported(folder, prefix)
    model_only = tf1_format.write_tf1_checkpoint(result.model, str(tmp_path / "model_only" / "model"),
                                                 auxiliary=False)
    assert written_variables(model_only) == model_variables(folder, prefix)
    original = raw_tensors(folder, prefix)
    written = tf.train.load_checkpoint(model_only)
    for name in model_variables(folder, prefix):
        assert np.array_equal(written.get_tensor(name), original[name]), name
    again = tf1_format.read_tf1_checkpoint(str(tmp_path / "model_only"))
    model = type(result.model)(**result.model.get_config())
    tf1_format.assign_tf1_weights(model, again)
    for mine, theirs in zip(result.model.weights, model.weights, strict=True):
        assert np.array_equal(mine.numpy(), theirs.numpy())
    config = configs.override(result.config, {"batch_size": "8"})
    full = tf1_format.write_tf1_checkpoint(result.model, str(tmp_path / "full" / "model-1"), config)
    assert written_variables(full) == all_variables(folder, prefix)
    assert tf.train.latest_checkpoint(str(tmp_path / "full")) == full


def test_a_saver_built_like_the_programs_restores_the_written_checkpoint(tmp_path):
    """The program's main() graph: every variable of the fixture, restored by tf.compat.v1's Saver."""
    result = imported("gl_2x16", "model-2")
    prefix = tf1_format.write_tf1_checkpoint(result.model, str(tmp_path / "model-2"),
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


def test_block_mode_names_write_and_read_with_the_same_gate_order(tmp_path):
    result = imported("tutorial_2x16", "model-199")
    prefix = tf1_format.write_tf1_checkpoint(result.model, str(tmp_path / "block"), cell="block", auxiliary=False)
    names = written_variables(prefix)
    assert "Model/RNN/multi_rnn_cell/cell_0/lstm_cell/kernel" in names
    original = raw_tensors("tutorial_2x16", "model-199")
    block = tf.train.load_checkpoint(prefix)
    assert np.array_equal(block.get_tensor("Model/RNN/multi_rnn_cell/cell_1/lstm_cell/kernel"),
                          original["Model/RNN/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"])
    again = tf1_format.read_tf1_checkpoint(prefix)
    assert again.layout.key == "tutorial_block"
    model = type(result.model)(**result.model.get_config())
    tf1_format.assign_tf1_weights(model, again)
    for mine, theirs in zip(result.model.weights, model.weights, strict=True):
        assert np.array_equal(mine.numpy(), theirs.numpy())


def test_writing_a_model_under_the_other_programs_names_is_refused(tmp_path):
    with pytest.raises(tf1_format.Tf1CheckpointError, match="tied_weights=True and embedding_bias=True has no "
                                                             "TensorFlow tutorial"):
        tf1_format.write_tf1_checkpoint(imported("gl_2x16", "model-1").model, str(tmp_path / "x"),
                                        program="tutorial", auxiliary=False)


def test_an_existing_checkpoint_is_not_overwritten(tmp_path):
    prefix = tf1_format.write_tf1_checkpoint(imported("gl_2x16", "model-1").model, str(tmp_path / "model"),
                                             auxiliary=False)
    with pytest.raises(tf1_format.Tf1CheckpointError, match=r"model.index exists already; choose another"):
        tf1_format.write_tf1_checkpoint(imported("gl_2x16", "model-1").model, prefix, auxiliary=False)


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
    with pytest.raises(tf1_format.Tf1CheckpointError) as raised:
        tf1_format.read_tf1_checkpoint(prefix)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_paths_that_are_no_checkpoint_are_refused(tmp_path):
    with pytest.raises(tf1_format.Tf1CheckpointError, match=r"nothing is no checkpoint: there is no .*nothing.index"):
        tf1_format.read_tf1_checkpoint(str(tmp_path / "nothing"))
    with pytest.raises(tf1_format.Tf1CheckpointError, match="is no checkpoint folder: no 'checkpoint' file names "
                                                             "an existing prefix and it holds 0 .index files"):
        tf1_format.read_tf1_checkpoint(str(tmp_path))
    (tmp_path / "junk.index").write_text("not a table")
    with pytest.raises(tf1_format.Tf1CheckpointError, match="junk is no readable checkpoint: "):
        tf1_format.read_tf1_checkpoint(str(tmp_path / "junk"))
    object_based = tf.train.Checkpoint(weights=tf.Variable([1.0])).write(str(tmp_path / "objects" / "ckpt"))
    with pytest.raises(tf1_format.Tf1CheckpointError, match="object-based TF2 checkpoint"):
        tf1_format.read_tf1_checkpoint(object_based)


def test_a_checkpoint_is_named_by_its_prefix_any_of_its_files_or_its_folder():
    folder = imported("gl_2x16", "model-1").checkpoint.prefix.rsplit("/", 1)[0]
    for path in (f"{folder}/model-1", f"{folder}/model-1.index", f"{folder}/model-1.data-00000-of-00001"):
        assert tf1_format.resolve_prefix(path) == f"{folder}/model-1"
    assert tf1_format.resolve_prefix(folder) == f"{folder}/model-2"  # the `checkpoint` file's newest


def test_a_truncated_data_file_is_one_error_naming_the_checkpoint(tmp_path):
    """A checkpoint whose data file was cut short (e.g. an interrupted copy): TensorFlow's reader
    fails with an IndexError ("Read less bytes than requested"); the tool names the checkpoint."""
    import shutil

    from serve.tf1_fixtures import FIXTURES

    source = os.path.join(FIXTURES, "tutorial_2x16")
    for name in os.listdir(source):
        shutil.copy(os.path.join(source, name), tmp_path / name)
    data = tmp_path / "model-199.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(tf1_format.Tf1CheckpointError, match=r"model-199: the tensors cannot be read .*damaged or "
                                                            r"incomplete"):
        tf1_format.read_tf1_checkpoint(str(tmp_path / "model-199"))
