"""End-to-end runs of the real training command, `ptb_word_lm.py` (`gradual_rnn/cli/train.py`), in
temporary folders on tiny corpora."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import environment_without_tensorflow
from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import loop
from gradual_rnn.train.context import RunOptions


SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ptb_word_lm.py")


def run_in_process(*args, capsys):
    """The training command run in this process (TensorFlow is loaded already): (exit code, stdout,
    stderr). For the behaviour of a fresh process, use `run_cli`."""
    from gradual_rnn.cli import train as train_command

    with pytest.raises(SystemExit) as stopped:
        train_command.run_main(["ptb_word_lm.py", *args])
    captured = capsys.readouterr()
    return stopped.value.code or 0, captured.out, captured.err


def run_cli(*args, timeout=300):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, env=environment)


@pytest.mark.parametrize("arguments, message", [
    (["--model=nope"], "Unknown model config 'nope'; choose one of small, medium"),
    (["--model=test", "--gradual"], "Gradual learning adds one layer per phase and needs num_layers >= 2"),
    (["--model=test", "--set=keep_output=1.5"], "keep_output=1.5 is not a keep probability in (0, 1]"),
    (["--model=test", "--set=colour=red"], "Unknown config field(s) ['colour']"),
    (["--model=test", "--max_epochs=-1"], "max_epochs must be at least 1, got -1"),
    (["--model=test", "--use_fp16", "--use_bf16"], "--use_fp16 and --use_bf16 exclude each other"),
    (["--model=test", "--use_bf16", "--set=precision=float32"],
     "--use_bf16 asks for precision=mixed_bfloat16 but --set asks for precision=float32"),
    (["--model=test", "--set=precision=half"], "precision='half' is not one of"),
    (["--model=test", "--checkpoint_every_windows=-5"],
     "--checkpoint_every_windows must be 0 (epoch ends only) or more, got -5."),
    (["--model=test", "--set=learning_rate_decay=1.5"], "learning_rate_decay must be in (0, 1]"),
    (["--model=test", "--set=name=a/../../x"], "name='a/../../x' is not a plain name"),
    (["--model=test", "--set=name="], "name='' is not a plain name"),
    (["--model=test", "--set=seed=-1"], "seed must be 0 or more, got -1."),
])
def test_bad_flags_fail_clearly(tiny_corpus_dir, tmp_path, arguments, message, capsys):
    """In this process (a fresh one, without TensorFlow: test_flags_are_checked_before_tensorflow_loads)."""
    code, _, stderr = run_in_process(*arguments, f"--data_path={tiny_corpus_dir}", f"--save_path={tmp_path / 'x'}",
                                     capsys=capsys)
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and message in stderr


def test_save_path_that_is_a_file_fails_clearly_before_tensorflow_loads(tiny_corpus_dir, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    done = subprocess.run([sys.executable, SCRIPT, "--model=test", f"--data_path={tiny_corpus_dir}",
                           f"--save_path={tmp_path / 'taken'}"], capture_output=True, text=True, timeout=120,
                          env=environment_without_tensorflow(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"ConfigError: --save_path {tmp_path / 'taken'} exists and "
                                                     f"is not a directory.")


def test_missing_data_names_the_flag(tmp_path):
    done = run_cli("--model=test", f"--data_path={tmp_path / 'nowhere'}", f"--save_path={tmp_path / 'x'}")
    assert done.returncode != 0 and "--data_path" in done.stderr
    assert "Traceback" not in done.stderr


def _checkpoint_window(save):
    """The progress record of the newest complete checkpoint of a run folder, or None."""
    sidecars = sorted((save / "checkpoints").glob("ckpt-*.progress.json"),
                      key=lambda path: int(path.name.split("-")[1].split(".")[0]))
    try:
        return json.loads(sidecars[-1].read_text())["progress"] if sidecars else None
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tiny_corpus_dir, tmp_path):
    """SIGKILL mid-epoch in phase 2, then the same command: results equal an uninterrupted run of
    the same config (trained in this process)."""
    common = ["--model=test", "--gradual", "--set=num_layers=2", "--set=hidden_size=8",
              "--set=num_steps=5", "--max_epochs=2", "--layer_epochs=1", "--checkpoint_every_windows=10",
              f"--data_path={tiny_corpus_dir}"]
    save = tmp_path / "killed"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable, SCRIPT, *common, f"--save_path={save}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    deadline = time.time() + 240
    while time.time() < deadline:
        progress = _checkpoint_window(save)
        if progress and progress["phase"] == 2 and progress["window"] > 0:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert progress and progress["phase"] == 2 and progress["window"] > 0, "never reached phase 2"
    resumed = run_cli(*common, f"--save_path={save}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored" in resumed.stderr
    corpus = ptb.load_corpus(tiny_corpus_dir)
    config = configs.override(configs.get_config("test"), dict(
        gradual="True", num_layers="2", hidden_size="8", num_steps="5", max_epochs="2", layer_epochs="1",
        vocab_size=str(corpus.vocab_size)))  # the command sets it from the corpus
    # Checkpoints only at epoch ends: the cadence changes no number (tests/train/test_windows_per_call.py).
    first = loop.train(config, RunOptions(data_dir="", save_path=str(tmp_path / "straight")), corpus)
    second = json.loads((save / "results.json").read_text())
    for key in ("test_perplexity", "exact_test_perplexity", "best_valid_perplexity"):
        assert second[key] == first[key]
    assert [row["valid_perplexity"] for row in second["rows"]] == [row["valid_perplexity"] for row in first["rows"]]


def test_describe_data(tiny_corpus_dir):
    done = run_cli("--model=test", f"--data_path={tiny_corpus_dir}", "--describe_data")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vocabulary 41, tokens train 2,309" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("techniques, logged", [
    (["--set=sampling=true", "--set=q_min=-3", "--set=q_max=3", "--set=activity_l1=0.001"],
     "sampling rule trained on"),
])
def test_seed_techniques_train_from_the_command_line(tiny_corpus_dir, tmp_path, techniques, logged, capsys,
                                                    caplog):
    caplog.set_level("INFO", logger="absl")
    save = tmp_path / "run"
    code, _, stderr = run_in_process("--model=test", "--gradual", "--set=num_layers=2", *techniques,
                                     f"--data_path={tiny_corpus_dir}", f"--save_path={save}", capsys=capsys)
    assert code == 0, stderr[-3000:]
    results = json.loads((save / "results.json").read_text())
    assert np.isfinite(results["test_perplexity"])
    if logged:
        assert logged in caplog.text


def test_flags_are_checked_before_tensorflow_loads(tiny_corpus_dir, tmp_path):
    """A bad flag is refused by the CLI without importing TensorFlow (a stub that fails on import)."""
    done = subprocess.run([sys.executable, SCRIPT, "--model=test", "--set=learning_rate=inf",
                           f"--data_path={tiny_corpus_dir}"], capture_output=True, text=True, timeout=120,
                          env=environment_without_tensorflow(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("ConfigError: learning_rate must be a positive finite "
                                                     "number, got inf.")


@pytest.mark.slow
def test_more_gpus_than_present_are_refused(tiny_corpus_dir, tmp_path, capsys):
    code, _, stderr = run_in_process("--model=test", "--num_gpus=2", f"--data_path={tiny_corpus_dir}",
                                     f"--save_path={tmp_path / 'x'}", capsys=capsys)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == ("ConfigError: --num_gpus=2 but TensorFlow finds 0 GPU(s) on this "
                                               "host; pass --num_gpus=0 or less (0: no distribution).")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_code_3(tiny_corpus_dir, tmp_path):
    save = tmp_path / "run"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen([sys.executable, SCRIPT, "--model=test", "--set=hidden_size=8",
                                "--set=num_steps=5", "--max_epochs=50", "--checkpoint_every_windows=50",
                                f"--data_path={tiny_corpus_dir}", f"--save_path={save}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    deadline = time.time() + 240
    while time.time() < deadline and _checkpoint_window(save) is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr[-2000:]
    assert "Interrupted: Stopped" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_smoke_test_shows_every_part_in_seconds(ptb_dir, tmp_path, capsys, caplog):
    """The README's quick start, on real PTB: two phases, validation, the test rule, checkpoints,
    results.json marked as a smoke test."""
    caplog.set_level("INFO", logger="absl")
    save = tmp_path / "quick"
    code, _, stderr = run_in_process("--model=gl", "--set=hidden_size=16", "--layer_epochs=1", "--max_epochs=1",
                                     "--smoke_test", f"--data_path={ptb_dir}", f"--save_path={save}", capsys=capsys)
    assert code == 0, stderr[-3000:]
    assert "SMOKE TEST: only the first" in caplog.text and "Phase 2/2: depth 2" in caplog.text
    results = json.loads((save / "results.json").read_text())
    assert results["smoke_test"] == {"train": 20000, "valid": 4000, "test": 2000}
    assert [(row["phase"], row["epoch"]) for row in results["rows"]] == [(1, 1), (2, 1)]
    assert results["test_perplexity"] > 1 and (save / "train.log").exists()
    assert list((save / "checkpoints" / "best").glob("ckpt-*.index"))


@pytest.mark.slow
def test_a_diverged_run_exits_1_with_one_line_and_no_results(tiny_corpus_dir, tmp_path, capsys):
    save = tmp_path / "run"
    code, _, stderr = run_in_process("--model=small", "--set=hidden_size=16", "--set=num_steps=5",
                                     "--max_epochs=2", "--set=init_scale=100", f"--data_path={tiny_corpus_dir}",
                                     f"--save_path={save}", capsys=capsys)
    assert code == 1 and "Traceback" not in stderr
    assert re.fullmatch(r"TrainingDiverged: The training perplexity became \d\.\d+e\+\d+ in phase 1, epoch 1, "
                        r"window 0; no checkpoint was written yet in .*", stderr.strip().splitlines()[-1])
    assert not (save / "results.json").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_naming_the_file(tiny_corpus_dir, tmp_path):
    """Files may grow to 100 bytes only (RLIMIT_FSIZE): the first write of the run that needs more
    fails; the command says which file, in one line, with exit code 1."""
    import resource

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))

    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, SCRIPT, "--model=test", f"--data_path={tiny_corpus_dir}",
                           f"--save_path={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                          env=environment, preexec_fn=small_files)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert re.fullmatch(rf"RunFolderError: Writing {tmp_path / 'run'}/\S+ failed \(File too large\); the file is "
                        r"as it was before\.", last), last


def test_tensorflow_out_of_memory_becomes_one_readable_line():
    import tensorflow as tf

    from gradual_rnn.cli import train as train_command

    def too_large(arguments, values):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[20,35,9999999]\nmore")

    with pytest.raises(MemoryError, match=r"the model does not fit in memory \(OOM when allocating tensor with "
                                          r"shape\[20,35,9999999\]\); use a smaller batch_size"):
        train_command._translated(too_large)([], None)
    assert MemoryError in train_command.expected_errors()


def _wikitext_corpus(folder):
    """A tiny corpus in WikiText's layout: headings, <unk>, 30 words; a valid word not in train."""
    rng = np.random.RandomState(3)
    words = [f"v{i}" for i in range(29)] + ["<unk>"]

    def text(count, extra=()):
        lines = [" = Heading = "]
        lines += [" ".join(rng.choice(words, size=rng.randint(3, 10))) for _ in range(count)]
        return "\n".join(list(lines) + list(extra)) + "\n"

    folder.mkdir()
    (folder / "wiki.train.tokens").write_text(text(400))
    (folder / "wiki.valid.tokens").write_text(text(40, ["never seen in train"]))
    (folder / "wiki.test.tokens").write_text(text(40))
    return folder


@pytest.mark.slow
def test_a_wikitext_layout_corpus_trains_exports_and_scores(tmp_path, capsys):
    """Not PTB: a folder in WikiText's layout (its vocabulary of 33 words, not 10,000, taken from the
    corpus), the words outside it dropped and counted; then the run is exported and scores text."""
    import gradual_rnn
    from gradual_rnn.cli import export as export_command

    corpus_dir = _wikitext_corpus(tmp_path / "wiki")
    save = tmp_path / "run"
    code, stdout, stderr = run_in_process("--model=test", "--set=hidden_size=8", "--set=num_steps=5",
                                          f"--data_path={corpus_dir}", f"--save_path={save}", capsys=capsys)
    assert code == 0, stderr[-3000:]
    identity = json.loads((save / "corpus.json").read_text())
    assert identity["vocab_size"] == 33  # 29 words, <unk>, '=', 'Heading', <eos>
    assert identity["tokens"]["valid"] == len((corpus_dir / "wiki.valid.tokens").read_text().split()) + 42 - 4
    with pytest.raises(SystemExit) as stopped:
        export_command.run_main(["export", f"--save_path={save}", f"--export_dir={tmp_path / 'export'}"])
    assert not stopped.value.code
    exported = gradual_rnn.load(str(tmp_path / "export"))
    vocabulary = (tmp_path / "export" / "vocab.txt").read_text().splitlines()
    assert len(vocabulary) == 33 and "never" not in vocabulary
    scores = exported.score(["v1 v2 unknownword"])
    assert scores.unknown_count == 1 and np.isfinite(scores.total_perplexity)
    (generated,) = exported.generate(["v1 v2"], num_words=5, seed=1)
    assert len(generated.words) == 5 and set(generated.words) <= set(vocabulary)


def test_three_explicit_files_are_a_corpus(tmp_path):
    corpus_dir = _wikitext_corpus(tmp_path / "wiki")
    files = [f"--{split}_file={corpus_dir / f'wiki.{split}.tokens'}" for split in ("train", "valid", "test")]
    done = run_cli("--model=test", *files, "--describe_data")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "vocabulary 33, tokens train" in done.stdout
    missing = run_cli("--model=test", files[0], "--describe_data")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
