"""`python -m gradual_rnn.upgrade_run --save_path=DIR`: converts a 0.1.0 run folder (`.npz`
checkpoints) to today's tf.train.Checkpoint format; the code is in `gradual_rnn.train.upgrade`. The
flag and the folder are checked before TensorFlow loads."""
import os
import sys

from absl import flags

from gradual_rnn import command_line
from gradual_rnn.train.legacy_layout import legacy_folders, nothing_to_upgrade


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    flags.DEFINE_string("save_path", None, "The --save_path of a run written by gradual_rnn 0.1.0.",
                        flag_values=values)
    flags.mark_flag_as_required("save_path", flag_values=values)
    return values


def check_folder(save_path: str) -> None:
    """Exits with one line unless `save_path` is a run folder with 0.1.0 checkpoints."""
    if not os.path.isfile(os.path.join(save_path, "config.json")):
        sys.exit(f"CheckpointError: {save_path} has no config.json: it is not the --save_path of a training run.")
    if not legacy_folders(save_path):
        sys.exit(f"CheckpointError: {nothing_to_upgrade(save_path)}")


def main(parsed):
    rest, values = parsed
    if len(rest) > 1:
        sys.exit(f"UsageError: unexpected arguments {rest[1:]}.")
    check_folder(values.save_path)
    from gradual_rnn.train import upgrade  # TensorFlow loads here
    upgrade.upgrade_folder_command(values.save_path)


def run_main():
    command_line.run(main, define_flags)


if __name__ == "__main__":
    run_main()
