"""Faults: corrupted checkpoints, a full disk, two runs on one save path, determinism."""
import dataclasses
import errno
import json
import os

import numpy as np
import pytest

from gradual_rnn import checkpoints, data, trainer
from test_training import _final_weights, _run, tiny_config


@pytest.fixture
def tiny_corpus(tiny_corpus_dir):
    return data.load_corpus(tiny_corpus_dir)


def _store(tmp_path, config):
    return checkpoints.CheckpointStore(str(tmp_path / "run"), config)


def _arrays(value):
    return {"model/w": np.full((2, 3), value, np.float32)}


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    config = tiny_config()
    store = _store(tmp_path, config)
    store.save(checkpoints.Progress(window=1), _arrays(1.0))
    newest = store.save(checkpoints.Progress(window=2), _arrays(2.0))
    with open(os.path.join(newest, "arrays.npz"), "r+b") as handle:
        handle.truncate(20)
    progress, arrays = store.restore()
    assert progress.window == 1 and arrays["model/w"][0, 0] == 1.0
    assert "ckpt-000001 cannot be read" in caplog.text and "falling back" in caplog.text


def test_missing_progress_file_falls_back(tmp_path):
    store = _store(tmp_path, tiny_config())
    store.save(checkpoints.Progress(window=1), _arrays(1.0))
    newest = store.save(checkpoints.Progress(window=2), _arrays(2.0))
    os.remove(os.path.join(newest, "progress.json"))
    assert store.restore()[0].window == 1


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    store = _store(tmp_path, tiny_config())
    store.save(checkpoints.Progress(window=1), _arrays(1.0))

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"ckpt-000001 .* failed \(\[Errno 28\] No space left on device\); the previous "
                             r"checkpoint ckpt-000000 is intact"):
        store.save(checkpoints.Progress(window=2), _arrays(2.0))
    monkeypatch.undo()
    assert sorted(os.listdir(store.directory)) == ["ckpt-000000", "latest"]
    progress, arrays = store.restore()
    assert progress.window == 1 and arrays["model/w"][0, 0] == 1.0


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    store = _store(tmp_path, tiny_config())
    for window in range(5):
        store.save(checkpoints.Progress(window=window), _arrays(window))
    assert sorted(os.listdir(store.directory)) == ["ckpt-000002", "ckpt-000003", "ckpt-000004", "latest"]


def test_second_run_on_same_save_path_is_refused(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1)
    save_path = str(tmp_path / "run")
    checkpoints.CheckpointStore(save_path, config)
    with checkpoints.RunLock(save_path):
        with pytest.raises(checkpoints.CheckpointError, match=r"is in use by pid \d+ on .*; two runs cannot"):
            trainer.train(config, trainer.RunOptions("", save_path), tiny_corpus)
    # Released: the run now goes through.
    assert trainer.train(config, trainer.RunOptions("", save_path), tiny_corpus)["test_perplexity"] > 1


def test_deterministic_option_gives_bit_identical_weights(tmp_path, tiny_corpus):
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=1, dropout_style="variational",
                         keep_prob_embed=0.8, keep_output=((0.7,), (0.7, 0.7)),
                         keep_state=((0.8,), (0.8, 0.8)))
    first = _run(tmp_path, tiny_corpus, config, "first", deterministic=True)
    second = _run(tmp_path, tiny_corpus, config, "second", deterministic=True)
    assert first["test_perplexity"] == second["test_perplexity"]
    a, b = _final_weights(tmp_path, "first"), _final_weights(tmp_path, "second")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    other = _run(tmp_path, tiny_corpus, dataclasses.replace(config, seed=8), "other", deterministic=True)
    assert other["test_perplexity"] != first["test_perplexity"]


def test_best_validation_checkpoint_is_pinned(tmp_path, tiny_corpus, monkeypatch):
    """Validation 300, 200, 250, 260: checkpoints/best holds epoch 2's weights after pruning."""
    values = iter([300.0, 200.0, 250.0, 260.0])
    monkeypatch.setattr(trainer._Runner, "_perplexity", lambda self, *args, **kwargs: next(values))
    monkeypatch.setattr(trainer._Runner, "_test", lambda self: (1.0, 1.0))
    config = tiny_config(vocab_size=tiny_corpus.vocab_size, max_epochs=4, learning_rate_schedule="plateau")
    _run(tmp_path, tiny_corpus, config, "run")
    folder = tmp_path / "run" / "checkpoints" / checkpoints.BEST
    progress = json.loads((folder / "progress.json").read_text())["progress"]
    assert (progress["epoch"], progress["rows"][-1]["valid_perplexity"]) == (2, 200.0)
    assert "ckpt-000002" not in os.listdir(tmp_path / "run" / "checkpoints")


def test_restore_accepts_only_matching_checkpoints(tmp_path):
    store = _store(tmp_path, tiny_config())
    for epochs in range(3):
        store.save(checkpoints.Progress(rows=[{}] * epochs), _arrays(float(epochs)))
    progress, arrays = store.restore(lambda progress: len(progress.rows) == 1)
    assert len(progress.rows) == 1 and arrays["model/w"][0, 0] == 1.0
    assert store.restore(lambda progress: len(progress.rows) == 7) is None
