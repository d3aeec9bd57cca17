"""`python -m gradual_rnn synthetic` (gradual_rnn.cli.synthetic): its flags in their own FlagValues,
the settings read from them, and the command run for real: bad flags (refused before TensorFlow is
imported: these runs get a `tensorflow` that fails to import), a tiny run with TensorBoard, a
diverging run."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from conftest import environment_without_tensorflow
from gradual_rnn.cli import common
from gradual_rnn.cli import synthetic as cli_synthetic
from gradual_rnn.configs import ConfigError
from gradual_rnn.synthetic.config import SyntheticConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRAM = "gradual_rnn synthetic"
TINY = ["--task=temporal_order", "--length=10", "--hidden_size=8", "--steps=4", "--eval_every=2",
        "--valid_size=20", "--test_size=20"]


def run_cli(*arguments, environment=None, timeout=240):
    """`python -m gradual_rnn synthetic ARGUMENTS` in a subprocess, from the repository root."""
    environment = dict(environment or os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "gradual_rnn", "synthetic", *arguments], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=ROOT)


def parsed(*arguments):
    """The command's FlagValues after parsing ARGUMENTS (in this process)."""
    values = cli_synthetic.define_flags(flags.FlagValues())
    values([PROGRAM, *arguments])
    return values


# --- Flags and settings, in process. ---

def test_one_flag_per_config_field_with_its_default_and_no_global_flag():
    known = set(flags.FLAGS)
    values = cli_synthetic.define_flags(flags.FlagValues())
    assert set(flags.FLAGS) == known
    fields = {field.name: field.default for field in dataclasses.fields(SyntheticConfig)
              if field.name not in ("seed", "leak_range")}
    assert set(values) == set(fields) | {"seeds", "logdir"}
    for name, default in fields.items():
        assert values[name].default == default, name


def test_settings_from_flags():
    config, seeds, logdir = cli_synthetic.settings_from_flags(
        parsed("--task=adding", "--length=20", "--seeds=3,4", "--nostop_when_solved", "--clip=1",
               "--logdir=/tmp/tensorboard"))
    assert config == SyntheticConfig(task="adding", length=20, stop_when_solved=False, clip=1.0)
    assert config.seed == 0 and seeds == (3, 4) and logdir == "/tmp/tensorboard"
    assert cli_synthetic.settings_from_flags(parsed()) == (SyntheticConfig(), (0,), None)


def test_settings_refuse_bad_values(tmp_path):
    with pytest.raises(ConfigError, match=r"^--batch_size got 0; expected an integer >= 1"):
        cli_synthetic.settings_from_flags(parsed("--batch_size=0"))
    with pytest.raises(ConfigError, match=r"^--seeds got '1,-2'"):
        cli_synthetic.settings_from_flags(parsed("--seeds=1,-2"))
    taken = tmp_path / "file"
    taken.write_text("")
    with pytest.raises(common.UsageError, match="exists and is not a folder"):
        cli_synthetic.settings_from_flags(parsed(f"--logdir={taken}"))


def test_argparse_negations_become_absl_ones_for_booleans_only():
    argv = ["prog", "--no-sampling", "--no-stop_when_solved", "--no-such", "--length=10"]
    assert cli_synthetic.legacy_negations(argv, ["sampling", "stop_when_solved"]) == \
        ["prog", "--nosampling", "--nostop_when_solved", "--no-such", "--length=10"]


# --- The command, run for real. ---

@pytest.mark.parametrize("arguments, message", [
    (["--batch_size=0"], "ConfigError: --batch_size got 0; expected an integer >= 1 (sequences per "
                         "minibatch)."),
    (["--learning_rate=nan"], "ConfigError: --learning_rate got nan; expected a finite number > 0."),
    (["--steps=0"], "ConfigError: --steps got 0; expected an integer >= 1 (updates per seed)."),
    (["--eval_every=0"], "ConfigError: --eval_every got 0; expected an integer >= 1 (updates between "
                         "validations)."),
    (["--seeds=a,b"], "ConfigError: --seeds got 'a,b'; expected comma-separated integers in "
                      "[0, 2147483647], e.g. --seeds=0,1,2."),
    (["--length=0"], "ConfigError: --length got 0; expected an integer >= 10 (T; the markers sit in "
                     "0.1 T windows)."),
    (["--unit=lstm", "--sampling"], "ConfigError: --sampling got True; expected it off with --unit=lstm"),
    (["--no-sampling", "--h_detach=1"], "ConfigError: --h_detach got 1.0; expected a number in [0, 1)."),
    (["--length=abc"], "UsageError: flag --length=abc: expected an integer"),
    (["--colour=red"], "UsageError: unknown flag --colour"),
    (["--no-such"], "UsageError: unknown flag --no-such"),
    (["extra"], "UsageError: unexpected arguments ['extra']; every setting is a --flag=value."),
])
def test_bad_flags_get_one_line_and_exit_code_1(tmp_path, arguments, message):
    done = run_cli(*arguments, environment=environment_without_tensorflow(tmp_path), timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message), \
        done.stderr[-2000:]
    assert done.stdout == ""


def test_help_lists_the_flags(tmp_path):
    done = run_cli("--help", environment=environment_without_tensorflow(tmp_path), timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--batch_size" in done.stdout and "--task" in done.stdout


@pytest.mark.slow
def run_in_process(*arguments, capsys):
    """The command in this process (TensorFlow loads once for the suite) -> (exit code, stdout)."""
    from gradual_rnn.cli import synthetic

    with pytest.raises(SystemExit) as stopped:
        synthetic.run_main(["synthetic", *arguments])
    return stopped.value.code or 0, capsys.readouterr().out


def test_cli_runs_end_to_end_and_writes_tensorboard(tmp_path, capsys):
    code, stdout = run_in_process(*TINY, "--clip=1", "--omega=1", "--sampling", "--seeds=3",
                                  "--no-stop_when_solved", f"--logdir={tmp_path}", capsys=capsys)
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["seeds"] == 1 and 0.0 <= summary["mean_accuracy"] <= 1.0 and summary["diverged"] == 0
    assert summary["config"]["stop_when_solved"] is False and summary["runs"][0]["seed"] == 3
    assert os.listdir(tmp_path / "seed_3")


@pytest.mark.slow
def test_a_diverging_run_prints_strict_json_that_says_so(capsys, caplog):
    caplog.set_level("INFO", logger="absl")
    code, stdout = run_in_process("--task=adding", "--length=10", "--hidden_size=8", "--steps=6",
                                  "--eval_every=3", "--valid_size=10", "--test_size=10", "--learning_rate=1e30",
                                  capsys=capsys)
    assert code == 0
    summary = json.loads(stdout.strip().splitlines()[-1])  # strict: a bare NaN would not parse
    assert summary["diverged"] == 1 and summary["mean_accuracy"] is None
    assert summary["runs"][0]["diverged"] is True and summary["runs"][0]["test_error"] is None
    assert '"diverged": true' in caplog.text  # the per-seed log line
