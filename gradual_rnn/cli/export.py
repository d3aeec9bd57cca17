"""`python -m gradual_rnn export --save_path=RUN --export_dir=DIR [--checkpoint=best|latest|ckpt-N]
[--depth=k] [--tflite] [--data_path=CORPUS]`: exports a run's checkpoint (`gradual_rnn.serve.export`):
model.keras, the SavedModel in saved_model/1/, vocab.txt, export.json, and with --tflite the
streaming model.tflite.

The run folder holds its vocabulary, so no corpus is needed; `--data_path` serves only a run from
before 0.3.0, which keeps none. The flags and the run folder are checked before TensorFlow loads.
"""
import json

from absl import flags

from gradual_rnn.cli import common
from gradual_rnn.data import ptb, sources
from gradual_rnn.train.run_folder import RunFolder, RunFolderError


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    define = dict(flag_values=values)
    flags.DEFINE_string("save_path", None, "The --save_path of a training run.", **define)
    flags.DEFINE_string("export_dir", None, "Folder to write the export to (an earlier export there "
                        "is replaced).", **define)
    flags.DEFINE_string("checkpoint", "best", "best (default: the best-validation weights), latest, "
                        "or a name like ckpt-42.", **define)
    flags.DEFINE_integer("depth", None, "Export layers 1..depth with head depth (default: the "
                         "checkpoint's depth).", lower_bound=1, **define)
    flags.DEFINE_boolean("tflite", False, "Also write model.tflite: one token id and the state in, the "
                         "log-probabilities and the state out (docs/serving.md).", **define)
    flags.DEFINE_string("data_path", None, "Only for a run from before 0.3.0 (no vocabulary of its "
                        "own): the corpus folder it was trained on (never downloads).", **define)
    flags.mark_flags_as_required(["save_path", "export_dir"], flag_values=values)
    return values


def main(arguments, values: flags.FlagValues) -> None:
    common.no_positional_arguments(arguments)
    folder = RunFolder(values.save_path)
    folder.check_is_run()
    data_dir = None
    if values.data_path or not folder.read_vocabulary():
        data_dir = sources.resolve_data_dir(values.data_path, download=False)
    from gradual_rnn.serve import export  # TensorFlow loads here

    metadata = export.export_checkpoint(values.save_path, values.export_dir, data_dir, values.checkpoint,
                                        values.depth, with_tflite=values.tflite)
    print(json.dumps({key: metadata[key] for key in ("source", "depth", "weights", "files")}, indent=2))


def expected_errors():
    errors = [ptb.DataError, RunFolderError]
    if common.loaded("gradual_rnn.serve.export"):
        from gradual_rnn.serve import export

        errors.append(export.ExportError)
    return tuple(errors)


def run_main(argv=None) -> None:
    common.run_command(main, define_flags, expected_errors, argv)
