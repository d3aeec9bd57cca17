"""What every command shares: its flags in a FlagValues of its own (absl; a library import defines no
global flag), one line for a bad flag, and `run_command`, the one map from errors to one line on
stderr and an exit code. TensorFlow-free.

Exit codes of every command: 0 done, 1 an error (one line on stderr), 3 interrupted (a run saved a
checkpoint first; run the same command again to resume).
"""
import difflib
import os
import sys
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from absl import app, flags

from gradual_rnn.configs import ConfigError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 3

Define = Callable[[flags.FlagValues], flags.FlagValues]
Main = Callable[[List[str], flags.FlagValues], None]


class UsageError(ValueError):
    """A command line the command cannot run: an unknown argument, a missing or contradictory flag."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def parse(define: Define, argv: Sequence[str], with_absl_flags: bool = False) -> Tuple[List[str], flags.FlagValues]:
    """(the arguments left, the command's FlagValues); with `with_absl_flags` absl's own flags
    (e.g. --verbosity) are parsed too. A bad flag exits with one line."""
    values = define(flags.FlagValues())
    try:
        rest = values(list(argv), known_only=with_absl_flags)
        if with_absl_flags:
            rest = flags.FLAGS(rest)
    except flags.UnrecognizedFlagError as error:
        close = difflib.get_close_matches(error.flagname, list(values), n=1)
        suggestion = f"; did you mean --{close[0]}?" if close else ""
        sys.exit(f"UsageError: unknown flag --{error.flagname}{suggestion}")
    except flags.Error as error:
        sys.exit("UsageError: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip()))
    return rest, values


HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def print_help(define: Define, summary: str) -> None:
    """The command's docstring and its flags (absl's own --help would list only the global ones)."""
    print((summary or "").strip())
    print("\nFlags:")
    print(define(flags.FlagValues()).get_help())


def describe(error: BaseException, expected: Iterable[type]) -> Optional[Tuple[str, int]]:
    """(one line, exit code) for an expected error, else None. An error class may carry its own
    `exit_code` (Interrupted: 3)."""
    if isinstance(error, KeyboardInterrupt):
        return "Interrupted.", EXIT_INTERRUPTED
    if not isinstance(error, tuple(expected)):
        return None
    return f"{type(error).__name__}: {first_line(error)}", getattr(error, "exit_code", EXIT_ERROR)


def _silence_stdout() -> None:
    """After the reader of stdout went away (e.g. `| head`): nothing more is written to it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(main: Main, define: Define, expected_errors: Callable[[], Iterable[type]],
                argv: Optional[Sequence[str]] = None) -> None:
    """Runs one command: parses its flags (and absl's), calls `main(arguments, values)`, and turns
    an error of `expected_errors()` (asked for when one happens, so that errors of modules that
    load TensorFlow can be named once it is loaded) into one line on stderr and an exit code.
    ConfigError and UsageError are always expected."""

    def guarded(parsed):
        arguments, values = parsed
        try:
            main(arguments, values)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_ERROR)
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 (sorted just below)
            described = describe(error, (ConfigError, UsageError, *expected_errors()))
            if described is None:
                raise
            message, code = described
            print(message, file=sys.stderr, flush=True)
            sys.exit(code)

    arguments = list(sys.argv if argv is None else argv)
    if any(argument in HELP_FLAGS for argument in arguments[1:]):
        try:
            print_help(define, getattr(sys.modules.get(main.__module__), "__doc__", ""))
        except BrokenPipeError:
            _silence_stdout()
        return
    app.run(guarded, argv=arguments, flags_parser=lambda args: parse(define, args, with_absl_flags=True))


def no_positional_arguments(arguments: Sequence[str]) -> None:
    if len(arguments) > 1:
        raise UsageError(f"unexpected arguments {list(arguments[1:])}; every setting is a --flag=value.")


def assignments(items: Sequence[str]) -> Dict[str, str]:
    """`--set` values `name=value` -> {name: value}."""
    parsed = {}
    for item in items:
        name, separator, value = item.partition("=")
        if not separator:
            raise ConfigError(f"--set expects name=value, got {item!r}.")
        parsed[name.strip()] = value.strip()
    return parsed


def loaded(module: str) -> bool:
    """Whether a module has been imported (the errors of TensorFlow's side exist only then)."""
    return module in sys.modules
