"""The PyTorch peer of gradual_rnn's test-style evaluation: batch 1, one token per window, state
carried, no gradient. Same model as ../shared/bench/torch_lstm.py (nn.Embedding + nn.LSTM +
nn.Linear), timed over the first `--windows` tokens of the PTB test split, one forward call each.

Run with the PyTorch venv: python benchmarks/torch_eval_b1.py --config small --windows 82429
[--chunk 512] [--threads 1]
Prints one JSON line: impl, config, eval_b1_wps (scored tokens per second), nll per token, peak RSS.
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {"small": 200, "medium": 650, "large": 1500}


def test_ids(data_dir, vocabulary_size=10000):
    """Test-split ids with the reference vocabulary (train counts, ties by word)."""
    def words(name):
        with open(os.path.join(data_dir, f"ptb.{name}.txt")) as handle:
            return handle.read().replace("\n", " <eos> ").split()
    counts = {}
    for word in words("train"):
        counts[word] = counts.get(word, 0) + 1
    order = sorted(counts, key=lambda word: (-counts[word], word))[:vocabulary_size]
    index = {word: position for position, word in enumerate(order)}
    return np.array([index[word] for word in words("test") if word in index], dtype=np.int64)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=sorted(SIZES), default="small")
    parser.add_argument("--windows", type=int, default=82429, help="test tokens to score")
    parser.add_argument("--chunk", type=int, default=1,
                        help="tokens per forward call: 1 is the test rule done literally; more runs "
                             "the same stream (same numbers) through nn.LSTM and the softmax at once")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    parser.add_argument("--data_dir", default=os.environ.get("PTB_DATA_DIR", "../shared/data/ptb"))
    arguments = parser.parse_args()
    hidden = SIZES[arguments.config]
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    embedding, lstm, output = nn.Embedding(10000, hidden), nn.LSTM(hidden, hidden, 2), nn.Linear(hidden, 10000)
    for module in (embedding, lstm, output):
        module.eval()
    ids = torch.from_numpy(test_ids(arguments.data_dir)[:arguments.windows + 1])
    count = len(ids) - 1
    state = (torch.zeros(2, 1, hidden), torch.zeros(2, 1, hidden))
    total = torch.zeros((), dtype=torch.float64)  # summed on the device: no host sync per token
    with torch.inference_mode():
        started = time.perf_counter()
        for start in range(0, count, arguments.chunk):
            end = min(start + arguments.chunk, count)
            step_output, state = lstm(embedding(ids[start:end].view(-1, 1)), state)
            logits = output(step_output.view(-1, hidden))
            total += F.cross_entropy(logits, ids[start + 1:end + 1], reduction="sum")
        total = float(total)
        elapsed = time.perf_counter() - started
    name = "torch_" + (f"t{arguments.threads}" if arguments.threads else "default") + (
        f"_chunk{arguments.chunk}" if arguments.chunk > 1 else "")
    print(json.dumps(dict(impl=name, config=arguments.config, windows=count,
                          eval_b1_wps=round(count / elapsed, 1), eval_s=round(elapsed, 2),
                          nll_per_token=round(total / count, 4), threads=torch.get_num_threads(),
                          peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))),
          flush=True)


if __name__ == "__main__":
    main()
