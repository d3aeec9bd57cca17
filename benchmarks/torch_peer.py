"""The PyTorch peer of `benchmarks/ptb_benchmark.py`: the tutorial's PTB word model (Zaremba et al.
2014) in PyTorch, timed the same way, so our speed is always quoted as a ratio measured in one run.

Tutorial configs (small, medium, large, and the tutorial's 1-layer, 2-unit `test`): nn.Embedding ->
dropout -> nn.LSTM(num_layers) (dropout between layers) -> dropout -> nn.Linear (softmax not tied to
the embedding). Every weight uniform in [-init_scale, init_scale], LSTM biases zero (nn.LSTM's
second bias, bias_hh, kept at zero and untrained: one bias per gate, as ours). The state is
carried from window to window and detached at each window boundary. Loss per window: cross-entropy
summed over time, averaged over the batch. The gradient is clipped by its global norm (5 at small
and medium, 10 at large, 1 at test), then plain SGD at learning rate 1.0.

`gl8`, the GL paper's model with 8 units (ptb_benchmark.py's `--config gl8`, i.e. gradual_rnn's `gl`
config with hidden_size=8, trained at its full depth of 2 layers): 35-step windows, batch 20,
init_scale 0.04, clip 5, the softmax tied to the embedding (logits = h E^T + output bias), a bias
added to the embedding after the lookup, and the GL code's variational dropout at keep 0.4:
per-element dropout on the embedding, and per layer one `bernoulli(0.4) / 0.4` mask `[batch,
units]` on the layer's outputs and one on the h fed back at every step (and carried to the next
window), both drawn once (gradual_rnn draws them once per epoch). nn.LSTM cannot mask the h it feeds
back, so the gl8 LSTM is written out: one input projection `x W + b` per window, then a Python
loop over the steps (`h R`, the gates, the mask) under autograd. The math is gradual_rnn's; the
differences are PyTorch's: its autograd computes the recurrent-weight gradient as one small
product per step where gradual_rnn's hand-written backward pass does one product over the window,
and every step is a few eager kernel calls rather than a compiled graph. `--fused_lstm` instead runs
nn.LSTM with the state mask left out (embedding and output dropout kept): a lighter model than
ours, for an idea of what the mask costs PyTorch, not a like-for-like peer.

    pip install -e ".[bench]"     # or a separate environment with torch==2.13.0 and numpy
    python benchmarks/torch_peer.py --config small --steps 50 --warmup 5 [--threads 2]
    python benchmarks/torch_peer.py --config test --steps 2000 --warmup 200   # overhead-bound
    python benchmarks/torch_peer.py --config gl8 --steps 100 --warmup 10 [--fused_lstm]

Reads PTB train ids from --data_path, else PTB_DATA_DIR, else the package's cache folder
(~/.cache/gradual_rnn/ptb or GRADUAL_RNN_CACHE); `--data random` needs no corpus. Prints one JSON
line with the fields of ptb_benchmark.py (impl, config, steps, warmup, data, words_per_step, wps,
wps_median_step, step_ms_median, warmup_s, last_loss, peak_rss_mb, host, ncpu, framework) plus
keep_prob, max_grad_norm, threads, and for gl8 keep_output, keep_state and tied_weights. Needs
only torch and numpy (not TensorFlow).
"""
import argparse
import collections
import json
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB_SIZE = 10000
BATCH_SIZE = 20
LEARNING_RATE = 1.0
# The tutorial's small / medium / large / test: layers, units, window length, init range, clip, keep.
CONFIGS = {
    "small": dict(num_layers=2, hidden_size=200, num_steps=20, init_scale=0.1, max_grad_norm=5.0, keep_prob=1.0),
    "medium": dict(num_layers=2, hidden_size=650, num_steps=35, init_scale=0.05, max_grad_norm=5.0, keep_prob=0.5),
    "large": dict(num_layers=2, hidden_size=1500, num_steps=35, init_scale=0.04, max_grad_norm=10.0, keep_prob=0.35),
    "test": dict(num_layers=1, hidden_size=2, num_steps=2, init_scale=0.1, max_grad_norm=1.0, keep_prob=1.0),
}
# The GL paper's tied, variational model (gradual_rnn's `gl`) at 8 units: keep_prob is the embedding's.
GL_CONFIGS = {
    "gl8": dict(num_layers=2, hidden_size=8, num_steps=35, init_scale=0.04, max_grad_norm=5.0, keep_prob=0.4,
                keep_output=0.4, keep_state=0.4, tied_weights=True),
}


def data_folder(flag_value):
    """--data_path, else PTB_DATA_DIR, else the cache folder gradual_rnn downloads into."""
    cache = os.environ.get("GRADUAL_RNN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "gradual_rnn"))
    for source, folder in (("--data_path", flag_value), ("PTB_DATA_DIR", os.environ.get("PTB_DATA_DIR")),
                           ("the cache", os.path.join(cache, "ptb"))):
        if folder and os.path.isfile(os.path.join(folder, "ptb.train.txt")):
            return folder
        if folder and source != "the cache":
            sys.exit(f"torch_peer.py: {source}={folder} holds no ptb.train.txt.")
    sys.exit("torch_peer.py: no ptb.train.txt found; pass --data_path=FOLDER or set PTB_DATA_DIR "
             "(or use --data random).")


def read_words(path):
    """Every line ends with <eos>; tokens are split on whitespace (as the tutorial's reader does)."""
    with open(path, encoding="utf-8") as handle:
        return handle.read().replace("\n", " <eos> ").split()


def vocabulary(train_words, size=VOCAB_SIZE):
    """Word -> id, most frequent train word first, ties broken by the word itself."""
    counts = collections.Counter(train_words)
    ranked = sorted(counts, key=lambda word: (-counts[word], word))[:size]
    return {word: index for index, word in enumerate(ranked)}


def split_ids(folder, split):
    """Ids of ptb.<split>.txt under the train vocabulary; words outside it are dropped."""
    index = vocabulary(read_words(os.path.join(folder, "ptb.train.txt")))
    words = read_words(os.path.join(folder, f"ptb.{split}.txt"))
    return np.array([index[word] for word in words if word in index], dtype=np.int64)


def windows(ids, batch_size, num_steps, count):
    """`count` (inputs, targets) pairs of shape [num_steps, batch_size] (time-major for nn.LSTM), in
    the order the tutorial trains them: the ids cut into batch_size contiguous streams, window i
    taking steps i*n..(i+1)*n of every stream and the targets one step later. Wraps around if
    `count` exceeds an epoch."""
    stream_length = len(ids) // batch_size
    streams = ids[:batch_size * stream_length].reshape(batch_size, stream_length)
    epoch_size = (stream_length - 1) // num_steps
    pairs = []
    for position in range(count):
        start = (position % epoch_size) * num_steps
        inputs = streams[:, start:start + num_steps].T
        targets = streams[:, start + 1:start + num_steps + 1].T
        pairs.append((torch.from_numpy(np.ascontiguousarray(inputs)),
                      torch.from_numpy(np.ascontiguousarray(targets))))
    return pairs


def initialize_lstm(lstm, init_scale):
    """nn.LSTM's weights uniform in [-init_scale, init_scale], its biases zero. Its second bias per
    layer (bias_hh) stays zero and untrained: the model then has one bias per gate, as ours, and the
    clipping norm and the update count that bias once, not twice."""
    for name, weight in lstm.named_parameters():
        if name.startswith("bias"):
            nn.init.zeros_(weight)
        else:
            nn.init.uniform_(weight, -init_scale, init_scale)
        if name.startswith("bias_hh"):
            weight.requires_grad_(False)


class WordModel(nn.Module):
    """Embedding, stacked LSTM and an untied softmax layer, with the tutorial's per-element dropout."""

    def __init__(self, num_layers, hidden_size, init_scale, keep_prob, vocab_size=VOCAB_SIZE):
        super().__init__()
        drop = 1.0 - keep_prob
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.dropout = nn.Dropout(drop)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers, dropout=drop)
        self.output = nn.Linear(hidden_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -init_scale, init_scale)
        initialize_lstm(self.lstm, init_scale)
        for weight in self.output.parameters():
            nn.init.uniform_(weight, -init_scale, init_scale)

    def forward(self, inputs, state):
        """inputs <int64>[time, batch] -> logits <float32>[time, batch, vocab], new (h, c)."""
        outputs, state = self.lstm(self.dropout(self.embedding(inputs)), state)
        return self.output(self.dropout(outputs)), state


def variational_mask(batch_size, units, keep):
    """`bernoulli(keep) / keep`, `<float32>[batch, units]`: one per layer and kind, reused every step."""
    return torch.bernoulli(torch.full((batch_size, units), keep)) / keep


class MaskedLSTMLayer(nn.Module):
    """gradual_rnn's BasicLSTM with a state mask: gates `z = x W + b + (h * state_mask) R` in the order
    i, f, c, o; `c' = c sigmoid(f) + sigmoid(i) tanh(c)`, `h' = tanh(c') sigmoid(o)`. The outputs are the
    unmasked h; the masked h is fed to the next step and returned as the state."""

    def __init__(self, input_size, units, init_scale):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(input_size, 4 * units).uniform_(-init_scale, init_scale))
        self.recurrent_kernel = nn.Parameter(torch.empty(units, 4 * units).uniform_(-init_scale, init_scale))
        self.bias = nn.Parameter(torch.zeros(4 * units))

    def forward(self, inputs, state, state_mask):
        """inputs `[time, batch, input]`, state (h, c) `[batch, units]` -> outputs `[time, batch,
        units]`, (h fed on, c)."""
        fed, cell = state
        projected = torch.addmm(self.bias, inputs.reshape(-1, inputs.shape[-1]), self.kernel)
        outputs = []
        for step_projection in projected.view(inputs.shape[0], inputs.shape[1], -1):
            gates = torch.addmm(step_projection, fed, self.recurrent_kernel)
            input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
            cell = cell * torch.sigmoid(forget_gate) + torch.sigmoid(input_gate) * torch.tanh(candidate)
            output = torch.tanh(cell) * torch.sigmoid(output_gate)
            outputs.append(output)
            fed = output * state_mask
        return torch.stack(outputs), (fed, cell)


class TiedVariationalModel(nn.Module):
    """The GL paper's model: embedding plus bias, per-element embedding dropout, LSTM layers with
    variational output and state masks, softmax tied to the embedding with one output bias. Every
    weight and bias uniform in [-init_scale, init_scale], LSTM biases zero (as gradual_rnn's).
    With `fused_lstm`, nn.LSTM runs the layers one by one and the state masks are left out."""

    def __init__(self, config, batch_size, fused_lstm=False, vocab_size=VOCAB_SIZE):
        super().__init__()
        units, scale = config["hidden_size"], config["init_scale"]
        self.keep_embed, self.fused_lstm = config["keep_prob"], fused_lstm
        self.embedding = nn.Embedding(vocab_size, units)
        nn.init.uniform_(self.embedding.weight, -scale, scale)
        self.embedding_bias = nn.Parameter(torch.empty(units).uniform_(-scale, scale))
        self.output_bias = nn.Parameter(torch.empty(vocab_size).uniform_(-scale, scale))
        if fused_lstm:
            self.layers = nn.ModuleList(nn.LSTM(units, units) for _ in range(config["num_layers"]))
            for layer in self.layers:
                initialize_lstm(layer, scale)
        else:
            self.layers = nn.ModuleList(MaskedLSTMLayer(units, units, scale)
                                        for _ in range(config["num_layers"]))
        # Drawn once, as gradual_rnn draws them once per epoch: (output mask, state mask) per layer.
        self.masks = [(variational_mask(batch_size, units, config["keep_output"]),
                       variational_mask(batch_size, units, config["keep_state"]))
                      for _ in range(config["num_layers"])]

    def forward(self, inputs, state):
        """inputs <int64>[time, batch] -> logits <float32>[time, batch, vocab], new (h, c)."""
        hidden, cell = state
        embedded = self.embedding(inputs) + self.embedding_bias
        outputs = F.dropout(embedded, 1.0 - self.keep_embed, self.training)
        new_hidden, new_cell = [], []
        for index, (layer, (output_mask, state_mask)) in enumerate(zip(self.layers, self.masks)):
            if self.fused_lstm:
                layer_state = (hidden[index:index + 1], cell[index:index + 1])
                outputs, (layer_hidden, layer_cell) = layer(outputs, layer_state)
                layer_hidden, layer_cell = layer_hidden[0], layer_cell[0]
            else:
                outputs, (layer_hidden, layer_cell) = layer(outputs, (hidden[index], cell[index]), state_mask)
            outputs = outputs * output_mask
            new_hidden.append(layer_hidden)
            new_cell.append(layer_cell)
        logits = F.linear(outputs, self.embedding.weight, self.output_bias)
        return logits, (torch.stack(new_hidden), torch.stack(new_cell))


def build_model(config, fused_lstm=False):
    """The config's model: TiedVariationalModel for gl8, WordModel for the tutorial's configs."""
    if config.get("tied_weights"):
        return TiedVariationalModel(config, BATCH_SIZE, fused_lstm)
    return WordModel(config["num_layers"], config["hidden_size"], config["init_scale"], config["keep_prob"])


def make_train_step(model, config):
    """A step on one window: returns its loss per token (a Python float, so the step has finished)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    num_steps = config["num_steps"]

    def step(inputs, targets, state):
        state = tuple(tensor.detach() for tensor in state)  # no gradient crosses a window boundary
        logits, state = model(inputs, state)
        # Mean over time and batch, times the window length: summed over time, averaged over batch.
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1)) * num_steps
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config["max_grad_norm"])
        optimizer.step()
        return loss.item() / num_steps, state

    return step


def time_training(config, pairs, warmup, fused_lstm=False):
    model = build_model(config, fused_lstm)
    model.train()
    step = make_train_step(model, config)
    shape = (config["num_layers"], BATCH_SIZE, config["hidden_size"])
    state, times, loss = (torch.zeros(shape), torch.zeros(shape)), [], None
    for inputs, targets in pairs:
        started = time.perf_counter()
        loss, state = step(inputs, targets, state)
        times.append(time.perf_counter() - started)
    timed = times[warmup:]
    words = BATCH_SIZE * config["num_steps"]
    median = float(np.median(timed))
    return dict(wps=words * len(timed) / sum(timed), wps_median_step=words / median,
                step_ms_median=1e3 * median, warmup_s=sum(times[:warmup]), last_loss=loss)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted({**CONFIGS, **GL_CONFIGS}), default="small")
    parser.add_argument("--steps", type=int, default=30, help="timed training windows")
    parser.add_argument("--warmup", type=int, default=5, help="untimed windows first")
    parser.add_argument("--data", choices=["ptb", "random"], default="ptb")
    parser.add_argument("--data_path", "--data_dir", dest="data_path", default=None,
                        help="folder with ptb.train.txt (default: PTB_DATA_DIR, then the cache)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fused_lstm", action="store_true",
                        help="gl8 only: nn.LSTM without the state mask (a lighter model than ours)")
    arguments = parser.parse_args(argv)
    if arguments.steps < 1 or arguments.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    if arguments.fused_lstm and arguments.config not in GL_CONFIGS:
        parser.error(f"--fused_lstm is for {', '.join(GL_CONFIGS)} (the tutorial's configs use nn.LSTM)")
    return arguments


def model_fields(config):
    """The JSON fields naming the model's dropout and clipping (and, for gl8, tying)."""
    fields = dict(keep_prob=config["keep_prob"], max_grad_norm=config["max_grad_norm"])
    if config.get("tied_weights"):
        fields.update(keep_output=config["keep_output"], keep_state=config["keep_state"], tied_weights=True)
    return fields


def main(argv=None):
    arguments = parse_arguments(argv)
    config = {**CONFIGS, **GL_CONFIGS}[arguments.config]
    torch.manual_seed(arguments.seed)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    count = arguments.warmup + arguments.steps
    if arguments.data == "random":
        ids = np.random.RandomState(arguments.seed).randint(
            0, VOCAB_SIZE, BATCH_SIZE * (count * config["num_steps"] + 1)).astype(np.int64)
    else:
        ids = split_ids(data_folder(arguments.data_path), "train")
    result = time_training(config, windows(ids, BATCH_SIZE, config["num_steps"], count), arguments.warmup,
                           arguments.fused_lstm)
    name = "torch_" + (f"t{arguments.threads}" if arguments.threads else "default") + (
        "_fused_nostatemask" if arguments.fused_lstm else "")
    output = dict(impl=name, config=arguments.config, steps=arguments.steps, warmup=arguments.warmup,
                  data=arguments.data, words_per_step=BATCH_SIZE * config["num_steps"],
                  **model_fields(config), threads=torch.get_num_threads(),
                  **{key: round(value, 3) for key, value in result.items()},
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                  host=platform.node(), ncpu=os.cpu_count(), framework=f"torch {torch.__version__}")
    print(json.dumps(output), flush=True)


if __name__ == "__main__":
    main()
