"""`python -m gradual_rnn upgrade --save_path=DIR`: converts a run folder written by gradual_rnn 0.1.0
(`.npz` checkpoints) to today's tf.train.Checkpoint format (`gradual_rnn.train.upgrade`). The flag
and the folder are checked before TensorFlow loads; nothing changes until every old checkpoint
has been read."""
import json
import os

from absl import flags

from gradual_rnn.cli import common
from gradual_rnn.train.run_folder import RunFolder, RunFolderError


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    flags.DEFINE_string("save_path", None, "The --save_path of a run written by gradual_rnn 0.1.0.",
                        flag_values=values)
    flags.mark_flag_as_required("save_path", flag_values=values)
    return values


def check_folder(folder: RunFolder) -> None:
    """Raises unless the folder is a run with 0.1.0 checkpoints."""
    folder.check_is_run()
    if not folder.legacy_folders():
        raise RunFolderError(folder.nothing_to_upgrade())


def main(arguments, values: flags.FlagValues) -> None:
    common.no_positional_arguments(arguments)
    folder = RunFolder(values.save_path)
    check_folder(folder)
    from gradual_rnn.train import upgrade  # TensorFlow loads here

    converted = upgrade.upgrade_run(values.save_path)
    print(json.dumps(dict(save_path=values.save_path, converted=[os.path.basename(path) for path in converted],
                          kept_in=folder.legacy_kept)))


def expected_errors():
    return (RunFolderError,)


def run_main(argv=None) -> None:
    common.run_command(main, define_flags, expected_errors, argv)
