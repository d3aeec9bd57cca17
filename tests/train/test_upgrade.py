"""A run folder written by gradual_rnn 0.1.0 (tests/fixtures/legacy_run_0_1_0, `.npz` checkpoints,
stopped 7 windows into phase 2) is refused with the upgrade command, converted by it, and then
resumes to the numbers 0.1.0 itself computed for the same run uninterrupted (to 1e-5: 0.3.0 rounds
the cross-entropy's gradient differently)."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import environment_without_tensorflow, random_corpus
from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import loop, upgrade
from gradual_rnn.train.context import RunOptions
from gradual_rnn.train.run_folder import LEGACY_KEPT, RunFolder, RunFolderError

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "legacy_run_0_1_0")
SETTINGS = {"num_layers": "2", "hidden_size": "6", "num_steps": "5", "batch_size": "20",
            "max_epochs": "2", "layer_epochs": "1", "optimizer": "nesterov", "momentum": "0.5",
            "keep_output": "0.7", "keep_state": "0.8", "keep_prob_embed": "0.9", "test_num_steps": "5"}


@pytest.fixture
def legacy(tmp_path):
    save_path = shutil.copytree(os.path.join(FIXTURE, "run"), tmp_path / "run")
    corpus = ptb.load_corpus(random_corpus(tmp_path / "corpus", 0, 40, (300, 40, 40)))
    config = configs.override(configs.get_config("gl"), dict(SETTINGS, vocab_size=str(corpus.vocab_size)))
    return str(save_path), corpus, config


def test_legacy_folder_is_refused_with_the_upgrade_command(legacy):
    save_path, corpus, config = legacy
    with pytest.raises(RunFolderError,
                       match=r"holds checkpoints in the gradual_rnn 0.1.0 format \(folders "
                             r"checkpoints/ckpt-NNNNNN with arrays.npz\); convert them once with: "
                             r"python -m gradual_rnn upgrade --save_path=.*run"):
        loop.train(config, RunOptions("", save_path), corpus)


@pytest.mark.slow
def test_upgraded_legacy_run_resumes_to_the_uninterrupted_0_1_0_numbers(legacy):
    save_path, corpus, config = legacy
    converted = upgrade.upgrade_run(save_path)
    assert [os.path.basename(folder) for folder in converted] == ["best", "ckpt-000009", "ckpt-000010",
                                                                  "ckpt-000011"]
    newest = RunFolder(save_path).prefixes()[-1]
    names = dict(tf.train.list_variables(newest))
    assert names["model/lstm_2/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [6, 24]
    assert names["carried/layer_2_state_mask/.ATTRIBUTES/VARIABLE_VALUE"] == [20, 6]
    assert RunFolder(save_path).read_progress(newest).window == 8
    assert len(os.listdir(os.path.join(save_path, "checkpoints", LEGACY_KEPT))) == 5  # kept
    resumed = loop.train(config, RunOptions("", save_path), corpus)
    with open(os.path.join(FIXTURE, "uninterrupted_results.json"), encoding="utf-8") as handle:
        expected = json.load(handle)
    # The run resumes on 0.3.0's cross-entropy, whose gradient rounds differently in the last bits
    # (docs/reference.md, "Numerics of 0.3.0"): the epoch finished by 0.1.0 is its row exactly, the
    # rest agrees to 1e-5 (these 108 windows stay far from chaos).
    for key in ("learning_rate", "train_perplexity", "valid_perplexity", "test_perplexity"):
        assert resumed["rows"][0].get(key) == expected["rows"][0].get(key), key
    for key in ("best_phase", "best_epoch"):
        assert resumed[key] == expected[key], key
    for key in ("test_perplexity", "exact_test_perplexity", "best_valid_perplexity"):
        assert resumed[key] == pytest.approx(expected[key], rel=1e-5), key
    for mine, theirs in zip(resumed["rows"], expected["rows"], strict=True):
        assert (mine["phase"], mine["epoch"], mine["learning_rate"]) == (theirs["phase"], theirs["epoch"],
                                                                         theirs["learning_rate"])
        for key in ("train_perplexity", "valid_perplexity"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key


@pytest.mark.slow
def test_upgrade_command_line(legacy, tmp_path, capsys):
    from gradual_rnn.cli import upgrade as upgrade_command

    save_path, _, _ = legacy
    with pytest.raises(SystemExit) as stopped:  # the command, in this process
        upgrade_command.run_main(["upgrade", f"--save_path={save_path}"])
    assert not stopped.value.code
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["converted"] == [
        "best", "ckpt-000009", "ckpt-000010", "ckpt-000011"]
    # Nothing left to convert, or no run folder: one line, before TensorFlow loads (it would print
    # its start-up lines and take seconds).
    for folder, message in ((save_path, "holds no checkpoint in the 0.1.0 format; nothing to do."),
                            (os.path.join(save_path, "nowhere"), "is not a folder of a training run.")):
        again = subprocess.run([sys.executable, "-m", "gradual_rnn", "upgrade", f"--save_path={folder}"],
                               capture_output=True, text=True, timeout=300,
                               env=environment_without_tensorflow(tmp_path))
        assert again.returncode != 0 and again.stderr.strip().splitlines()[-1].endswith(message), again.stderr
        assert again.stderr.strip().splitlines()[-1].startswith("RunFolderError: ")
        assert "Traceback" not in again.stderr


def test_a_damaged_legacy_folder_changes_nothing_and_can_be_retried(legacy, tmp_path):
    """Every arrays.npz truncated: refused with one line, nothing moved or deleted; repaired, the
    same upgrade goes through. A progress file without its record is refused alike."""
    save_path, _, _ = legacy
    before = sorted(os.path.relpath(os.path.join(root, name), save_path)
                    for root, _, names in os.walk(save_path) for name in names)
    archives = sorted(glob.glob(os.path.join(save_path, "checkpoints", "*", "arrays.npz")))
    originals = {path: open(path, "rb").read() for path in archives}
    for path in archives:
        open(path, "wb").write(originals[path][:50])
    with pytest.raises(RunFolderError, match=r"arrays.npz cannot be read \(BadZipFile: .*\); nothing was changed"):
        upgrade.upgrade_run(save_path)
    after = sorted(os.path.relpath(os.path.join(root, name), save_path)
                   for root, _, names in os.walk(save_path) for name in names)
    assert after == before
    for path in archives:
        open(path, "wb").write(originals[path])
    progress_file = os.path.join(os.path.dirname(archives[0]), "progress.json")
    original_progress = open(progress_file).read()
    open(progress_file, "w").write("{}")
    with pytest.raises(RunFolderError, match=r"progress.json holds no 0.1.0 progress record \(KeyError"):
        upgrade.upgrade_run(save_path)
    open(progress_file, "w").write(original_progress)
    assert len(upgrade.upgrade_run(save_path)) == 4
