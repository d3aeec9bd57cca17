"""`python -m gradual_rnn tf1 COMMAND`: the TF1 checkpoints of the original programs (the TensorFlow
PTB tutorial and the Gradual Learning code): score one with the programs' own evaluation rules,
export it, start a run from it, or write a run's model back as one (`gradual_rnn.serve.tf1`).

    python -m gradual_rnn tf1 evaluate --checkpoint=PREFIX_OR_DIR --data_path=DIR --batch_size=B \
        --num_steps=N --test_batch_size=B --test_num_steps=N [--valid_tokens=K] [--test_tokens=K]
    python -m gradual_rnn tf1 export --checkpoint=PREFIX_OR_DIR --data_path=DIR --export_dir=DIR [--depth=k]
    python -m gradual_rnn tf1 start --checkpoint=PREFIX_OR_DIR --save_path=NEW_RUN [--model=gl] [--phase=2] \
        [--set=name=value ...]
    python -m gradual_rnn tf1 write --save_path=RUN [--run_checkpoint=best] --output=DIR/model \
        [--program=tutorial|gl] [--cell=basic|block] [--noauxiliary]

The result is printed as one JSON line. Every check that needs no TensorFlow comes before it loads:
the command, the flags it needs and their ranges, that --checkpoint names something on disk, the
PTB folder, the config name and --set syntax, the run folder and the output of `write`.
"""
import json
from typing import Callable, Dict

from absl import flags

from gradual_rnn import configs
from gradual_rnn.cli import common
from gradual_rnn.data import ptb
from gradual_rnn.serve.tf1_format import CELLS, PROGRAMS, Tf1CheckpointError, check_output, prefix_or_folder
from gradual_rnn.train.run_folder import RunFolder, RunFolderError

COMMANDS = ("evaluate", "export", "start", "write")
# The flags each command needs, in the order they are named when missing.
REQUIRED = dict(evaluate=("checkpoint", "data_path", "batch_size", "num_steps", "test_batch_size", "test_num_steps"),
                export=("checkpoint", "data_path", "export_dir"), start=("checkpoint", "save_path"),
                write=("save_path", "output"))


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    define = dict(flag_values=values)
    flags.DEFINE_string("checkpoint", None, "A TF1 checkpoint: its prefix, one of its files, or a folder "
                        "(its newest).", **define)
    flags.DEFINE_string("data_path", None, "evaluate, export: the folder with ptb.{train,valid,test}.txt.",
                        **define)
    for name, text in (("batch_size", "evaluate: the valid batch size (the training B)."),
                       ("num_steps", "evaluate: the valid window length (the training n)."),
                       ("test_batch_size", "evaluate: the test batch size."),
                       ("test_num_steps", "evaluate: the test window length."),
                       ("valid_tokens", "evaluate: score only the first K ids of ptb.valid.txt."),
                       ("test_tokens", "evaluate: score only the first K ids of ptb.test.txt."),
                       ("depth", "export: layers 1..depth with head depth (default: all)."),
                       ("phase", "start: the phase the new run starts at (default 1).")):
        flags.DEFINE_integer(name, None, text, lower_bound=1, **define)
    flags.DEFINE_string("export_dir", None, "export: the folder to write.", **define)
    flags.DEFINE_string("save_path", None, "start: a new run folder; write: the run to read.", **define)
    flags.DEFINE_string("model", None, "start: the config name (default: small for the tutorial, gl for "
                        "the GL code).", **define)
    flags.DEFINE_multi_string("set", [], "start: a config override name=value (repeatable).", **define)
    flags.DEFINE_float("forget_bias", 0.0, "The forget bias the program added (both use 0.0).", **define)
    flags.DEFINE_string("output", None, "write: the TF1 checkpoint prefix to write.", **define)
    flags.DEFINE_string("run_checkpoint", "best", "write: best, latest or ckpt-N of --save_path.", **define)
    flags.DEFINE_enum("program", None, list(PROGRAMS), "write: whose names (default: gl if the model is "
                      "tied, else tutorial).", **define)
    flags.DEFINE_enum("cell", "basic", list(CELLS), "write: the tutorial's rnn_mode names.", **define)
    flags.DEFINE_boolean("auxiliary", True, "write: also the program's non-model variables.", **define)
    return values


# ----- the checks before TensorFlow -----
def _check_checkpoint_and_data(values: flags.FlagValues) -> None:
    prefix_or_folder(values.checkpoint)
    ptb.check_directory(values.data_path)


def _check_start(values: flags.FlagValues) -> None:
    prefix_or_folder(values.checkpoint)
    if values.model is not None:
        configs.get_config(values.model)
    common.assignments(values.set)


def _check_write(values: flags.FlagValues) -> None:
    RunFolder(values.save_path).check_is_run()
    check_output(values.output)


CHECKS = dict(evaluate=_check_checkpoint_and_data, export=_check_checkpoint_and_data, start=_check_start,
              write=_check_write)


def check(arguments, values: flags.FlagValues) -> str:
    """The command named on the command line, once its flags are complete and plausible."""
    command = arguments[1] if len(arguments) > 1 else None
    if command not in COMMANDS or len(arguments) > 2:
        raise common.UsageError(f"Expected one command of {', '.join(COMMANDS)}; got {arguments[1:] or 'none'}.")
    missing = [f"--{name}" for name in REQUIRED[command] if values[name].value is None]
    if missing:
        raise common.UsageError(f"{command} needs {', '.join(missing)}.")
    CHECKS[command](values)
    return command


# ----- the commands: flags -> typed arguments (TensorFlow loads in each) -----
def evaluate(values: flags.FlagValues) -> Dict:
    from gradual_rnn.serve import tf1

    settings = tf1.EvalSettings(values.batch_size, values.num_steps, values.test_batch_size, values.test_num_steps,
                                values.valid_tokens, values.test_tokens)
    return tf1.evaluate_checkpoint(values.checkpoint, values.data_path, settings, values.forget_bias)


def export(values: flags.FlagValues) -> Dict:
    from gradual_rnn.serve import tf1

    return tf1.export_checkpoint(values.checkpoint, values.data_path, values.export_dir, values.depth,
                                 values.forget_bias)


def start(values: flags.FlagValues) -> Dict:
    from gradual_rnn.serve import tf1

    return tf1.start_run(values.checkpoint, values.save_path, values.model, common.assignments(values.set),
                         values.phase or 1, values.forget_bias)


def write(values: flags.FlagValues) -> Dict:
    from gradual_rnn.serve import tf1

    return tf1.write_run_checkpoint(values.save_path, values.output, values.run_checkpoint, values.program,
                                    values.cell, values.auxiliary)


RUNNERS: Dict[str, Callable[[flags.FlagValues], Dict]] = dict(evaluate=evaluate, export=export, start=start,
                                                              write=write)


def main(arguments, values: flags.FlagValues) -> None:
    """Checks the command line, runs one command and prints its result as one JSON line."""
    print(json.dumps(RUNNERS[check(arguments, values)](values)))


def expected_errors():
    errors = [Tf1CheckpointError, ptb.DataError, RunFolderError]
    if common.loaded("gradual_rnn.serve.export"):
        from gradual_rnn.serve import export as export_module

        errors.append(export_module.ExportError)
    return tuple(errors)


def run_main(argv=None) -> None:
    common.run_command(main, define_flags, expected_errors, argv)
