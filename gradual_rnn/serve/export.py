"""Exports a training checkpoint for inference: a `.keras` model, a TensorFlow SavedModel, the vocabulary.

    python -m gradual_rnn export --save_path=runs/small --export_dir=exports/small \
        [--checkpoint=latest|best|ckpt-42] [--depth=k]

Layout of an `--export_dir`::

    model.keras       the LanguageModel (depth k) for `keras.saving.load_model(path, safe_mode=True)`;
                      opening it needs `gradual_rnn` importable (its layers are registered there)
    saved_model/      a TensorFlow SavedModel that needs only TensorFlow (signatures below)
    vocab.txt         one word per line; a word's id is its 0-based line number (the run folder's own
                      copy; a run from before runs kept one rebuilds it from the training file)
    export.json       what was exported: config, depth, checkpoint, phase, epoch, perplexities

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

SavedModel signatures (state is `<float32>[depth, 2, batch, hidden]`, index 0 = c, 1 = h):

    initial_state(batch_size <int32>[])                    -> state (zeros)
    step(ids <int32>[batch, time], state)                  -> log_probs <float32>[batch, time, vocab],
                                                              state
    score_window(ids, targets <int32>[batch, time], state) -> target_log_probs <float32>[batch, time],
                                                              state
    score(ids <int32>[batch, time], lengths <int32>[batch]) -> nll_sum <float64>[batch],
                                                              token_count <float64>[batch],
                                                              target_log_probs <float32>[batch, time-1]

`score` starts from the zero state and scores `ids[b, 1:lengths[b]]`, each from the ids before it;
it needs time >= 2. Every signature takes a dynamic batch and time: the exported model runs with
rnn_mode 'auto', which (with no state mask at inference) is `keras.layers.LSTM` over the whole window
when forget_bias is 0 (every registered config) and otherwise one `BasicLSTM` step at a time in a
graph loop. Both compute the same function as training's LSTM.
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
from gradual_rnn.train import checkpoint
from gradual_rnn.train.models import build_model
from gradual_rnn.train.progress import Progress
from gradual_rnn.train.run_folder import RunCheckpoint, RunFolder, RunFolderError, holds_best_weights, vocabulary_text

FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
VOCAB_FILE = "vocab.txt"
METADATA_FILE = "export.json"
INFERENCE_RNN_MODE = "auto"


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


# ----- serving functions -----
def _state_pairs(state, depth: int):
    return tuple((state[index, 0], state[index, 1]) for index in range(depth))


def _state_tensor(pairs):
    return tf.stack([tf.stack([cell, hidden]) for cell, hidden in pairs])


def _run_one_step_at_a_time(model: lm.LanguageModel, ids, pairs):
    """`model(ids, state)` as a graph loop of one-step calls (any rnn path, any time length)."""
    num_steps = tf.shape(ids)[1]
    logits = tf.TensorArray(tf.float32, size=num_steps)

    def body(step, logits, state_tensor):
        step_ids = ids[:, step][:, tf.newaxis]  # a static time of 1, which the basic path needs
        step_logits, new_pairs = model(step_ids, _state_pairs(state_tensor, model.num_layers))
        return step + 1, logits.write(step, step_logits[:, 0]), _state_tensor(new_pairs)

    _, logits, state = tf.while_loop(lambda step, *_: step < num_steps, body,
                                     (tf.constant(0), logits, _state_tensor(pairs)))
    return tf.transpose(logits.stack(), [1, 0, 2]), _state_pairs(state, model.num_layers)


def run_model(model: lm.LanguageModel, ids, state):
    """logits `[batch, time, vocab]` and new state tensor for ids of any (dynamic) time length."""
    pairs = _state_pairs(state, model.num_layers)
    if all(model_layer.uses_cudnn_path() for model_layer in model.lstm_layers):
        logits, new_pairs = model(ids, pairs)
    else:
        logits, new_pairs = _run_one_step_at_a_time(model, ids, pairs)
    return logits, _state_tensor(new_pairs)


def serving_functions(model: lm.LanguageModel):
    """The signature functions of the SavedModel, by name, each with its input signature."""
    depth, hidden = model.num_layers, model.hidden_size
    state_spec = tf.TensorSpec([depth, 2, None, hidden], tf.float32, name="state")
    ids_spec = tf.TensorSpec([None, None], tf.int32, name="ids")

    def initial_state(batch_size):
        return {"state": tf.zeros(tf.stack([depth, 2, batch_size, hidden]))}

    def step(ids, state):
        logits, new_state = run_model(model, ids, state)
        return {"log_probs": tf.nn.log_softmax(logits), "state": new_state}

    def score_window(ids, targets, state):
        logits, new_state = run_model(model, ids, state)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return {"target_log_probs": -losses, "state": new_state}

    def score(ids, lengths):
        batch_size = tf.shape(ids)[0]
        zeros = initial_state(batch_size)["state"]
        target_log_probs = score_window(ids[:, :-1], ids[:, 1:], zeros)["target_log_probs"]
        mask = tf.sequence_mask(lengths - 1, tf.shape(ids)[1] - 1, tf.float32)
        target_log_probs *= mask
        return {"nll_sum": -tf.reduce_sum(tf.cast(target_log_probs, tf.float64), axis=1),
                "token_count": tf.reduce_sum(tf.cast(mask, tf.float64), axis=1),
                "target_log_probs": target_log_probs}

    return {
        "initial_state": (initial_state, [tf.TensorSpec([], tf.int32, name="batch_size")]),
        "step": (step, [ids_spec, state_spec]),
        "score_window": (score_window, [ids_spec, tf.TensorSpec([None, None], tf.int32, name="targets"),
                                        state_spec]),
        "score": (score, [ids_spec, tf.TensorSpec([None], tf.int32, name="lengths")]),
    }


def write_saved_model(model: lm.LanguageModel, path: str) -> None:
    """A SavedModel of `model` with the signatures of `serving_functions` (needs only TensorFlow).

    A plain `tf.Module` tracks the model's TensorFlow variables once (keras.export.ExportArchive
    would store every weight twice, as a Keras and as a TensorFlow variable).
    """
    module = tf.Module()
    module.model_variables = [weight.value for weight in model.weights]
    signatures = {}
    for name, (function, signature) in serving_functions(model).items():
        setattr(module, name, tf.function(function, input_signature=signature, autograph=False))
        signatures[name] = getattr(module, name).get_concrete_function()
    tf.saved_model.save(module, path, signatures=signatures)


# ----- the export folder -----
def export_metadata(config: Config, chosen: RunCheckpoint, save_path: str, depth: int,
                    words: List[str]) -> Dict:
    model_depth = chosen.progress.model_depth
    weights = describe_weights(chosen.progress, config.test_rule)
    return dict(
        format_version=FORMAT_VERSION, source=dict(save_path=os.path.abspath(save_path),
                                                   checkpoint=chosen.label),
        depth=depth, checkpoint_depth=model_depth, vocab_size=config.vocab_size,
        vocab_sha256=hashlib.sha256(vocabulary_text(words).encode("utf-8")).hexdigest(),
        hidden_size=config.hidden_size, eos=ptb.EOS, unk=ptb.UNK, inference_rnn_mode=INFERENCE_RNN_MODE,
        weights=weights,
        perplexities_note=(f"train/valid perplexities are those of the depth-{model_depth} model the "
                           f"checkpoint holds" + ("" if depth == model_depth else
                                                 f"; the exported depth-{depth} head was not scored")),
        files=dict(keras=KERAS_FILE, saved_model=SAVED_MODEL_DIR, vocabulary=VOCAB_FILE),
        signatures=sorted(("initial_state", "step", "score_window", "score")),
        versions=dict(tensorflow=tf.__version__, keras=keras.__version__),
        config=json.loads(config.to_json()))


def _prepare_export_dir(export_dir: str) -> str:
    """A fresh temporary folder beside `export_dir`; refuses to replace a folder that is no export."""
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise ExportError(f"--export_dir {export_dir} exists and is not a folder.")
        if os.listdir(export_dir) and not os.path.isfile(os.path.join(export_dir, METADATA_FILE)):
            raise ExportError(f"--export_dir {export_dir} is a non-empty folder that holds no export; "
                              f"choose another folder.")
    temporary = f"{os.path.abspath(export_dir)}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    return temporary


def write_export(model: lm.LanguageModel, words: List[str], metadata: Dict, export_dir: str) -> None:
    """Writes the four parts into a temporary folder, then moves it to `export_dir` (replacing an
    earlier export there), so an interrupted export never leaves a half-written folder behind."""
    temporary = _prepare_export_dir(export_dir)
    try:
        keras.saving.save_model(model, os.path.join(temporary, KERAS_FILE))
        write_saved_model(model, os.path.join(temporary, SAVED_MODEL_DIR))
        with open(os.path.join(temporary, VOCAB_FILE), "w", encoding="utf-8") as handle:
            handle.write(vocabulary_text(words))
        with open(os.path.join(temporary, METADATA_FILE), "w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=2, sort_keys=True)
        shutil.rmtree(export_dir, ignore_errors=True)
        os.replace(temporary, export_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def read_run_config(save_path: str) -> Config:
    try:
        return RunFolder(save_path).read_config()
    except RunFolderError as error:
        raise ExportError(str(error)) from None


def export_checkpoint(save_path: str, export_dir: str, data_dir: Optional[str] = None, which: str = "best",
                      depth: Optional[int] = None) -> Dict:
    """Exports one checkpoint of the run in `save_path` to `export_dir`; returns export.json's content.
    `data_dir` is needed only for a run that keeps no vocabulary of its own (from before 0.3.0)."""
    config = read_run_config(save_path)
    chosen = select_checkpoint(save_path, which)
    model, depth = load_checkpoint_model(config, chosen, depth)
    words = run_vocabulary(save_path, config.vocab_size, data_dir)
    metadata = export_metadata(config, chosen, save_path, depth, words)
    write_export(model, words, metadata, export_dir)
    logging.info("Exported %s (phase %s, epoch %s, depth %d) to %s.", chosen.label,
                 metadata["weights"]["phase"], metadata["weights"]["epoch"], depth, export_dir)
    return metadata
