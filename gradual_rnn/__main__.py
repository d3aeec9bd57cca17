"""`python -m gradual_rnn COMMAND [--flags]` and the `gradual-rnn` console script: runs one command of
`gradual_rnn.cli` (each command's module is imported only when it is named)."""
import importlib
import sys

COMMANDS = {  # each is the module gradual_rnn.cli.<name>
    "train": "Train a model (the same as python ptb_word_lm.py).",
    "export": "Export a run's checkpoint: a .keras model, a SavedModel, the vocabulary.",
    "generate": "Score text with, or generate text from, an export.",
    "report": "Runs beside the published numbers: a markdown table and a figure.",
    "tf1": "Checkpoints of the original TF1 programs: evaluate, export, start a run, write.",
    "upgrade": "Convert a run folder written by gradual_rnn 0.1.0.",
    "synthetic": "The synthetic long-term-dependency benchmarks.",
}


def usage() -> str:
    lines = [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "usage: python -m gradual_rnn COMMAND [--flags]   (COMMAND --help lists its flags)\n" + "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[1] not in COMMANDS:
        sys.exit(f"UsageError: unknown command {argv[1]!r}; choose one of {', '.join(COMMANDS)}.")
    command = importlib.import_module(f"gradual_rnn.cli.{argv[1]}")
    command.run_main([f"{argv[0]} {argv[1]}", *argv[2:]])


if __name__ == "__main__":
    main()
