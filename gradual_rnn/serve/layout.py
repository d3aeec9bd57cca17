"""The layout of an export folder (written by `python -m gradual_rnn export`): the one module that
knows it. TensorFlow-free, so that the commands can name its parts before TensorFlow loads.

    export.json        what was exported (format 2): config, depth, checkpoint, phase, epoch,
                       perplexities, the vocabulary's SHA-256, `files` and `signatures`
    model.keras        the LanguageModel of the exported depth (`keras.saving.load_model`; needs
                       gradual_rnn importable, its layers are registered there)
    saved_model/1/     the TensorFlow SavedModel, version 1 in the `<model>/<version>/` layout that
                       TensorFlow Serving reads (`--model_base_path=.../saved_model`); needs only
                       TensorFlow: the vocabulary is a table inside it
    model.tflite       with `--tflite`: the streaming model (one token id and the state in, the
                       log-probabilities and the state out), for `tf.lite.Interpreter`
    vocab.txt          one word per line; a word's id is its 0-based line number

Format 1 (gradual_rnn 0.3.0) had the SavedModel in `saved_model/` itself, with the id signatures
only; it is refused with a message to export again.
"""
import os
from typing import Dict

FORMAT_VERSION = 2
METADATA_FILE = "export.json"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_VERSION = 1
VOCAB_FILE = "vocab.txt"
TFLITE_FILE = "model.tflite"

# The SavedModel's signatures (gradual_rnn/serve/signatures.py): over ids, and over text.
ID_SIGNATURES = ("initial_state", "step", "score_window", "score", "draw_next")
TEXT_SIGNATURES = ("serving_default", "generate")
SIGNATURES = ID_SIGNATURES + TEXT_SIGNATURES


def saved_model_path(export_dir: str) -> str:
    """`export_dir/saved_model/1`: the folder `tf.saved_model.load` and `saved_model_cli` open."""
    return os.path.join(export_dir, SAVED_MODEL_DIR, str(SAVED_MODEL_VERSION))


def files(tflite: bool = False) -> Dict[str, str]:
    """export.json's `files`: each part of the folder, by role, as a path inside it."""
    parts = dict(keras=KERAS_FILE, saved_model=f"{SAVED_MODEL_DIR}/{SAVED_MODEL_VERSION}", vocabulary=VOCAB_FILE)
    if tflite:
        parts["tflite"] = TFLITE_FILE
    return parts
