"""Layering: the serving tools read runs only through the run folder and its checkpoints (never the
training loop), and the commands, the run folder and the configs load no TensorFlow."""
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_serve_modules_do_not_import_the_training_loop():
    script = ("import sys\n"
              "import gradual_rnn.serve.export, gradual_rnn.serve.generate, gradual_rnn.serve.tf1, "
              "gradual_rnn.serve.report\n"
              "loaded = sorted(name for name in sys.modules if name.startswith('gradual_rnn.train'))\n"
              "print(','.join(loaded))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.strip().split(",")
    assert "gradual_rnn.train.checkpoint" in loaded
    assert "gradual_rnn.train.loop" not in loaded and "gradual_rnn.train.epoch" not in loaded


@pytest.mark.slow
def test_commands_and_the_run_folder_load_no_tensorflow():
    script = ("import sys\n"
              "import gradual_rnn, gradual_rnn.configs, gradual_rnn.phases, gradual_rnn.hardware\n"
              "import gradual_rnn.train.run_folder, gradual_rnn.train.progress, gradual_rnn.serve.report\n"
              "import gradual_rnn.cli.train, gradual_rnn.cli.export, gradual_rnn.cli.generate\n"
              "import gradual_rnn.cli.report, gradual_rnn.cli.tf1, gradual_rnn.cli.upgrade, gradual_rnn.cli.synthetic\n"
              "print('tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
