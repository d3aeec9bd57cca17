"""Exports a training checkpoint for inference: a `.keras` model, a TensorFlow SavedModel that takes
text, optionally a streaming TFLite model, and the vocabulary.

    python -m gradual_rnn export --save_path=runs/small --export_dir=exports/small \
        [--checkpoint=latest|best|ckpt-42] [--depth=k] [--tflite]

The folder (`serve/layout.py` knows it)::

    model.keras       the LanguageModel (depth k) for `keras.saving.load_model(path, safe_mode=True)`;
                      opening it needs `gradual_rnn` importable (its layers are registered there)
    saved_model/1/    a TensorFlow SavedModel that needs only TensorFlow, in TensorFlow Serving's
                      `<model>/<version>/` layout: `serving_default` scores text, `generate` continues
                      prompts, and the id signatures serve the Python API (serve/signatures.py)
    model.tflite      with --tflite: one token and the state in, log-probabilities and the state out
                      (serve/tflite.py)
    vocab.txt         one word per line; a word's id is its 0-based line number (the run folder's own
                      copy; a run from before runs kept one rebuilds it from the training file)
    export.json       what was exported: config, depth, checkpoint, phase, epoch, perplexities, files,
                      signatures

Which checkpoint (the rule). `--checkpoint=best` (the default) exports the best-validation weights:
the copy the trainer pins in `checkpoints/best`, or else the newest retained checkpoint holding them
(a run keeps only its newest three), or else, with a warning, the newest checkpoint.
`--checkpoint=latest` exports the newest readable checkpoint; `--checkpoint=ckpt-N` that one
(`RunFolder.select`). In every case export.json states the phase and epoch the weights come from, their train and
validation perplexities, the run's best validation (phase, epoch, perplexity) and whether the
exported weights are those best-validation weights (`is_best_validation`). A checkpoint written in
the middle of an epoch holds weights no validation has scored; it is exported with `epoch_complete:
false` and no perplexities.

Depth. A checkpoint holds a depth-d model (d = the depth of its phase). `--depth=k` (1 <= k <= d,
default d) exports layers 1..k with head k: exactly what `model(ids, state, depth=k)` computes.

The exported model runs with rnn_mode 'auto', which (with no state mask at inference) is
`keras.layers.LSTM` over the whole window when forget_bias is 0 and a GPU is visible, and otherwise
one `BasicLSTM` step at a time in a graph loop. Both compute the same function as training's LSTM.
"""
import dataclasses
import hashlib
import json
import os
import shutil
from typing import Dict, List, Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

from gradual_rnn.configs import Config
from gradual_rnn.data import ptb
from gradual_rnn.nn import language_model as lm
from gradual_rnn.serve import layout, signatures, tflite
from gradual_rnn.train import checkpoint
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress
from gradual_rnn.train.run_folder import RunCheckpoint, RunFolder, RunFolderError, holds_best_weights, vocabulary_text

INFERENCE_RNN_MODE = "auto"
# The folder's names (serve/layout.py), as serve/tf1.py reads them from here.
FORMAT_VERSION, KERAS_FILE, SAVED_MODEL_DIR = layout.FORMAT_VERSION, layout.KERAS_FILE, layout.SAVED_MODEL_DIR
VOCAB_FILE, METADATA_FILE = layout.VOCAB_FILE, layout.METADATA_FILE


class ExportError(ValueError):
    """A save path, checkpoint, depth, vocabulary or export folder that cannot be used."""


# ----- reading a run (through train.run_folder, which alone knows the layout) -----
def select_checkpoint(save_path: str, which: str = "best") -> RunCheckpoint:
    """The checkpoint `which` names ('best', 'latest' or 'ckpt-N'), its tensors checked."""
    try:
        return RunFolder(save_path).select(which, check=checkpoint.check_tensors)
    except RunFolderError as error:
        raise ExportError(str(error)) from None


def describe_weights(progress: Progress, test_rule: str = "after_training") -> Dict:
    """Where the weights of a checkpoint come from and how they scored (see the module docstring).

    At an epoch boundary (window 0) the weights are those after the last row of `progress.rows`;
    phase-end and final checkpoints repeat the weights of their phase's last epoch. The run's test
    perplexity is given for the weights only when it was scored on them (test_rule 'after_training'
    and a finished run); with 'at_best_valid' it belongs to the best-validation weights.
    """
    best = progress.best or {}
    summary = dict(best_validation=dict(phase=best.get("phase"), epoch=best.get("epoch"),
                                        valid_perplexity=best.get("valid"), test_perplexity=best.get("test"),
                                        exact_test_perplexity=best.get("exact_test")))
    if progress.window or not progress.rows:
        return dict(summary, phase=progress.phase, epoch=progress.epoch + 1,
                    epoch_complete=False, windows_done=progress.window,
                    is_best_validation=False, train_perplexity=None, valid_perplexity=None)
    row = progress.rows[-1]
    summary.update(phase=row["phase"], epoch=row["epoch"], epoch_complete=True,
                   is_best_validation=holds_best_weights(progress), train_perplexity=row.get("train_perplexity"),
                   valid_perplexity=row.get("valid_perplexity"))
    final = progress.final or {}
    for key in ("test_perplexity", "exact_test_perplexity"):
        if progress.finished and test_rule == "after_training" and final.get(key) is not None:
            summary[key] = final[key]
    return summary


def load_checkpoint_model(config: Config, chosen: RunCheckpoint,
                          depth: Optional[int] = None) -> Tuple[lm.LanguageModel, int]:
    """A depth-`depth` LanguageModel (rnn_mode 'auto') with the checkpoint's weights, and its depth."""
    model_depth = chosen.progress.model_depth
    if not model_depth:
        raise ExportError(f"Checkpoint {chosen.name} holds no model yet (model_depth 0).")
    depth = model_depth if depth is None else depth
    if not 1 <= depth <= model_depth:
        raise ExportError(f"--depth={depth} is outside 1..{model_depth}: checkpoint {chosen.name} "
                          f"holds a depth-{model_depth} model.")
    model = build_model(dataclasses.replace(config, rnn_mode=INFERENCE_RNN_MODE), depth)
    try:
        checkpoint.restore_model(chosen.prefix, model)
    except (AssertionError, KeyError, ValueError, tf.errors.OpError) as error:
        raise ExportError(f"Checkpoint {chosen.name} does not fit the run's config: {error}") from None
    return model, depth


def run_vocabulary(save_path: str, vocab_size: int, data_dir: Optional[str] = None) -> List[str]:
    """The run's vocabulary as a list indexed by id: the run folder's own copy, or, for a run from
    before runs kept one, rebuilt from the training file in `data_dir`."""
    try:
        words = RunFolder(save_path).read_vocabulary()
    except RunFolderError as error:
        raise ExportError(str(error)) from None
    if words is None:
        if not data_dir:
            raise ExportError(f"{save_path} keeps no vocabulary (a run from before runs kept one): pass "
                              f"--data_path with the corpus it was trained on.")
        words = training_vocabulary(data_dir, vocab_size)
    if len(words) != vocab_size:
        raise ExportError(f"The vocabulary of {save_path} has {len(words)} words but the model has "
                          f"vocab_size={vocab_size}.")
    return words


def training_vocabulary(data_dir: str, vocab_size: int) -> List[str]:
    """A vocabulary rebuilt from the training file in `data_dir`, as a list indexed by id."""
    words = ptb.read_words(os.path.join(data_dir, ptb.FILE_NAMES["train"]))
    vocabulary = ptb.build_vocabulary(words)
    if len(vocabulary) != vocab_size:
        raise ExportError(f"The training file in {data_dir} gives {len(vocabulary)} words but the "
                          f"model has vocab_size={vocab_size}: this is not the corpus it was trained on.")
    return sorted(vocabulary, key=vocabulary.get)


# ----- the SavedModel -----
def write_saved_model(model: lm.LanguageModel, words: List[str], path: str, eos: str = ptb.EOS,
                      unk: str = ptb.UNK) -> None:
    """A SavedModel of `model` with the signatures of `signatures.serving_functions` (needs only
    TensorFlow), the vocabulary `words` as a table inside it.

    A plain `tf.Module` tracks the model's TensorFlow variables once (keras.export.ExportArchive
    would store every weight twice, as a Keras and as a TensorFlow variable).
    """
    module = tf.Module()
    module.model_variables = [weight.value for weight in model.weights]
    try:
        module.vocabulary = signatures.Vocabulary(words, eos, unk)
    except ValueError as error:
        raise ExportError(str(error)) from None
    concrete = {}
    for name, function in signatures.serving_functions(model, module.vocabulary).items():
        setattr(module, name, function)
        concrete[name] = function.get_concrete_function()
    tf.saved_model.save(module, path, signatures=concrete)


# ----- the export folder -----
def export_metadata(config: Config, chosen: RunCheckpoint, save_path: str, depth: int,
                    words: List[str]) -> Dict:
    model_depth = chosen.progress.model_depth
    weights = describe_weights(chosen.progress, config.test_rule)
    return dict(
        source=dict(save_path=os.path.abspath(save_path), checkpoint=chosen.label),
        depth=depth, checkpoint_depth=model_depth, vocab_size=config.vocab_size,
        vocab_sha256=hashlib.sha256(vocabulary_text(words).encode("utf-8")).hexdigest(),
        hidden_size=config.hidden_size, eos=ptb.EOS, unk=ptb.UNK, inference_rnn_mode=INFERENCE_RNN_MODE,
        weights=weights,
        perplexities_note=(f"train/valid perplexities are those of the depth-{model_depth} model the "
                           f"checkpoint holds" + ("" if depth == model_depth else
                                                 f"; the exported depth-{depth} head was not scored")),
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__),
        config=json.loads(config.to_json()))


def _prepare_export_dir(export_dir: str) -> str:
    """A fresh temporary folder beside `export_dir`; refuses to replace a folder that is no export."""
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise ExportError(f"--export_dir {export_dir} exists and is not a folder.")
        if os.listdir(export_dir) and not os.path.isfile(os.path.join(export_dir, layout.METADATA_FILE)):
            raise ExportError(f"--export_dir {export_dir} is a non-empty folder that holds no export; "
                              f"choose another folder.")
    temporary = f"{os.path.abspath(export_dir)}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    return temporary


def write_export(model: lm.LanguageModel, words: List[str], metadata: Dict, export_dir: str,
                 with_tflite: bool = False) -> Dict:
    """Writes the parts into a temporary folder, then moves it to `export_dir` (replacing an earlier
    export there), so an interrupted export never leaves a half-written folder behind. `metadata`
    gains the format version, `files` and `signatures`; returns export.json's content."""
    metadata = dict(metadata, format_version=layout.FORMAT_VERSION, files=layout.files(with_tflite),
                    signatures=sorted(layout.SIGNATURES))
    temporary = _prepare_export_dir(export_dir)
    try:
        keras.saving.save_model(model, os.path.join(temporary, layout.KERAS_FILE))
        write_saved_model(model, words, layout.saved_model_path(temporary), metadata.get("eos", ptb.EOS),
                          metadata.get("unk", ptb.UNK))
        if with_tflite:
            tflite.write_tflite(model, os.path.join(temporary, layout.TFLITE_FILE))
        with open(os.path.join(temporary, layout.VOCAB_FILE), "w", encoding="utf-8") as handle:
            handle.write(vocabulary_text(words))
        with open(os.path.join(temporary, layout.METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
        shutil.rmtree(export_dir, ignore_errors=True)
        os.replace(temporary, export_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return metadata


def read_run_config(save_path: str) -> Config:
    try:
        return RunFolder(save_path).read_config()
    except RunFolderError as error:
        raise ExportError(str(error)) from None


def export_checkpoint(save_path: str, export_dir: str, data_dir: Optional[str] = None, which: str = "best",
                      depth: Optional[int] = None, with_tflite: bool = False) -> Dict:
    """Exports one checkpoint of the run in `save_path` to `export_dir` (with `with_tflite`, also
    model.tflite); returns export.json's content. `data_dir` is needed only for a run that keeps no
    vocabulary of its own (from before 0.3.0)."""
    config = read_run_config(save_path)
    chosen = select_checkpoint(save_path, which)
    model, depth = load_checkpoint_model(config, chosen, depth)
    words = run_vocabulary(save_path, config.vocab_size, data_dir)
    metadata = write_export(model, words, export_metadata(config, chosen, save_path, depth, words), export_dir,
                            with_tflite)
    logging.info("Exported %s (phase %s, epoch %s, depth %d) to %s.", chosen.label,
                 metadata["weights"]["phase"], metadata["weights"]["epoch"], depth, export_dir)
    return metadata
