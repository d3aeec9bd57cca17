"""The command line of `python -m gradual_rnn.tf1 {evaluate,export,start,write}`, TensorFlow-free: its
flags and every check that needs no TensorFlow (the command, the flags it needs, the window sizes, that
--checkpoint names something on disk), so a bad command line gets its one line in a fraction of a
second. The commands themselves are in `gradual_rnn.serve.tf1`, imported after the checks."""
import json
import os
import sys
from typing import Sequence

from absl import app, flags

from gradual_rnn import command_line

CELLS = ("basic", "block")
COMMANDS = ("evaluate", "export", "start", "write")
CHECKPOINT_SUFFIXES = (".index", ".data-00000-of-00001", ".meta")
# The flags each command needs, in the order they are named when missing.
REQUIRED = dict(evaluate=("checkpoint", "data_path", "batch_size", "num_steps", "test_batch_size", "test_num_steps"),
                export=("checkpoint", "data_path", "export_dir"), start=("checkpoint", "save_path"),
                write=("save_path", "output"))
WINDOW_SIZES = ("batch_size", "num_steps", "test_batch_size", "test_num_steps")


class Tf1CheckpointError(ValueError):
    """A path that holds no TF1 checkpoint, or one whose variables do not form a model we know."""


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    """The commands' flags, in their own FlagValues (no clash with other modules' global flags)."""
    define = dict(flag_values=values)
    flags.DEFINE_string("checkpoint", None, "A TF1 checkpoint: its prefix, or a folder (newest).", **define)
    flags.DEFINE_string("data_path", None, "Folder with ptb.{train,valid,test}.txt.", **define)
    for name, text in (("batch_size", "Valid batch size (the training B)."),
                       ("num_steps", "Valid window length (the training n)."),
                       ("test_batch_size", "Test batch size."), ("test_num_steps", "Test window length."),
                       ("valid_tokens", "Score only the first K ids of ptb.valid.txt."),
                       ("test_tokens", "Score only the first K ids of ptb.test.txt."),
                       ("depth", "export: layers 1..depth with head depth (default: all)."),
                       ("phase", "start: the phase the new run starts at.")):
        flags.DEFINE_integer(name, None, text, **define)
    flags.DEFINE_string("export_dir", None, "export: the folder to write.", **define)
    flags.DEFINE_string("save_path", None, "start: a new run folder; write: the run to read.", **define)
    flags.DEFINE_string("model", None, "start: the config name (default: small / gl by program).", **define)
    flags.DEFINE_multi_string("set", [], "start: a config override name=value (repeatable).", **define)
    flags.DEFINE_float("forget_bias", 0.0, "The forget bias the program added (both use 0.0).", **define)
    flags.DEFINE_string("output", None, "write: the TF1 checkpoint prefix to write.", **define)
    flags.DEFINE_string("run_checkpoint", "best", "write: best, latest or ckpt-N of --save_path.", **define)
    flags.DEFINE_string("program", None, "write: tutorial or gl (default: gl if tied).", **define)
    flags.DEFINE_enum("cell", "basic", list(CELLS), "write: the tutorial's rnn_mode names.", **define)
    flags.DEFINE_boolean("auxiliary", True, "write: also the program's non-model variables.", **define)
    return values


def parse_command_line(argv: Sequence[str], with_absl_flags: bool = False):
    """(positional arguments, FlagValues) of the tf1 command."""
    return command_line.parse(define_flags, argv, with_absl_flags)


def prefix_or_folder(path: str) -> str:
    """`path` when it is a folder, else the checkpoint prefix it names (a prefix, or one of its
    files); raises when it names neither. The folder's own prefix is found with TensorFlow
    (`gradual_rnn.serve.tf1.resolve_prefix`)."""
    if os.path.isdir(path):
        return path
    for suffix in CHECKPOINT_SUFFIXES:
        if path.endswith(suffix) and os.path.exists(path[:-len(suffix)] + ".index"):
            return path[:-len(suffix)]
    if os.path.exists(path + ".index"):
        return path
    raise Tf1CheckpointError(f"{path} is no checkpoint: there is no {path}.index and no folder {path}.")


def check(arguments: Sequence[str], values: flags.FlagValues) -> str:
    """The command named on the command line, once its flags are complete and plausible."""
    command = arguments[1] if len(arguments) > 1 else None
    if command not in COMMANDS or len(arguments) > 2:
        raise app.UsageError(f"Expected one command of {', '.join(COMMANDS)}; got {arguments[1:] or 'none'}.")
    missing = [f"--{name}" for name in REQUIRED[command] if values[name].value is None]
    if missing:
        raise app.UsageError(f"{command} needs {', '.join(missing)}.")
    if command == "evaluate":
        for name in WINDOW_SIZES:
            if values[name].value < 1:
                raise app.UsageError(f"--{name} must be at least 1, got {values[name].value}.")
    if command != "write":
        prefix_or_folder(values.checkpoint)
    return command


def _exit_with(error: BaseException) -> None:
    message = (str(error).strip().splitlines() or [""])[0]
    sys.exit(f"{type(error).__name__}: {message}")


def main(parsed) -> None:
    """Checks the command line, runs one command and prints its result as one JSON line; expected
    failures exit with one line."""
    arguments, values = parsed
    try:
        command = check(arguments, values)
    except (app.UsageError, Tf1CheckpointError) as error:
        _exit_with(error)
    from gradual_rnn.serve import tf1  # TensorFlow loads here

    try:
        result = tf1.RUNNERS[command](values)
    except tf1.EXPECTED_ERRORS as error:
        _exit_with(error)
    print(json.dumps(result))


def run_main() -> None:
    command_line.run(main, define_flags)


if __name__ == "__main__":
    run_main()
