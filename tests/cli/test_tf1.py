"""`python -m gradual_rnn tf1` (gradual_rnn.cli.tf1): the programs' numbers printed by `evaluate`, each
command's flags as typed arguments, and bad command lines: one line, exit code 1, and, for every
check that needs no TensorFlow, in under a second from a process that never imports it."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import environment_without_tensorflow
from gradual_rnn.cli import common
from gradual_rnn.cli import tf1 as cli_tf1
from gradual_rnn.serve import tf1
from serve.tf1_fixtures import FIXTURES, check_printed, checkpoint_cases, evaluate_arguments

PROGRAM = "gradual_rnn tf1"


def run_command(*arguments):
    """The command's main in this process, as `python -m gradual_rnn tf1 ARGUMENTS` runs it."""
    rest, values = common.parse(cli_tf1.define_flags, [PROGRAM, *arguments])
    cli_tf1.main(rest, values)


def failure(capsys, *arguments):
    """(exit code, stderr's last line) of a command line that fails, run in this process."""
    with pytest.raises(SystemExit) as raised:
        cli_tf1.run_main([PROGRAM, *arguments])
    if isinstance(raised.value.code, str):  # a flag absl cannot parse: sys.exit(line)
        return 1, raised.value.code
    return raised.value.code, capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("folder,prefix", checkpoint_cases())
def test_evaluate_command_prints_the_programs_numbers(folder, prefix, ptb_dir, capsys):
    run_command(*evaluate_arguments(folder, prefix, ptb_dir))
    check_printed(capsys.readouterr().out, folder, prefix)


def test_each_command_passes_its_flags_as_typed_arguments(ptb_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def recorder(name):
        def record(*arguments):
            calls.append((name, arguments))
            return {"command": name}

        return record

    for name in ("evaluate_checkpoint", "export_checkpoint", "start_run", "write_run_checkpoint"):
        monkeypatch.setattr(tf1, name, recorder(name))
    checkpoint, run, output = os.path.join(FIXTURES, "gl_2x16", "model-1"), tmp_path / "run", tmp_path / "back" / "m"
    run.mkdir()
    (run / "config.json").write_text("{}")
    run_command("evaluate", f"--checkpoint={checkpoint}", f"--data_path={ptb_dir}", "--batch_size=8", "--num_steps=10",
                "--test_batch_size=1", "--test_num_steps=10", "--test_tokens=1000", "--forget_bias=0.5")
    run_command("export", f"--checkpoint={checkpoint}", f"--data_path={ptb_dir}", f"--export_dir={tmp_path / 'e'}",
                "--depth=1")
    run_command("start", f"--checkpoint={checkpoint}", f"--save_path={tmp_path / 'new'}", "--model=gl", "--phase=2",
                "--set=batch_size=8", "--set=num_steps=10")
    run_command("start", f"--checkpoint={checkpoint}", f"--save_path={tmp_path / 'other'}")
    run_command("write", f"--save_path={run}", f"--output={output}", "--run_checkpoint=ckpt-3", "--program=gl",
                "--noauxiliary")
    assert calls == [
        ("evaluate_checkpoint", (checkpoint, ptb_dir, tf1.EvalSettings(8, 10, 1, 10, None, 1000), 0.5)),
        ("export_checkpoint", (checkpoint, ptb_dir, str(tmp_path / "e"), 1, 0.0)),
        ("start_run", (checkpoint, str(tmp_path / "new"), "gl", {"batch_size": "8", "num_steps": "10"}, 2, 0.0)),
        ("start_run", (checkpoint, str(tmp_path / "other"), None, {}, 1, 0.0)),
        ("write_run_checkpoint", (str(run), str(output), "ckpt-3", "gl", "basic", False))]
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == [{"command": name} for name, _ in calls]


def test_bad_command_lines_exit_with_one_line(ptb_dir, tmp_path, capsys):
    cases = [(["evaluate", f"--checkpoint={tmp_path / 'none'}", f"--data_path={ptb_dir}", "--batch_size=1",
               "--num_steps=1", "--test_batch_size=1", "--test_num_steps=1"], "Tf1CheckpointError: "),
             (["evaluate", "--checkpoint=x"], "UsageError: evaluate needs --data_path, --batch_size, --num_steps, "
                                              "--test_batch_size, --test_num_steps."),
             (["rename"], "UsageError: Expected one command of evaluate, export, start, write; got ['rename']."),
             (["evaluate", "--valid_tokens=many"], "UsageError: "),
             (evaluate_arguments("gl_2x16", "model-1", ptb_dir) + ["--valid_tokens=99999999"],
              "DataError: --valid_tokens=99999999 is outside 1..73760"),
             (["start", f"--checkpoint={os.path.join(FIXTURES, 'gl_2x16')}", f"--save_path={tmp_path / 'run'}",
               "--set=hidden_size=32"], "ConfigError: --set=hidden_size=32 contradicts the checkpoint")]
    for arguments, message in cases:
        code, line = failure(capsys, *arguments)
        assert code == 1 and line.startswith(message), (arguments, line)


def test_a_bad_command_line_is_refused_before_tensorflow_loads(tmp_path):
    """Unknown command, missing flags, a bad window size, a checkpoint path that names nothing, no PTB,
    an unknown config, no run to write: one line each, exit code 1, in under a second, from a
    process that never imports TensorFlow."""
    checkpoint, none = os.path.join(FIXTURES, "gl_2x16"), tmp_path / "none"
    evaluate = ["evaluate", f"--checkpoint={checkpoint}", f"--data_path={tmp_path}", "--batch_size=1", "--num_steps=1",
                "--test_batch_size=1", "--test_num_steps=1"]
    cases = [(["rename"], "UsageError: Expected one command of evaluate, export, start, write; got ['rename']."),
             (["export", "--checkpoint=x"], "UsageError: export needs --data_path, --export_dir."),
             (evaluate[:3] + ["--batch_size=0"] + evaluate[4:], "UsageError: flag --batch_size=0: 0 is not a positive "
                                                                "integer"),
             (["start", f"--checkpoint={none}", "--save_path=run"],
              f"Tf1CheckpointError: {none} is no checkpoint: there is no {none}.index"),
             (evaluate, f"DataError: {tmp_path} lacks the PTB file(s) ptb.train.txt"),
             (["start", f"--checkpoint={checkpoint}", "--save_path=run", "--model=nope"],
              "ConfigError: Unknown model config 'nope'"),
             (["write", f"--save_path={none}", "--output=x"],
              f"RunFolderError: --save_path {none} is not a folder of a training run.")]
    environment = environment_without_tensorflow(tmp_path)
    for arguments, message in cases:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gradual_rnn", "tf1", *arguments], capture_output=True,
                              text=True, timeout=120, env=environment)
        seconds = time.perf_counter() - started
        assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith(message), done.stderr
        assert seconds < 1.0, (arguments, seconds)


@pytest.mark.slow
def test_evaluate_command_in_a_fresh_process_on_a_folder(ptb_dir, tmp_path):
    """The real `python -m gradual_rnn tf1` (a folder resolves to its newest checkpoint), and a bad
    path: one line on stderr, no traceback. Every checkpoint is evaluated in-process by
    test_evaluate_command_prints_the_programs_numbers."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    good = evaluate_arguments("gl_2x16", "model-2", ptb_dir)
    good[1] = "--checkpoint=" + os.path.join(FIXTURES, "gl_2x16")
    commands = dict(good=good, bad=["evaluate", f"--checkpoint={tmp_path}", *good[2:]])
    processes = {key: subprocess.Popen([sys.executable, "-m", "gradual_rnn", "tf1", *arguments], text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
                 for key, arguments in commands.items()}
    results = {key: (process.communicate(timeout=300), process.returncode) for key, process in processes.items()}
    (stdout, stderr), code = results["good"]
    assert code == 0, stderr
    check_printed(stdout, "gl_2x16", "model-2")
    (_, stderr), code = results["bad"]
    assert code == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"Tf1CheckpointError: {tmp_path} is no checkpoint folder")
