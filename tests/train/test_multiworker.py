"""Two worker processes on loopback (MultiWorkerMirroredStrategy, TF_CONFIG on 127.0.0.1)."""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from gradual_rnn import configs
from gradual_rnn.data import ptb
from gradual_rnn.train import checkpoint, loop
from gradual_rnn.train.context import RunOptions
from gradual_rnn.train.run_folder import RunFolder

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ptb_word_lm.py")


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def _start_workers(tmp_path, corpus_dir, ports, extra=()):
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        environment = dict(os.environ, TF_CONFIG=tf_config, TF_CPP_MIN_LOG_LEVEL="2")
        arguments = [sys.executable, SCRIPT, "--model=test", "--set=hidden_size=8", "--set=num_steps=5",
                     "--max_epochs=3", f"--data_path={corpus_dir}", f"--save_path={tmp_path / f'worker_{index}'}",
                     *extra]
        log = open(tmp_path / f"worker_{index}.log", "a")
        processes.append(subprocess.Popen(arguments, stdout=log, stderr=log, env=environment))
    return processes


def _wait(processes, timeout=300):
    deadline = time.time() + timeout
    for process in processes:
        process.wait(timeout=max(1, deadline - time.time()))
    return [process.returncode for process in processes]


def _newest(save_path):
    complete = RunFolder(str(save_path)).complete()
    return complete[-1] if complete else None


def _weights(save_path):
    tensors = checkpoint.read_tensors(_newest(save_path))
    return {key: value for key, value in tensors.items() if key.startswith("model/")}


def _epochs_done(save_path):
    newest = _newest(save_path)
    try:
        return len(RunFolder(str(save_path)).read_progress(newest).rows) if newest else 0
    except (OSError, ValueError, TypeError, RuntimeError):
        return 0


def _single_device_run(corpus_dir, save_path):
    """The workers' run in this process on one device: the same global batch, the same seeds."""
    corpus = ptb.load_corpus(corpus_dir)
    config = configs.override(configs.get_config("test"), {"hidden_size": "8", "num_steps": "5", "max_epochs": "3",
                                                           "vocab_size": str(corpus.vocab_size)})
    results = loop.train(config, RunOptions(data_dir="", save_path=str(save_path)), corpus)
    return results, _weights(save_path)


@pytest.mark.slow
def test_two_workers_survive_a_kill_and_resume_to_the_one_device_result(tiny_corpus_dir, tmp_path):
    """A worker killed after its first epoch: the other stops within the collective timeout; the
    same command on both resumes from their newest common checkpoint. The resumed workers hold the
    same weights, bit for bit, and equal a one-device run of the same global batch up to the
    all-reduce's summation order."""
    processes = _start_workers(tmp_path, tiny_corpus_dir, _free_ports(2), ["--collective_timeout_seconds=10"])
    deadline = time.time() + 240
    while time.time() < deadline and _epochs_done(tmp_path / "worker_1") < 1:
        time.sleep(0.05)
    processes[1].send_signal(signal.SIGKILL)
    processes[1].wait()
    lost = time.time()
    # The survivor's next all-reduce waits for the dead peer at most 10 s, then the run stops.
    assert _wait(processes[:1], timeout=120) != [0]
    assert time.time() - lost < 120
    survivor_log = (tmp_path / "worker_0.log").read_text()
    assert "PeerLost: a collective waited more than --collective_timeout_seconds" in survivor_log
    assert "Traceback" not in survivor_log
    assert 1 <= _epochs_done(tmp_path / "worker_1") < 3
    # Worker 0 "died while writing": its newest checkpoint is gone, so it is an epoch behind worker 1
    # and the restarted workers must agree on the older point.
    if _epochs_done(tmp_path / "worker_0") >= _epochs_done(tmp_path / "worker_1"):
        for path in glob.glob(_newest(tmp_path / "worker_0") + ".*"):
            os.remove(path)
    assert _epochs_done(tmp_path / "worker_0") < _epochs_done(tmp_path / "worker_1")
    assert _wait(_start_workers(tmp_path, tiny_corpus_dir, _free_ports(2))) == [0, 0], \
        (tmp_path / "worker_0.log").read_text()[-3000:]
    assert "Another worker has completed only" in (tmp_path / "worker_1.log").read_text()
    assert "resuming from that point" in (tmp_path / "worker_1.log").read_text()

    first, second = _weights(tmp_path / "worker_0"), _weights(tmp_path / "worker_1")
    assert len(first) == 6
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    resumed = json.loads((tmp_path / "worker_0" / "results.json").read_text())
    assert len(resumed["rows"]) == 3
    expected, expected_weights = _single_device_run(tiny_corpus_dir, tmp_path / "one_device")
    assert resumed["test_perplexity"] == pytest.approx(expected["test_perplexity"], rel=1e-5)
    for key, value in first.items():
        np.testing.assert_allclose(value, expected_weights[key], rtol=1e-5, atol=1e-6)
