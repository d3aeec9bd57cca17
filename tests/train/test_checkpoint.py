"""Faults: corrupted, partial and unreadable checkpoints, a full disk, two runs on one save path,
determinism."""
import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn.train import checkpoint as checkpoints
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train import loop as trainer
from gradual_rnn.train import run_folder
from gradual_rnn.train.context import Interrupted, RunOptions
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress
from gradual_rnn.train.run_folder import RunFolder, RunFolderError
from train.tiny import final_weights as _final_weights
from train.tiny import run_tiny as _run
from train.tiny import tiny_config


def _store(tmp_path, config, **options):
    return checkpoints.CheckpointStore(RunFolder(str(tmp_path / "run")), config, **options)


def _model(config, value):
    """A model of `config` whose every weight is `value`."""
    model = build_model(config)
    for weight in model.weights:
        weight.assign(tf.fill(weight.shape, float(value)))
    return model


def _embedding(prefix):
    return checkpoints.read_tensors(prefix)["model/embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE"][0, 0]


def test_corrupted_latest_checkpoint_falls_back_to_previous_and_is_kept(tmp_path, caplog):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(Progress(window=1), _model(config, 1.0))
    newest = store.save(Progress(window=2), _model(config, 2.0))
    with open(newest + ".data-00000-of-00001", "r+b") as handle:
        handle.truncate(20)
    restored = store.restore()
    assert restored.progress.window == 1 and _embedding(restored.prefix) == 1.0
    assert "ckpt-1 is not usable (" in caplog.text and "the one before is used" in caplog.text
    kept = os.listdir(os.path.join(store.folder.checkpoints, run_folder.UNREADABLE))
    assert sorted(kept) == ["ckpt-1.data-00000-of-00001", "ckpt-1.index", "ckpt-1.progress.json"]


def test_checkpoint_without_sidecar_is_set_aside_not_deleted(tmp_path, caplog):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(Progress(window=1), _model(config, 1.0))
    newest = store.save(Progress(window=2), _model(config, 2.0))
    os.remove(newest + run_folder.SIDECAR)
    assert store.restore().progress.window == 1
    assert "ckpt-1" in caplog.text and "no progress sidecar" in caplog.text
    kept = sorted(os.listdir(os.path.join(store.folder.checkpoints, run_folder.UNREADABLE)))
    assert kept == ["ckpt-1.data-00000-of-00001", "ckpt-1.index"]


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(Progress(window=1), _model(config, 1.0))
    real_write = tf.train.Checkpoint._write  # what tf.train.CheckpointManager.save calls

    def no_space(self, file_prefix, *args, **kwargs):
        real_write(self, file_prefix, *args, **kwargs)  # the tensors land, then the disk is full
        raise tf.errors.ResourceExhaustedError(None, None, f"{file_prefix}: No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "_write", no_space)
    with pytest.raises(RunFolderError,
                       match=r"Writing checkpoint ckpt-1 in .* failed \(.*No space left on device\); the "
                             r"previous checkpoint ckpt-0 is intact"):
        store.save(Progress(window=2), _model(config, 2.0))
    monkeypatch.undo()
    assert sorted(name for name in os.listdir(store.folder.checkpoints) if name.startswith("ckpt-1")) == []
    restored = store.restore()
    assert restored.progress.window == 1 and _embedding(restored.prefix) == 1.0


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    config = tiny_config()
    store = _store(tmp_path, config)
    for window in range(5):
        store.save(Progress(window=window), _model(config, window))
    assert [os.path.basename(prefix) for prefix in store.folder.complete()] == ["ckpt-2", "ckpt-3", "ckpt-4"]
    assert sorted(name for name in os.listdir(store.folder.checkpoints) if name.endswith(".json")) == [
        "ckpt-2.progress.json", "ckpt-3.progress.json", "ckpt-4.progress.json"]


def test_checkpoint_is_readable_by_tensorflow_tools(tmp_path):
    """Plain tf.train.list_variables / load_checkpoint read a run's checkpoint: model, optimizer,
    carried state and masks under stable names."""
    config = tiny_config(dropout_style="variational", keep_output=((0.7,), (0.7, 0.7)))
    model = _model(config, 0.5)
    optimizer = keras_sgd(model)
    state = model.initial_state(4)
    masks = [(tf.ones([4, 8]), None), (tf.ones([4, 8]), None)]
    prefix = _store(tmp_path, config).save(Progress(window=3, model_depth=2), model, optimizer,
                                           state, masks)
    names = dict(tf.train.list_variables(prefix))
    assert names["model/lstm_2/recurrent_kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [8, 32]
    assert names["model/head/softmax_w/.ATTRIBUTES/VARIABLE_VALUE"] == [8, 41]
    assert names["carried/layer_2_h/.ATTRIBUTES/VARIABLE_VALUE"] == [4, 8]
    assert names["carried/layer_1_output_mask/.ATTRIBUTES/VARIABLE_VALUE"] == [4, 8]
    assert "carried/layer_1_state_mask/.ATTRIBUTES/VARIABLE_VALUE" not in names
    assert any(name.startswith("optimizer/") for name in names)
    reader = tf.train.load_checkpoint(prefix)
    np.testing.assert_array_equal(reader.get_tensor("model/embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE"),
                                  np.full((41, 8), 0.5, np.float32))


def keras_sgd(model):
    import keras
    optimizer = keras.optimizers.SGD(learning_rate=1.0, momentum=0.5)
    optimizer.build(model.trainable_variables)
    return optimizer


def test_no_readable_checkpoint_stops_and_deletes_nothing(tmp_path):
    config = tiny_config()
    store = _store(tmp_path, config)
    for window in range(2):
        prefix = store.save(Progress(window=window), _model(config, window))
        with open(prefix + ".data-00000-of-00001", "r+b") as handle:
            handle.truncate(10)
    with pytest.raises(RunFolderError,
                       match=r"No checkpoint of .* can be used \(ckpt-1 \(.*\), ckpt-0 \(.*\); moved to "
                             r".*unreadable, nothing deleted\)\. Restore them, or pass --restart_from_scratch"):
        _store(tmp_path, config).restore()
    assert len(os.listdir(os.path.join(store.folder.checkpoints, run_folder.UNREADABLE))) == 6
    with pytest.raises(RunFolderError, match=r"ckpt-0 \(set aside earlier\), ckpt-1 \(set aside "
                                                          r"earlier\); moved to .*--restart_from_scratch"):
        _store(tmp_path, config).restore()  # the same command again: still no silent restart
    assert _store(tmp_path, config, restart_from_scratch=True).restore() is None
    assert len(os.listdir(os.path.join(store.folder.checkpoints, run_folder.UNREADABLE))) == 6


@pytest.mark.slow
def test_run_refuses_to_restart_when_no_checkpoint_is_readable(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1)
    with pytest.raises(Interrupted):
        _run(tmp_path, short_corpus, config, "run", checkpoint_every_windows=2, stop_after_windows=3)
    for path in os.listdir(tmp_path / "run" / "checkpoints"):
        if path.endswith(".progress.json"):
            (tmp_path / "run" / "checkpoints" / path).write_text("{broken")
    with pytest.raises(RunFolderError, match="Restore them, or pass --restart_from_scratch"):
        _run(tmp_path, short_corpus, config, "run")
    assert _run(tmp_path, short_corpus, config, "run", restart_from_scratch=True)["test_perplexity"] > 1


@pytest.mark.slow
def test_second_run_on_same_save_path_is_refused(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1)
    save_path = str(tmp_path / "run")
    checkpoints.CheckpointStore(RunFolder(save_path), config)
    with RunFolder(save_path).lock():
        with pytest.raises(RunFolderError, match=r"is in use by pid \d+ on .*; two runs cannot"):
            trainer.train(config, RunOptions("", save_path), short_corpus)
    # Released: the run now goes through.
    assert trainer.train(config, RunOptions("", save_path), short_corpus)["test_perplexity"] > 1


@pytest.mark.slow
def test_deterministic_option_gives_bit_identical_weights(tmp_path, short_corpus):
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=1, dropout_style="variational",
                         keep_prob_embed=0.8, keep_output=((0.7,), (0.7, 0.7)),
                         keep_state=((0.8,), (0.8, 0.8)))
    first = _run(tmp_path, short_corpus, config, "first", deterministic=True)
    second = _run(tmp_path, short_corpus, config, "second", deterministic=True)
    assert first["test_perplexity"] == second["test_perplexity"]
    a, b = _final_weights(tmp_path, "first"), _final_weights(tmp_path, "second")
    assert sorted(a) == sorted(b)
    for key in a:
        if key.startswith("model/"):
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.slow
def test_best_validation_checkpoint_is_pinned(tmp_path, short_corpus, monkeypatch):
    """Validation 300, 200, 250, 260: checkpoints/best holds epoch 2's weights after pruning."""
    values = iter([300.0, 200.0, 250.0, 260.0])
    monkeypatch.setattr(evaluation.Evaluator, "valid", lambda self: next(values))
    monkeypatch.setattr(evaluation.Evaluator, "test", lambda self: (1.0, 1.0))
    config = tiny_config(vocab_size=short_corpus.vocab_size, max_epochs=4, learning_rate_schedule="plateau")
    _run(tmp_path, short_corpus, config, "run")
    folder = RunFolder(str(tmp_path / "run"))
    best = folder.prefixes(best=True)
    assert len(best) == 1
    progress = json.loads(open(best[0] + run_folder.SIDECAR).read())["progress"]
    assert (progress["epoch"], progress["rows"][-1]["valid_perplexity"]) == (2, 200.0)
    assert os.path.basename(best[0]) not in [os.path.basename(p) for p in folder.prefixes()]


def test_restore_accepts_only_matching_checkpoints(tmp_path):
    config = tiny_config()
    store = _store(tmp_path, config)
    for epochs in range(3):
        store.save(Progress(rows=({},) * epochs), _model(config, float(epochs)))
    restored = store.restore(lambda progress: len(progress.rows) == 1)
    assert len(restored.progress.rows) == 1 and _embedding(restored.prefix) == 1.0
    assert store.restore(lambda progress: len(progress.rows) == 7) is None


@pytest.mark.slow
def test_a_copy_without_sidecars_stops_and_deletes_nothing(tmp_path, tiny_corpus):
    """A stopped run copied without its progress sidecars (e.g. only the ordinary TensorFlow files):
    the same command stops with one message, every checkpoint and best/ stay on disk, set aside."""
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=2)
    with pytest.raises(Interrupted):
        _run(tmp_path, tiny_corpus, config, "run", checkpoint_every_windows=40, stop_after_windows=150)
    folder = RunFolder(str(tmp_path / "run"))
    names = [os.path.basename(prefix) for prefix in folder.complete()]
    best = folder.prefixes(best=True)
    assert len(names) == 3 and len(best) == 1
    for sidecar in glob.glob(os.path.join(folder.checkpoints, "**", "*.progress.json"), recursive=True):
        os.remove(sidecar)
    with pytest.raises(RunFolderError, match=r"No checkpoint of .* can be used \(ckpt-\d+ \(no progress sidecar\), "
                                             r".*nothing deleted\)\. Restore them, or pass --restart_from_scratch"):
        _run(tmp_path, tiny_corpus, config, "run")
    assert folder.set_aside_names() == sorted(names)
    assert all(os.path.exists(prefix + ".index") for prefix in best)


def test_leftovers_of_cut_writes_are_removed_and_said(tmp_path, caplog):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(Progress(window=1), _model(config, 1.0))
    leftover = os.path.join(store.folder.checkpoints, "ckpt-1_temp")
    os.makedirs(leftover)
    open(os.path.join(leftover, "part-00000-of-00001.data-00000-of-00001"), "w").write("cut")
    open(os.path.join(store.folder.path, "results.json.tmp-123"), "w").write("{")
    assert store.restore().progress.window == 1
    assert not os.path.exists(leftover) and not os.path.exists(os.path.join(store.folder.path, "results.json.tmp-123"))
    assert "ckpt-1_temp, left by a checkpoint write that was cut short" in caplog.text
    assert store.folder.complete()  # the readable checkpoint stays


def test_a_garbled_config_is_one_line(tmp_path):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(Progress(window=1), _model(config, 1.0))
    open(store.folder.config_file, "w").write("{garbled")
    with pytest.raises(RunFolderError, match=r"config.json cannot be read as JSON \(JSONDecodeError: .*\); "
                                             r"expected the run's config"):
        _store(tmp_path, config)
    with pytest.raises(RunFolderError, match="config.json cannot be read as JSON"):
        RunFolder(str(tmp_path / "run")).read_config()
