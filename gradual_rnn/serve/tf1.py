"""Interop with the original programs' TF1 checkpoints: read, evaluate, export, continue, write back.

    python -m gradual_rnn.tf1 evaluate --checkpoint=PREFIX_OR_DIR --data_path=DIR --batch_size=B \
        --num_steps=N --test_batch_size=B --test_num_steps=N [--valid_tokens=K] [--test_tokens=K]
    python -m gradual_rnn.tf1 export --checkpoint=PREFIX_OR_DIR --data_path=DIR --export_dir=DIR [--depth=k]
    python -m gradual_rnn.tf1 start --checkpoint=PREFIX_OR_DIR --save_path=NEW_RUN --model=gl --phase=2 [--set=...]
    python -m gradual_rnn.tf1 write --save_path=RUN [--run_checkpoint=best] --output=DIR/model [--cell=basic]

Both programs save with a plain `tf.train.Saver()`: one tensor per TF1 variable, named by its
variable scope. The model's variables (K counts layers; U units, V words, E embedding width):

    TensorFlow tutorial ptb_word_lm.py     rnn_mode BASIC (BasicLSTMCell); BLOCK (LSTMBlockCell)
      Model/embedding                         [V, E]
      Model/RNN/multi_rnn_cell/cell_K/basic_lstm_cell/kernel, bias    K = 0, 1, ...  (BASIC)
      Model/RNN/multi_rnn_cell/cell_K/lstm_cell/kernel, bias          K = 0, 1, ...  (BLOCK)
      Model/softmax_w [U, V], Model/softmax_b [V]                     untied softmax
    Gradual Learning code (2017)
      Model/embedding/embedding [V, U], Model/embedding/b_embed_in [U]
      Model/lstm_layer_K/basic_lstm_cell/kernel, bias                 K = 1, 2, ...
      Model/b_embed_out [V]                                           tied heads: h_k E^T + b_embed_out

Every LSTM kernel is `[input + U, 4U]`: rows 0..input-1 multiply x, the rest h, and the columns are
the gate blocks (i, j, f, o), j being the candidate. TF 1.x's LSTMBlockCell uses the same column
order (its op's "icfo" layout: i, cell input, f, o), so both cells map the same way onto BasicLSTM's
Keras layout (`kernel [input, 4U]`, `recurrent_kernel [U, 4U]`, gates i, f, c, o). The forget bias
is not stored: both programs add 0.0 at run time.

Everything else a Saver stored (learning rate, global steps, keep probabilities, variational masks,
optimizer slots) is skipped, logged and listed in `Tf1Checkpoint.skipped`.
"""
import dataclasses
import hashlib
import json
import os
import re
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from gradual_rnn import command_line, configs
from gradual_rnn.configs import Config, ConfigError
from gradual_rnn.data import ptb
from gradual_rnn.nn import language_model as lm
from gradual_rnn.nn.lstm import keras_to_tf1_gates, tf1_to_keras_gates
from gradual_rnn.serve import export
from gradual_rnn.serve.tf1_command import CELLS, Tf1CheckpointError, prefix_or_folder
from gradual_rnn.train import checkpoint as run_checkpoint

PROGRAMS = ("tutorial", "gl")
EVAL_CHUNK_TOKENS = 2048
CHECKPOINT_STATE_FILE = "checkpoint"


# ----- the two programs' names -----
@dataclasses.dataclass(frozen=True)
class Layout:
    """How one program (with one LSTM cell) names the model's variables."""

    key: str
    program: str
    description: str
    embedding: str
    input_bias: Optional[str]
    softmax_weights: Optional[str]  # None: tied heads (the GL code)
    output_bias: str
    cell_scope: str  # the scope of LSTM layer {index}
    first_index: int  # the index of the first layer in the names

    @property
    def tied(self) -> bool:
        return self.softmax_weights is None

    def kernel(self, layer: int) -> str:
        """The kernel's name of layer `layer` (0-based)."""
        return self.cell_scope.format(index=layer + self.first_index) + "/kernel"

    def bias(self, layer: int) -> str:
        return self.cell_scope.format(index=layer + self.first_index) + "/bias"

    def layer_of(self, name: str) -> Optional[int]:
        """The 0-based layer whose kernel or bias `name` is, or None."""
        before, after = self.cell_scope.split("{index}")
        match = re.fullmatch(re.escape(before) + r"(\d+)" + re.escape(after) + r"/(kernel|bias)", name)
        return int(match.group(1)) - self.first_index if match else None

    def fixed_names(self) -> List[str]:
        """The names of the variables that are not in an LSTM layer."""
        return [name for name in (self.embedding, self.input_bias, self.softmax_weights, self.output_bias)
                if name is not None]

    def is_model_name(self, name: str) -> bool:
        layer = self.layer_of(name)
        return name in self.fixed_names() or (layer is not None and layer >= 0)

    def model_names(self, num_layers: int) -> List[str]:
        layers = [name for layer in range(num_layers) for name in (self.kernel(layer), self.bias(layer))]
        return self.fixed_names() + layers


_TUTORIAL_CELL = "Model/RNN/multi_rnn_cell/cell_{index}/"
LAYOUTS = (
    Layout("tutorial_basic", "tutorial", "TensorFlow tutorial, rnn_mode BASIC (BasicLSTMCell)",
           "Model/embedding", None, "Model/softmax_w", "Model/softmax_b", _TUTORIAL_CELL + "basic_lstm_cell", 0),
    Layout("tutorial_block", "tutorial", "TensorFlow tutorial, rnn_mode BLOCK (LSTMBlockCell)",
           "Model/embedding", None, "Model/softmax_w", "Model/softmax_b", _TUTORIAL_CELL + "lstm_cell", 0),
    Layout("gl", "gl", "Gradual Learning code", "Model/embedding/embedding", "Model/embedding/b_embed_in",
           None, "Model/b_embed_out", "Model/lstm_layer_{index}/basic_lstm_cell", 1),
)


def layout_for(program: str, cell: str = "basic") -> Layout:
    """The layout of `program` ('tutorial' or 'gl') with `cell` ('basic' or 'block'; the GL code has
    only BasicLSTMCell)."""
    if program not in PROGRAMS or cell not in CELLS:
        raise Tf1CheckpointError(f"Unknown program {program!r} or cell {cell!r}; expected a program of "
                                 f"{PROGRAMS} and a cell of {CELLS}.")
    if program == "gl" and cell == "block":
        raise Tf1CheckpointError("The Gradual Learning code uses BasicLSTMCell only (--cell=basic).")
    key = "gl" if program == "gl" else f"tutorial_{cell}"
    return next(layout for layout in LAYOUTS if layout.key == key)


# Variables a program saves beside the model: learning rates, global steps and keep probabilities
# (plain `Variable`, `Variable_N`), the GL code's variational masks, Adam's beta powers.
_AUXILIARY = re.compile(r"(.*/)?(global_step|Variable(_\d+)?|beta[12]_power|learning_rate|lr)"
                        r"|(.*/)?variational_masks(_\d+)?/.*")


def is_auxiliary(name: str, model_names: Sequence[str]) -> bool:
    """Whether `name` is a non-model variable: a known auxiliary, or an optimizer slot of a model
    variable (`<variable>/Momentum`, `<variable>/Adam_1`, ...)."""
    return bool(_AUXILIARY.fullmatch(name)) or any(name.startswith(model + "/") for model in model_names)


# ----- finding and opening a checkpoint -----
def resolve_prefix(path: str) -> str:
    """The checkpoint prefix that `path` names: a prefix, one of its files, or a folder (its
    `checkpoint` state file's newest entry, or its only `.index` file)."""
    named = prefix_or_folder(path)
    return _prefix_in_folder(named) if os.path.isdir(named) else named


def _prefix_in_folder(folder: str) -> str:
    latest = tf.train.latest_checkpoint(folder)
    if latest and os.path.exists(latest + ".index"):
        return latest
    indexes = sorted(name for name in os.listdir(folder) if name.endswith(".index"))
    if len(indexes) == 1:
        return os.path.join(folder, indexes[0][:-len(".index")])
    raise Tf1CheckpointError(f"{folder} is no checkpoint folder: no '{CHECKPOINT_STATE_FILE}' file names an "
                             f"existing prefix and it holds {len(indexes)} .index files; pass a prefix.")


def _open_reader(prefix: str):
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise Tf1CheckpointError(f"{prefix} is no readable checkpoint: {detail}") from None


# ----- which program wrote it -----
def _layouts_naming(name: str) -> List[Layout]:
    return [layout for layout in LAYOUTS if layout.is_model_name(name)]


def identify_layout(names: Sequence[str]) -> Layout:
    """The one layout every model-variable name of `names` fits; errors name the tensors."""
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in names:
        raise Tf1CheckpointError("This is an object-based TF2 checkpoint (tf.train.Checkpoint, e.g. a "
                                 "gradual_rnn run's), not a TF1 Saver checkpoint of the original programs.")
    model_names = [name for name in sorted(names) if _layouts_naming(name)]
    if not model_names:
        shown = ", ".join(repr(name) for name in sorted(names)[:3])
        raise Tf1CheckpointError(f"Unknown naming scheme: no tensor is named as by the tutorial or the GL "
                                 f"code (the checkpoint holds {shown}{', ...' if len(names) > 3 else ''}).")
    fitting = [layout for layout in LAYOUTS if all(layout.is_model_name(name) for name in model_names)]
    if not fitting:
        raise Tf1CheckpointError(_mixed_message(model_names))
    return fitting[0]


def _naming_text(name: str) -> str:
    """Who names a tensor so: one layout's description, or the program when its cells share it."""
    layouts = _layouts_naming(name)
    if len(layouts) == 1:
        return layouts[0].description
    return "TensorFlow tutorial" if layouts[0].program == "tutorial" else layouts[0].description


def _mixed_message(model_names: Sequence[str]) -> str:
    first = model_names[0]
    first_layouts = set(layout.key for layout in _layouts_naming(first))
    other = next(name for name in model_names
                 if not first_layouts & set(layout.key for layout in _layouts_naming(name)))
    return (f"Mixed naming schemes: tensor '{first}' is named as by the {_naming_text(first)} but tensor "
            f"'{other}' as by the {_naming_text(other)}.")


def _count_layers(layout: Layout, names: Sequence[str]) -> int:
    layers = [layout.layer_of(name) for name in names]
    return max([layer + 1 for layer in layers if layer is not None and layer >= 0], default=1)


def _check_names(layout: Layout, names: Sequence[str], num_layers: int) -> List[str]:
    """The model names; raises for an unrecognised or a missing tensor."""
    model_names = layout.model_names(num_layers)
    for name in sorted(names):
        if name not in model_names and not is_auxiliary(name, model_names):
            raise Tf1CheckpointError(f"Unrecognised tensor '{name}' in a checkpoint of the {layout.description}; "
                                     f"it is neither a model variable nor a known non-model variable.")
    for name in model_names:
        if name not in names:
            raise Tf1CheckpointError(f"Missing tensor '{name}': a {num_layers}-layer checkpoint of the "
                                     f"{layout.description} needs it.")
    return model_names


# ----- sizes and shapes -----
@dataclasses.dataclass(frozen=True)
class Sizes:
    """The model's sizes as the checkpoint's shapes give them."""

    num_layers: int
    units: int
    vocab_size: int
    embedding_size: int


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


def infer_sizes(layout: Layout, shapes: Dict[str, List[int]], num_layers: int) -> Sizes:
    """Vocabulary and embedding width from the embedding, units from layer 1's bias `[4 units]`."""
    embedding, bias = shapes[layout.embedding], shapes[layout.bias(0)]
    if len(embedding) != 2:
        raise Tf1CheckpointError(f"Tensor '{layout.embedding}' has shape {_shape_text(embedding)}; expected "
                                 f"[vocabulary, width].")
    if len(bias) != 1 or bias[0] % 4 or not bias[0]:
        raise Tf1CheckpointError(f"Tensor '{layout.bias(0)}' has shape {_shape_text(bias)}; expected "
                                 f"[4 × units].")
    return Sizes(num_layers, bias[0] // 4, embedding[0], embedding[1])


def expected_shapes(layout: Layout, sizes: Sizes) -> Dict[str, List[int]]:
    """Every model variable's TF1 shape for these sizes."""
    units, vocab, width = sizes.units, sizes.vocab_size, sizes.embedding_size
    shapes = {layout.embedding: [vocab, width], layout.output_bias: [vocab]}
    if layout.input_bias:
        shapes[layout.input_bias] = [width]
    if layout.softmax_weights:
        shapes[layout.softmax_weights] = [units, vocab]
    for layer in range(sizes.num_layers):
        shapes[layout.kernel(layer)] = [(width if layer == 0 else units) + units, 4 * units]
        shapes[layout.bias(layer)] = [4 * units]
    return shapes


def _check_shapes(layout: Layout, sizes: Sizes, shapes, dtypes) -> None:
    described = (f"{sizes.num_layers} layers × {sizes.units} units (from '{layout.bias(0)}'), vocabulary "
                 f"{sizes.vocab_size} and width {sizes.embedding_size} (from '{layout.embedding}')")
    if layout.tied and sizes.embedding_size != sizes.units:
        raise Tf1CheckpointError(f"Tensor '{layout.embedding}' has width {sizes.embedding_size}, but the tied "
                                 f"heads of the {layout.description} need width = units = {sizes.units}.")
    for name, expected in expected_shapes(layout, sizes).items():
        if list(shapes[name]) != expected:
            raise Tf1CheckpointError(f"Tensor '{name}' has shape {_shape_text(shapes[name])}; expected "
                                     f"{_shape_text(expected)} for {described}.")
        if dtypes[name] != "float32":
            raise Tf1CheckpointError(f"Tensor '{name}' has dtype {dtypes[name]}; expected float32.")


# ----- reading -----
@dataclasses.dataclass(frozen=True)
class Tf1Checkpoint:
    """The model variables of a TF1 checkpoint, by TF1 name, and what was skipped.

    tensors: every model variable as saved (TF1 layout). skipped: each non-model variable, described
    (dtype, shape, and the value of a scalar).
    """

    prefix: str
    layout: Layout
    sizes: Sizes
    tensors: Dict[str, np.ndarray]
    skipped: Dict[str, str]

    @property
    def program(self) -> str:
        return self.layout.program

    @property
    def depths(self) -> Tuple[int, ...]:
        """The heads the checkpoint holds: the GL code has one per layer, the tutorial only the top."""
        if self.layout.tied:
            return tuple(range(1, self.sizes.num_layers + 1))
        return (self.sizes.num_layers,)


def _describe(reader, name: str, shape: List[int], dtype: str) -> str:
    if shape:
        return f"{dtype} {_shape_text(shape)}"
    return f"{dtype} scalar = {reader.get_tensor(name).item()!r}"


def read_tf1_checkpoint(path: str) -> Tf1Checkpoint:
    """Reads and checks the checkpoint at `path` (a prefix or a folder); see the module docstring."""
    prefix = resolve_prefix(path)
    reader = _open_reader(prefix)
    shapes = {name: list(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    dtypes = {name: dtype.name for name, dtype in reader.get_variable_to_dtype_map().items()}
    layout = identify_layout(list(shapes))
    num_layers = _count_layers(layout, list(shapes))
    model_names = _check_names(layout, list(shapes), num_layers)
    sizes = infer_sizes(layout, shapes, num_layers)
    _check_shapes(layout, sizes, shapes, dtypes)
    tensors = {name: reader.get_tensor(name) for name in model_names}
    skipped = {name: _describe(reader, name, shapes[name], dtypes[name])
               for name in sorted(shapes) if name not in tensors}
    logging.info("%s: %s, %d layers × %d units, vocabulary %d; skipped %d non-model variables: %s",
                 prefix, layout.description, num_layers, sizes.units, sizes.vocab_size, len(skipped),
                 "; ".join(f"{name} ({text})" for name, text in skipped.items()) or "none")
    return Tf1Checkpoint(prefix, layout, sizes, tensors, skipped)


# ----- building the LanguageModel -----
def structure_of(checkpoint: Tf1Checkpoint, forget_bias: float = 0.0) -> Dict:
    """The Config fields that the checkpoint decides."""
    sizes = checkpoint.sizes
    return dict(num_layers=sizes.num_layers, hidden_size=sizes.units, vocab_size=sizes.vocab_size,
                embedding_size=None if sizes.embedding_size == sizes.units else sizes.embedding_size,
                tied_weights=checkpoint.layout.tied, embedding_bias=checkpoint.layout.input_bias is not None,
                forget_bias=forget_bias)


def default_config_name(program: str) -> str:
    """The registered config a program's checkpoint is imported with: the tutorial's `small`
    (untied), or `gl` (tied, embedding bias, variational dropout)."""
    return "small" if program == "tutorial" else "gl"


def checkpoint_config(checkpoint: Tf1Checkpoint, config_name: Optional[str] = None,
                      assignments: Optional[Dict[str, str]] = None, forget_bias: float = 0.0) -> Config:
    """A config with the checkpoint's structure: the named config (default per program) with the
    `--set` style `assignments`, and the structural fields from the checkpoint. An assignment that
    contradicts the checkpoint is a ConfigError."""
    structure, assignments = structure_of(checkpoint, forget_bias), dict(assignments or {})
    base = configs.get_config(config_name or default_config_name(checkpoint.program))
    requested = configs.override(base, assignments)
    for field in sorted(set(assignments) & set(structure)):
        if getattr(requested, field) != structure[field]:
            raise ConfigError(f"--set={field}={assignments[field]} contradicts the checkpoint, which has "
                              f"{field}={structure[field]}.")
    changes = dict(assignments, num_layers=str(structure["num_layers"]))
    if structure["num_layers"] == 1 and "gradual" not in assignments:
        changes["gradual"] = "false"  # one layer has no gradual phases to learn in
    return dataclasses.replace(configs.override(base, changes), **structure)


def assign_tf1_weights(model, checkpoint: Tf1Checkpoint) -> None:
    """Copies the checkpoint's variables into `model`, mapping the LSTM kernels (see module docstring)."""
    layout, tensors = checkpoint.layout, checkpoint.tensors
    model.embedding.embeddings.assign(tensors[layout.embedding])
    if layout.input_bias:
        model.embedding.input_bias.assign(tensors[layout.input_bias])
    for index, layer in enumerate(model.lstm_layers):
        kernel = tensors[layout.kernel(index)]
        input_width = kernel.shape[0] - checkpoint.sizes.units
        layer.kernel.assign(tf1_to_keras_gates(kernel[:input_width]))
        layer.recurrent_kernel.assign(tf1_to_keras_gates(kernel[input_width:]))
        layer.bias.assign(tf1_to_keras_gates(tensors[layout.bias(index)]))
    if layout.tied:
        model.head.output_bias.assign(tensors[layout.output_bias])
    else:
        model.head.softmax_w.assign(tensors[layout.softmax_weights])
        model.head.softmax_b.assign(tensors[layout.output_bias])


@dataclasses.dataclass(frozen=True)
class Imported:
    """A TF1 checkpoint as a LanguageModel with every layer it holds, and the config it was built with."""

    checkpoint: Tf1Checkpoint
    config: Config
    model: lm.LanguageModel


def import_checkpoint(path: str, config_name: Optional[str] = None,
                      assignments: Optional[Dict[str, str]] = None, forget_bias: float = 0.0) -> Imported:
    """Reads the TF1 checkpoint at `path` and builds the matching LanguageModel (see `checkpoint_config`)."""
    checkpoint = read_tf1_checkpoint(path)
    config = checkpoint_config(checkpoint, config_name, assignments, forget_bias)
    model = lm.build_model(config)
    assign_tf1_weights(model, checkpoint)
    return Imported(checkpoint, config, model)


# ----- evaluation with the references' rules -----
@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The references' evaluation shapes: valid at the training (batch_size, num_steps), test at
    (test_batch_size, test_num_steps), each on a prefix of its split (None: the whole split)."""

    batch_size: int
    num_steps: int
    test_batch_size: int
    test_num_steps: int
    valid_tokens: Optional[int] = None
    test_tokens: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class SplitScore:
    """One evaluation pass: every window's cost (float32, as the references fetch it) and the
    perplexity `exp(sum of costs in float64 / (windows × num_steps))`."""

    window_costs: np.ndarray
    num_steps: int

    @property
    def perplexity(self) -> float:
        total = float(np.sum(self.window_costs.astype(np.float64)))
        return float(np.exp(total / (len(self.window_costs) * self.num_steps)))


def _joined(windows: np.ndarray) -> np.ndarray:
    """`[g, batch, steps]` consecutive windows -> `[batch, g * steps]`, each row one stream."""
    group, batch, steps = windows.shape
    return windows.transpose(1, 0, 2).reshape(batch, group * steps)


def _padded(windows: np.ndarray, group: int) -> np.ndarray:
    """Pads `[w, batch, steps]` with zero windows to `[group, batch, steps]`."""
    padding = np.zeros((group - windows.shape[0],) + windows.shape[1:], windows.dtype)
    return np.concatenate([windows, padding])


def chunk_costs_function(model):
    """The model's compiled `costs(inputs, targets, state, depths, num_steps)` for inputs and targets
    `<int32>[batch, g * num_steps]`, g windows run back to back (the state carried, no dropout, so
    one longer call computes the same steps as g calls). Returns `<float32>[len(depths), g]`, the
    cost of each window at each head, and the new state of layers 1..max(depths). A window's cost
    is the sum over its steps of the batch-mean cross-entropy, as both references compute it.
    Without dropout a layer's state does not depend on the head above, so every head's pass
    starts from the same carried state. One function per model; depths and num_steps are
    trace-time constants."""
    if model not in _CHUNK_COSTS:

        @tf.function(autograph=False)
        def costs(inputs, targets, state, depths, num_steps):
            per_head = []
            for depth in depths:
                logits, new_state = model(inputs, state[:depth], depth=depth)
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
                per_step = tf.reduce_mean(losses, axis=0)
                per_head.append(tf.reduce_sum(tf.reshape(per_step, [-1, num_steps]), axis=1))
            return tf.stack(per_head), new_state

        _CHUNK_COSTS[model] = costs
    return _CHUNK_COSTS[model]


_CHUNK_COSTS = weakref.WeakKeyDictionary()


def window_costs(model, depths: Sequence[int], ids: np.ndarray, batch_size: int, num_steps: int,
                 name: str = "given", chunk_tokens: int = EVAL_CHUNK_TOKENS) -> np.ndarray:
    """The cost of every window of one pass over `ids` at (batch_size, num_steps), from the zero
    state, at each head of `depths`: `<float32>[len(depths), windows]`. The last chunk is padded
    with zero windows, whose costs (computed after every real window) are dropped, so one compiled
    shape serves the whole pass."""
    depths = tuple(sorted(depths))
    inputs, targets = ptb.window_arrays(ids, batch_size, num_steps, name)
    windows = inputs.shape[0]
    group = max(1, min(windows, chunk_tokens // (batch_size * num_steps)))
    costs_of = chunk_costs_function(model)
    state, costs = model.initial_state(batch_size, depths[-1]), []
    for start in range(0, windows, group):
        chunk = [_joined(_padded(array[start:start + group], group)) for array in (inputs, targets)]
        chunk_costs, state = costs_of(chunk[0], chunk[1], state, depths, num_steps)
        costs.append(chunk_costs.numpy()[:, :windows - start])
    return np.concatenate(costs, axis=1).astype(np.float32)


def _prefix(ids: np.ndarray, tokens: Optional[int], split: str) -> np.ndarray:
    if tokens is None:
        return ids
    if not 1 <= tokens <= len(ids):
        raise ptb.DataError(f"--{split}_tokens={tokens} is outside 1..{len(ids)}, the ids of ptb.{split}.txt.")
    return ids[:tokens]


def evaluation_ids(corpus: ptb.Corpus, settings: EvalSettings, vocab_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The valid and test id prefixes the settings name; the corpus must have the model's vocabulary."""
    if corpus.vocab_size != vocab_size:
        raise ptb.DataError(f"The corpus's ptb.train.txt gives a vocabulary of {corpus.vocab_size} words but "
                            f"the checkpoint's has {vocab_size}: it was not trained on this corpus.")
    return _prefix(corpus.valid, settings.valid_tokens, "valid"), _prefix(corpus.test, settings.test_tokens, "test")


def evaluate_heads(model, depths: Sequence[int], valid_ids: np.ndarray, test_ids: np.ndarray,
                   settings: EvalSettings) -> Dict[int, Dict[str, SplitScore]]:
    """{depth: {"valid": SplitScore, "test": SplitScore}} for every head in `depths`."""
    depths = tuple(sorted(depths))
    valid = window_costs(model, depths, valid_ids, settings.batch_size, settings.num_steps, "valid split")
    test = window_costs(model, depths, test_ids, settings.test_batch_size, settings.test_num_steps, "test split")
    scores = {}
    for row, depth in enumerate(depths):
        scores[depth] = dict(valid=SplitScore(valid[row], settings.num_steps),
                             test=SplitScore(test[row], settings.test_num_steps))
        logging.info("depth %d: valid perplexity %.6f (%d windows), test perplexity %.6f (%d windows)", depth,
                     scores[depth]["valid"].perplexity, valid.shape[1], scores[depth]["test"].perplexity,
                     test.shape[1])
    return scores


def evaluate_imported(imported: Imported, corpus: ptb.Corpus, settings: EvalSettings) -> Dict:
    """The evaluate command's result: `{"program": ..., "depths": {"1": {"valid": p, "test": p}, ...}}`."""
    valid_ids, test_ids = evaluation_ids(corpus, settings, imported.config.vocab_size)
    scores = evaluate_heads(imported.model, imported.checkpoint.depths, valid_ids, test_ids, settings)
    return dict(program=imported.checkpoint.program,
                depths={str(depth): {split: score.perplexity for split, score in splits.items()}
                        for depth, splits in scores.items()})


# ----- export and a run started from it -----
def model_of_depth(model, depth: int):
    """A LanguageModel of layers 1..depth with head `depth`, holding copies of `model`'s weights."""
    if not 1 <= depth <= model.num_layers:
        raise Tf1CheckpointError(f"--depth={depth} is outside 1..{model.num_layers}, the layers the checkpoint holds.")
    if depth == model.num_layers:
        return model
    target = lm.LanguageModel(**dict(model.get_config(), num_layers=depth))
    for source_layer, target_layer in zip([model.embedding, model.head] + model.lstm_layers[:depth],
                                          [target.embedding, target.head] + target.lstm_layers):
        for source, destination in zip(source_layer.weights, target_layer.weights, strict=True):
            destination.assign(source)
    return target


def export_metadata(imported: Imported, depth: int, words: List[str]) -> Dict:
    """export.json's content for an imported checkpoint (the fields of a run's export that apply)."""
    checkpoint = imported.checkpoint
    return dict(
        format_version=export.FORMAT_VERSION,
        source=dict(tf1_checkpoint=os.path.abspath(checkpoint.prefix), program=checkpoint.program,
                    naming=checkpoint.layout.description, skipped_variables=sorted(checkpoint.skipped)),
        depth=depth, checkpoint_depth=checkpoint.sizes.num_layers, vocab_size=imported.config.vocab_size,
        vocab_sha256=hashlib.sha256(export.vocabulary_text(words).encode("utf-8")).hexdigest(),
        hidden_size=imported.config.hidden_size, eos=ptb.EOS, unk=ptb.UNK,
        inference_rnn_mode=export.INFERENCE_RNN_MODE,
        weights=dict(origin="imported TF1 checkpoint; not scored by gradual_rnn (use the evaluate command)"),
        files=dict(keras=export.KERAS_FILE, saved_model=export.SAVED_MODEL_DIR, vocabulary=export.VOCAB_FILE),
        signatures=sorted(("initial_state", "step", "score_window", "score")),
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__),
        config=json.loads(imported.config.to_json()))


def export_imported(imported: Imported, data_dir: str, export_dir: str, depth: Optional[int] = None) -> Dict:
    """Writes `.keras` + SavedModel + vocab.txt + export.json of head `depth` (default: the top)."""
    depth = imported.checkpoint.sizes.num_layers if depth is None else depth
    model = model_of_depth(imported.model, depth)
    words = export.training_vocabulary(data_dir, imported.config.vocab_size)
    metadata = export_metadata(imported, depth, words)
    export.write_export(model, words, metadata, export_dir)
    logging.info("Exported %s (depth %d) to %s.", imported.checkpoint.prefix, depth, export_dir)
    return metadata


def resume_command(config: Config, config_name: str, save_path: str) -> str:
    """The ptb_word_lm.py command that trains `config` in `save_path`: the named config plus one
    `--set` for every field that differs from it."""
    base = json.loads(configs.get_config(config_name).to_json())
    wanted = json.loads(config.to_json())
    settings = [f"--set={field}={_set_text(wanted[field])}" for field in sorted(wanted)
                if field != "name" and wanted[field] != base[field]]
    return " ".join(["python ptb_word_lm.py", f"--model={config_name}", *settings,
                     f"--save_path={save_path}", "--data_path=$PTB_DATA_DIR"])


def _set_text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value).replace(" ", "")
    return str(value)


def start_run(imported: Imported, save_path: str, phase: int) -> str:
    """Seeds `save_path` so that a run of `imported.config` there starts at `phase` (epoch 1) from the
    imported weights (`train.checkpoint.seed_run`); returns the checkpoint written."""
    prefix = run_checkpoint.seed_run(save_path, imported.config, imported.model, phase)
    logging.info("Seeded %s from %s: a run of %s starts at phase %d.", save_path, imported.checkpoint.prefix,
                 imported.config.name, phase)
    return prefix


# ----- writing back -----
def tf1_model_tensors(model, layout: Layout) -> Dict[str, np.ndarray]:
    """`model`'s variables under `layout`'s names and in its layout (kernels `[x; h] -> (i, j, f, o)`)."""
    _check_writable(model, layout)
    tensors = {layout.embedding: model.embedding.embeddings.numpy()}
    if layout.input_bias:
        tensors[layout.input_bias] = model.embedding.input_bias.numpy()
    for index, layer in enumerate(model.lstm_layers):
        kernel = np.concatenate([layer.kernel.numpy(), layer.recurrent_kernel.numpy()], axis=0)
        tensors[layout.kernel(index)] = keras_to_tf1_gates(kernel)
        tensors[layout.bias(index)] = keras_to_tf1_gates(layer.bias.numpy())
    if layout.tied:
        tensors[layout.output_bias] = model.head.output_bias.numpy()
    else:
        tensors[layout.softmax_weights] = model.head.softmax_w.numpy()
        tensors[layout.output_bias] = model.head.softmax_b.numpy()
    return {name: np.asarray(value, np.float32) for name, value in tensors.items()}


def _check_writable(model, layout: Layout) -> None:
    if model.tied_weights != layout.tied or model.embedding_bias != (layout.input_bias is not None):
        raise Tf1CheckpointError(
            f"A model with tied_weights={model.tied_weights} and embedding_bias={model.embedding_bias} has no "
            f"{layout.description} layout: the tutorial is untied without an embedding bias, the GL code "
            f"tied with one.")
    if layout.tied and model.embedding_size != model.hidden_size:
        raise Tf1CheckpointError("The GL code's tied heads need embedding_size == hidden_size.")


def auxiliary_tensors(layout: Layout, config: Config) -> Dict[str, np.ndarray]:
    """The non-model variables the program's `main()` graph holds, so that its `tf.train.Saver()`
    finds every name it restores: the tutorial's global step (int64) and learning rate; the GL
    code's keep probabilities (output, state per layer), learning rate, variational masks
    `[batch, units]` (all ones: output, state, unused memory mask per layer) and three global steps
    (int32). Values: the config's learning rate and last keep row, steps 0."""
    if layout.program == "tutorial":
        return {"Model/global_step": np.array(0, np.int64),
                "Train/Model/Variable": np.array(config.learning_rate, np.float32)}
    layers = config.num_layers
    keep = [value for index in range(layers)
            for value in (config.keep_output[-1][index], config.keep_state[-1][index])]
    tensors = {_numbered("Train/Model/Variable", index): np.array(value, np.float32)
               for index, value in enumerate(keep)}
    tensors[_numbered("Train/Model/Variable", 2 * layers)] = np.array(config.learning_rate, np.float32)
    ones = np.ones([config.batch_size, config.hidden_size], np.float32)
    for layer in range(layers):
        for mask in range(3):
            tensors[_numbered(_numbered("Train/Model/variational_masks", layer) + "/Variable", mask)] = ones
    for scope in ("Train", "Valid", "Test"):
        tensors[f"{scope}/Model/global_step"] = np.array(0, np.int32)
    return tensors


def _numbered(name: str, index: int) -> str:
    """TF1's unique naming: `name`, `name_1`, `name_2`, ..."""
    return name if index == 0 else f"{name}_{index}"


def write_tensors(tensors: Dict[str, np.ndarray], prefix: str) -> str:
    """Writes `tensors` as a TF1 (V2 format) checkpoint at `prefix` with the SaveV2 op a Saver runs,
    and a `checkpoint` state file naming it, so `tf.train.latest_checkpoint(folder)` finds it."""
    if os.path.exists(prefix + ".index"):
        raise Tf1CheckpointError(f"{prefix}.index exists already; choose another --output.")
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    base = os.path.basename(prefix)
    with open(os.path.join(folder, CHECKPOINT_STATE_FILE), "w", encoding="utf-8") as handle:
        handle.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    return prefix


def write_tf1_checkpoint(model, prefix: str, config: Optional[Config] = None, program: Optional[str] = None,
                         cell: str = "basic", auxiliary: bool = True) -> str:
    """Saves `model` as a TF1 checkpoint of `program` (default: 'gl' if tied, else 'tutorial').

    With `auxiliary` (it needs `config`), the program's non-model variables are written too
    (`auxiliary_tensors`), so that a Saver built as the program's `main()` builds it restores it."""
    program = program or ("gl" if model.tied_weights else "tutorial")
    layout = layout_for(program, cell)
    tensors = tf1_model_tensors(model, layout)
    if auxiliary:
        if config is None:
            raise Tf1CheckpointError("Writing the non-model variables needs the run's config.")
        tensors.update(auxiliary_tensors(layout, config))
    write_tensors(tensors, prefix)
    logging.info("Wrote %s: %d tensors named as by the %s.", prefix, len(tensors), layout.description)
    return prefix


def write_run_checkpoint(save_path: str, prefix: str, which: str = "best", program: Optional[str] = None,
                         cell: str = "basic", auxiliary: bool = True) -> Dict:
    """Writes the model of a gradual_rnn run's checkpoint `which` (best, latest, ckpt-N) as a TF1 checkpoint."""
    config = export.read_run_config(save_path)
    chosen = export.select_checkpoint(save_path, which)
    model, depth = export.load_checkpoint_model(config, chosen)
    write_tf1_checkpoint(model, prefix, dataclasses.replace(config, num_layers=depth,
                                                            keep_output=config.keep_output[:depth],
                                                            keep_state=config.keep_state[:depth]),
                         program, cell, auxiliary)
    return dict(output=prefix, program=program or ("gl" if model.tied_weights else "tutorial"),
                source=dict(save_path=os.path.abspath(save_path), checkpoint=chosen.name, depth=depth))


# ----- the commands (their command line: gradual_rnn.serve.tf1_command) -----
def run_evaluate(values: flags.FlagValues) -> Dict:
    settings = EvalSettings(values.batch_size, values.num_steps, values.test_batch_size, values.test_num_steps,
                            values.valid_tokens, values.test_tokens)
    imported = import_checkpoint(values.checkpoint, forget_bias=values.forget_bias)  # before reading PTB
    return evaluate_imported(imported, ptb.load_corpus(values.data_path), settings)


def run_export(values: flags.FlagValues) -> Dict:
    imported = import_checkpoint(values.checkpoint, forget_bias=values.forget_bias)
    metadata = export_imported(imported, values.data_path, values.export_dir, values.depth)
    return dict(export_dir=values.export_dir, depth=metadata["depth"], source=metadata["source"]["tf1_checkpoint"])


def run_start(values: flags.FlagValues) -> Dict:
    checkpoint = read_tf1_checkpoint(values.checkpoint)
    config_name = values.model or default_config_name(checkpoint.program)
    imported = import_checkpoint(checkpoint.prefix, config_name, command_line.assignments(values.set), values.forget_bias)
    phase = values.phase or 1
    prefix = start_run(imported, values.save_path, phase)
    return dict(save_path=values.save_path, phase=phase, seeded=prefix,
                command=resume_command(imported.config, config_name, values.save_path))


def run_write(values: flags.FlagValues) -> Dict:
    return write_run_checkpoint(values.save_path, values.output, values.run_checkpoint, values.program,
                                values.cell, values.auxiliary)


RUNNERS = dict(evaluate=run_evaluate, export=run_export, start=run_start, write=run_write)
EXPECTED_ERRORS = (Tf1CheckpointError, ptb.DataError, ConfigError, app.UsageError, export.ExportError,
                   run_checkpoint.CheckpointError)


if __name__ == "__main__":
    from gradual_rnn.serve.tf1_command import run_main
    run_main()
