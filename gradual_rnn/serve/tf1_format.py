"""The TF1 checkpoints of the two original programs: their variable layouts, which program wrote a
checkpoint, its sizes, reading it, and writing a model back in the same format.

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

TensorFlow is imported only inside the functions that read or write tensors, so the checks of a
command line (`prefix_or_folder`, `check_output`, `CELLS`, `PROGRAMS`) load no TensorFlow.
"""
import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from gradual_rnn.configs import Config

PROGRAMS = ("tutorial", "gl")
CELLS = ("basic", "block")
CHECKPOINT_SUFFIXES = (".index", ".data-00000-of-00001", ".meta")
CHECKPOINT_STATE_FILE = "checkpoint"


class Tf1CheckpointError(ValueError):
    """A path that holds no TF1 checkpoint, or one whose variables do not form a model we know."""


# ----- paths (no TensorFlow) -----
def prefix_or_folder(path: str) -> str:
    """`path` when it is a folder, else the checkpoint prefix it names (a prefix, or one of its
    files); raises when it names neither. A folder's own prefix is `resolve_prefix`'s to find."""
    if os.path.isdir(path):
        return path
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix) and os.path.exists(path[:-len(suffix)] + ".index"):
            return path[:-len(suffix)]
    if os.path.exists(path + ".index"):
        return path
    raise Tf1CheckpointError(f"{path} is no checkpoint: there is no {path}.index and no folder {path}.")


def check_output(prefix: str) -> None:
    """Refuses to write over an existing checkpoint at `prefix`."""
    if os.path.exists(prefix + ".index"):
        raise Tf1CheckpointError(f"{prefix}.index exists already; choose another --output.")


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


def program_of(model) -> str:
    """The program whose layout fits `model`: 'gl' for tied heads, else 'tutorial'."""
    return "gl" if model.tied_weights else "tutorial"


# Variables a program saves beside the model: learning rates, global steps and keep probabilities
# (plain `Variable`, `Variable_N`), the GL code's variational masks, Adam's beta powers.
_AUXILIARY = re.compile(r"(.*/)?(global_step|Variable(_\d+)?|beta[12]_power|learning_rate|lr)"
                        r"|(.*/)?variational_masks(_\d+)?/.*")


def is_auxiliary(name: str, model_names: Sequence[str]) -> bool:
    """Whether `name` is a non-model variable: a known auxiliary, or an optimizer slot of a model
    variable (`<variable>/Momentum`, `<variable>/Adam_1`, ...)."""
    return bool(_AUXILIARY.fullmatch(name)) or any(name.startswith(model + "/") for model in model_names)


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
    """The number of LSTM layers: one more than the highest layer index among `names`."""
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


def _check_shapes(layout: Layout, sizes: Sizes, shapes: Dict[str, List[int]], dtypes: Dict[str, str]) -> None:
    """Raises for a model variable whose shape the sizes do not imply, or whose dtype is not float32."""
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


# ----- finding, opening and reading a checkpoint -----
def resolve_prefix(path: str) -> str:
    """The checkpoint prefix that `path` names: a prefix, one of its files, or a folder (its
    `checkpoint` state file's newest entry, or its only `.index` file)."""
    named = prefix_or_folder(path)
    return _prefix_in_folder(named) if os.path.isdir(named) else named


def _prefix_in_folder(folder: str) -> str:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(folder)
    if latest and os.path.exists(latest + ".index"):
        return latest
    indexes = sorted(name for name in os.listdir(folder) if name.endswith(".index"))
    if len(indexes) == 1:
        return os.path.join(folder, indexes[0][:-len(".index")])
    raise Tf1CheckpointError(f"{folder} is no checkpoint folder: no '{CHECKPOINT_STATE_FILE}' file names an "
                             f"existing prefix and it holds {len(indexes)} .index files; pass a prefix.")


def _open_reader(prefix: str):
    """TensorFlow's `CheckpointReader` of `prefix`; a checkpoint it cannot read is a Tf1CheckpointError."""
    import tensorflow as tf

    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise Tf1CheckpointError(f"{prefix} is no readable checkpoint: {detail}") from None


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
    """Reads and checks the checkpoint at `path` (a prefix, one of its files, or a folder)."""
    prefix = resolve_prefix(path)
    reader = _open_reader(prefix)
    shapes = {name: list(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    dtypes = {name: dtype.name for name, dtype in reader.get_variable_to_dtype_map().items()}
    layout = identify_layout(list(shapes))
    num_layers = _count_layers(layout, list(shapes))
    model_names = _check_names(layout, list(shapes), num_layers)
    sizes = infer_sizes(layout, shapes, num_layers)
    _check_shapes(layout, sizes, shapes, dtypes)
    try:
        tensors = {name: reader.get_tensor(name) for name in model_names}
        skipped = {name: _describe(reader, name, shapes[name], dtypes[name])
                   for name in sorted(shapes) if name not in tensors}
    except (IndexError, ValueError, RuntimeError) as error:  # e.g. a truncated data file
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise Tf1CheckpointError(f"{prefix}: the tensors cannot be read ({type(error).__name__}: {detail}); "
                                 f"the data file is damaged or incomplete.") from None
    logging.info("%s: %s, %d layers × %d units, vocabulary %d; skipped %d non-model variables: %s",
                 prefix, layout.description, num_layers, sizes.units, sizes.vocab_size, len(skipped),
                 "; ".join(f"{name} ({text})" for name, text in skipped.items()) or "none")
    return Tf1Checkpoint(prefix, layout, sizes, tensors, skipped)


# ----- the model's weights, both ways -----
def assign_tf1_weights(model, checkpoint: Tf1Checkpoint) -> None:
    """Copies the checkpoint's variables into `model` (a LanguageModel of its structure), splitting
    each kernel's rows into `kernel` and `recurrent_kernel` and mapping the gate order."""
    from gradual_rnn.nn.lstm import tf1_to_keras_gates

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


def tf1_model_tensors(model, layout: Layout) -> Dict[str, np.ndarray]:
    """`model`'s variables under `layout`'s names and in its layout (kernels `[x; h] -> (i, j, f, o)`)."""
    from gradual_rnn.nn.lstm import keras_to_tf1_gates

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


# ----- writing -----
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
    import tensorflow as tf

    check_output(prefix)
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
    """Saves `model` as a TF1 checkpoint of `program` (default: `program_of(model)`).

    With `auxiliary` (it needs `config`), the program's non-model variables are written too
    (`auxiliary_tensors`), so that a Saver built as the program's `main()` builds it restores it."""
    layout = layout_for(program or program_of(model), cell)
    tensors = tf1_model_tensors(model, layout)
    if auxiliary:
        if config is None:
            raise Tf1CheckpointError("Writing the non-model variables needs the run's config.")
        tensors.update(auxiliary_tensors(layout, config))
    write_tensors(tensors, prefix)
    logging.info("Wrote %s: %d tensors named as by the %s.", prefix, len(tensors), layout.description)
    return prefix
