"""`python -m gradual_rnn report RUN_DIR [RUN_DIR ...] [--out DIR] [--table_name=report.md]
[--figure_name=validation_perplexity.png]`: runs beside the published numbers, as a markdown table and
a figure (`gradual_rnn.serve.report`; needs no TensorFlow, the figure needs matplotlib)."""
import json
import os

from absl import flags

from gradual_rnn.cli import common
from gradual_rnn.serve import report


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    define = dict(flag_values=values)
    flags.DEFINE_string("out", "report", "Folder to write the table and the figure into.", **define)
    flags.DEFINE_string("table_name", report.TABLE_FILE, "File name of the markdown table.", **define)
    flags.DEFINE_string("figure_name", report.FIGURE_FILE, "File name of the PNG figure.", **define)
    return values


def main(arguments, values: flags.FlagValues) -> None:
    if os.path.exists(values.out) and not os.path.isdir(values.out):
        raise common.UsageError(f"--out {values.out} exists and is not a folder; name a folder for the "
                                f"table and the figure.")
    written = report.write_report(arguments[1:], values.out, values.table_name, values.figure_name)
    print(json.dumps(written))


def expected_errors():
    return (report.ReportError, OSError)


def run_main(argv=None) -> None:
    common.run_command(main, define_flags, expected_errors, argv)
