"""MirroredStrategy over two logical CPUs: one window equals the one-device window."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # repeated training runs or subprocesses

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_window.py")


def test_mirrored_window_equals_one_device():
    """Same global batch of 4 streams, 2 per replica, without dropout and with variational masks: the
    loss agrees to float32 rounding, the gradient norm too, the updated weights to 1e-6 (the
    all-reduce sums in another order), and each replica's carried state is its rows of the one-device
    state. Both styles run in one process (TensorFlow's start-up is most of a run)."""
    done = subprocess.run([sys.executable, HELPER, "none", "variational"], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.strip().splitlines() if line.startswith("{")]
    assert [result["style"] for result in results] == ["none", "variational"]
    for result in results:
        _assert_window_agrees(result)


def _assert_window_agrees(result):
    assert result["replicas"] == 2
    assert result["dist_cost"] == pytest.approx(result["cost"], rel=1e-6)
    assert result["dist_norm"] == pytest.approx(result["norm"], rel=1e-5)
    assert result["norm"] > 0.5  # clipping at 0.5 is active, so the clip is tested as well
    assert result["update_size"] > 1e-3
    assert result["weight_difference"] < 1e-6
    assert result["state_difference"] < 1e-6
