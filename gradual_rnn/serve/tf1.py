"""The original programs' TF1 checkpoints in gradual_rnn: import one as a LanguageModel and its
Config, score it with the programs' own evaluation rules, export it, start a run from it, and write
a run's model back as one. The format itself (names, layouts, reading, writing) is `tf1_format`'s;
the command line is `gradual_rnn.cli.tf1` (`python -m gradual_rnn tf1 ...`).

Each command has one function here that takes typed arguments and returns the JSON-able result the
command prints: `evaluate_checkpoint`, `export_checkpoint`, `start_run`, `write_run_checkpoint`.
"""
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from gradual_rnn import configs
from gradual_rnn.configs import Config, ConfigError
from gradual_rnn.data import ptb
from gradual_rnn.nn.language_model import LanguageModel
from gradual_rnn.serve import export
from gradual_rnn.serve.tf1_format import (Tf1Checkpoint, Tf1CheckpointError, assign_tf1_weights, program_of,
                                          read_tf1_checkpoint, write_tf1_checkpoint)
from gradual_rnn.train import checkpoint as run_checkpoint
from gradual_rnn.train import evaluate as evaluation
from gradual_rnn.train.models import build_model
from gradual_rnn.train.run_folder import vocabulary_sha256


# ----- importing: a LanguageModel and a Config -----
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


@dataclasses.dataclass(frozen=True)
class Imported:
    """A TF1 checkpoint as a LanguageModel with every layer it holds, and the config it was built with."""

    checkpoint: Tf1Checkpoint
    config: Config
    model: LanguageModel


def import_checkpoint(path: str, config_name: Optional[str] = None,
                      assignments: Optional[Dict[str, str]] = None, forget_bias: float = 0.0) -> Imported:
    """Reads the TF1 checkpoint at `path` and builds the matching LanguageModel (see `checkpoint_config`)."""
    checkpoint = read_tf1_checkpoint(path)
    config = checkpoint_config(checkpoint, config_name, assignments, forget_bias)
    model = build_model(config)
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
    perplexity `exp(sum of costs in float64 / (windows × num_steps))`, as their `run_epoch` gives it."""

    window_costs: np.ndarray
    num_steps: int

    @property
    def perplexity(self) -> float:
        total = float(np.sum(self.window_costs.astype(np.float64)))
        return float(np.exp(total / (len(self.window_costs) * self.num_steps)))


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


def pass_costs(window_costs, model: LanguageModel, depth: int, windows: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """`<float32>[windows]`: one pass of a `evaluate.make_window_costs` function over the windows
    `(inputs, targets)` of `ptb.window_arrays`, from the zero state."""
    inputs, targets = windows
    costs, _ = window_costs(tf.constant(inputs), tf.constant(targets), model.initial_state(inputs.shape[1], depth))
    return costs.numpy()


def evaluate_heads(model: LanguageModel, depths: Sequence[int], valid_ids: np.ndarray, test_ids: np.ndarray,
                   settings: EvalSettings) -> Dict[int, Dict[str, SplitScore]]:
    """{depth: {"valid": SplitScore, "test": SplitScore}} for every head in `depths`: each pass starts
    from the zero state and carries it from window to window, without dropout (the references' rule)."""
    valid = ptb.window_arrays(valid_ids, settings.batch_size, settings.num_steps, "valid split")
    test = ptb.window_arrays(test_ids, settings.test_batch_size, settings.test_num_steps, "test split")
    scores = {}
    for depth in sorted(depths):
        window_costs = evaluation.make_window_costs(model, depth)
        scores[depth] = dict(valid=SplitScore(pass_costs(window_costs, model, depth, valid), settings.num_steps),
                             test=SplitScore(pass_costs(window_costs, model, depth, test), settings.test_num_steps))
        logging.info("depth %d: valid perplexity %.6f (%d windows), test perplexity %.6f (%d windows)", depth,
                     scores[depth]["valid"].perplexity, len(valid[0]), scores[depth]["test"].perplexity,
                     len(test[0]))
    return scores


def evaluate_imported(imported: Imported, corpus: ptb.Corpus, settings: EvalSettings) -> Dict:
    """`{"program": ..., "depths": {"1": {"valid": perplexity, "test": perplexity}, ...}}`."""
    valid_ids, test_ids = evaluation_ids(corpus, settings, imported.config.vocab_size)
    scores = evaluate_heads(imported.model, imported.checkpoint.depths, valid_ids, test_ids, settings)
    return dict(program=imported.checkpoint.program,
                depths={str(depth): {split: score.perplexity for split, score in splits.items()}
                        for depth, splits in scores.items()})


def evaluate_checkpoint(path: str, data_dir: str, settings: EvalSettings, forget_bias: float = 0.0) -> Dict:
    """The evaluate command: `evaluate_imported` of the checkpoint at `path` on the PTB in `data_dir`."""
    imported = import_checkpoint(path, forget_bias=forget_bias)  # a bad checkpoint fails before PTB is read
    return evaluate_imported(imported, ptb.load_corpus(data_dir), settings)


# ----- export -----
def model_of_depth(model: LanguageModel, depth: int) -> LanguageModel:
    """A LanguageModel of layers 1..depth with head `depth`, holding copies of `model`'s weights."""
    if not 1 <= depth <= model.num_layers:
        raise Tf1CheckpointError(f"--depth={depth} is outside 1..{model.num_layers}, the layers the checkpoint holds.")
    if depth == model.num_layers:
        return model
    target = LanguageModel(**dict(model.get_config(), num_layers=depth))
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
        vocab_sha256=vocabulary_sha256(words), hidden_size=imported.config.hidden_size, eos=ptb.EOS, unk=ptb.UNK,
        inference_rnn_mode=export.INFERENCE_RNN_MODE,
        weights=dict(origin="imported TF1 checkpoint; not scored by gradual_rnn (use the evaluate command)"),
        files=dict(keras=export.KERAS_FILE, saved_model=export.SAVED_MODEL_DIR, vocabulary=export.VOCAB_FILE),
        signatures=sorted(("initial_state", "step", "score_window", "score")),
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__),
        config=json.loads(imported.config.to_json()))


def export_imported(imported: Imported, data_dir: str, export_dir: str, depth: Optional[int] = None) -> Dict:
    """Writes `.keras` + SavedModel + vocab.txt + export.json of head `depth` (default: the top);
    returns export.json's content."""
    depth = imported.checkpoint.sizes.num_layers if depth is None else depth
    model = model_of_depth(imported.model, depth)
    words = export.training_vocabulary(data_dir, imported.config.vocab_size)
    metadata = export_metadata(imported, depth, words)
    export.write_export(model, words, metadata, export_dir)
    logging.info("Exported %s (depth %d) to %s.", imported.checkpoint.prefix, depth, export_dir)
    return metadata


def export_checkpoint(path: str, data_dir: str, export_dir: str, depth: Optional[int] = None,
                      forget_bias: float = 0.0) -> Dict:
    """The export command: `export_imported` of the checkpoint at `path`, the vocabulary from `data_dir`."""
    metadata = export_imported(import_checkpoint(path, forget_bias=forget_bias), data_dir, export_dir, depth)
    return dict(export_dir=export_dir, depth=metadata["depth"], source=metadata["source"]["tf1_checkpoint"])


# ----- a run started from an imported checkpoint -----
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


def start_run(path: str, save_path: str, config_name: Optional[str] = None,
              assignments: Optional[Dict[str, str]] = None, phase: int = 1, forget_bias: float = 0.0) -> Dict:
    """The start command: seeds the new run folder `save_path` (`train.checkpoint.seed_run`) so that a
    run of the imported config there starts at `phase` (epoch 1) from the checkpoint's weights;
    returns the checkpoint written and the command that trains the run."""
    imported = import_checkpoint(path, config_name, assignments, forget_bias)
    config_name = config_name or default_config_name(imported.checkpoint.program)
    prefix = run_checkpoint.seed_run(save_path, imported.config, imported.model, phase)
    logging.info("Seeded %s from %s: a run of %s starts at phase %d.", save_path, imported.checkpoint.prefix,
                 imported.config.name, phase)
    return dict(save_path=save_path, phase=phase, seeded=prefix,
                command=resume_command(imported.config, config_name, save_path))


# ----- writing a run's model back -----
def write_run_checkpoint(save_path: str, prefix: str, which: str = "best", program: Optional[str] = None,
                         cell: str = "basic", auxiliary: bool = True) -> Dict:
    """The write command: the model of the run's checkpoint `which` (best, latest, ckpt-N) as a TF1
    checkpoint at `prefix`, with the non-model variables of the run's config cut to the model's depth."""
    config = export.read_run_config(save_path)
    chosen = export.select_checkpoint(save_path, which)
    model, depth = export.load_checkpoint_model(config, chosen)
    at_depth = dataclasses.replace(config, num_layers=depth, keep_output=config.keep_output[:depth],
                                   keep_state=config.keep_state[:depth])
    write_tf1_checkpoint(model, prefix, at_depth, program, cell, auxiliary)
    return dict(output=prefix, program=program or program_of(model),
                source=dict(save_path=os.path.abspath(save_path), checkpoint=chosen.name, depth=depth))
