"""`python -m gradual_rnn synthetic`: any task × unit × technique on the synthetic long-term benchmarks.

    python -m gradual_rnn synthetic --task=temporal_order --length=50 --unit=srn --clip=1 --omega=2
    python -m gradual_rnn synthetic --task=adding --length=100 --sampling --seeds=0,1,2
    python -m gradual_rnn synthetic --task=copying --length=100 --unit=lstm --h_detach=0.25

Every field of `config.SyntheticConfig` but `seed` and `leak_range` is a flag of the same name;
`--seeds=0,1,2` gives one run per seed and `--logdir` a TensorBoard folder (one subfolder per seed).
Booleans take `--sampling`, `--nosampling` or `--sampling=false` (the older `--no-sampling` too).

Output: per seed, a log line `seed <n>: <JSON result>` (stderr); on stdout, one JSON line, the
summary with the config and every run. Both are strict JSON: a run that diverged has
`"diverged": true` and null errors and accuracy, never a bare NaN; it does not change the exit code.
A run diverges by the package's one rule (`gradual_rnn.train.progress.diverged`): its gradient norm
or loss is not finite, or its loss as a perplexity, exp(loss), is above a hundred times a uniform
guess's (loss > uniform-guess loss + log 100).

Bad flags: one line on stderr naming the flag, the value given and what is expected, and exit
code 1 — checked before TensorFlow is imported. For example:

    ConfigError: --batch_size got 0; expected an integer >= 1 (sequences per minibatch).
"""
import dataclasses
import os
import typing
from typing import List, Optional, Sequence, Tuple

from absl import flags, logging

from gradual_rnn.cli import common
from gradual_rnn.synthetic import config as config_lib

_NOT_FLAGS = ("seed", "leak_range")

_HELP = {
    "task": f"Task: one of {', '.join(config_lib.TASK_NAMES)}.",
    "length": f"T, the sequence length parameter (>= {config_lib.MIN_LENGTH}); copying adds 20 steps.",
    "unit": f"Recurrent unit: one of {', '.join(config_lib.UNITS)}.",
    "hidden_size": "Units per recurrent layer.",
    "num_layers": "Stacked recurrent layers (Ω, Q and the sampling rule look at the first).",
    "initialization": f"SRN initialisation: one of {', '.join(config_lib.INITIALIZATIONS)}.",
    "init_scale": "Standard deviation of the Gaussian initial weights (> 0).",
    "optimizer": f"One of {', '.join(config_lib.OPTIMIZERS)}.",
    "learning_rate": "Learning rate (> 0).",
    "momentum": "Momentum of --optimizer=momentum or nesterov, in [0, 1).",
    "clip": "Clip the gradients' global norm to this (> 0); unset: no clipping.",
    "omega": "Weight of Pascanu et al.'s vanishing-gradient regularizer Ω (SRN units); 0 is off.",
    "omega_squared": "Ω on squared norm ratios, as Pascanu et al.'s code.",
    "l1": "Weight of the L1 penalty on hidden outputs (Bengio et al. §3.4); 0 is off.",
    "h_detach": "h-detach probability per step (Kanuparthi et al.), in [0, 1); 0 is off.",
    "sampling": "Chernodub & Nowicki's sampling-based gradient regularization (SRN units).",
    "q_min": "Lower end of the safe range of the Q-factor.",
    "q_max": "Upper end of the safe range of the Q-factor (>= --q_min).",
    "max_abs_ds": "Skip minibatches with |dS| above this (>= 0); unset: never.",
    "sampling_convention": "text (what the paper's text says) or printed (Algorithm 1 as printed).",
    "horizon": "h of the Q-factor, in [1, input steps - 1]; unset: input steps - 1 (the whole sequence).",
    "batch_size": "Sequences per minibatch.",
    "steps": "Updates per seed (at most).",
    "eval_every": "Updates between validations (and one at the end).",
    "valid_size": "Validation sequences.",
    "test_size": "Test sequences.",
    "stop_when_solved": "Stop a seed once its validation error is below the success threshold.",
}


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    """One absl flag per `SyntheticConfig` field (same name and default), plus --seeds and --logdir."""
    for field in dataclasses.fields(config_lib.SyntheticConfig):
        if field.name not in _NOT_FLAGS:
            _define_flag(values, field.name, _flag_type(field.type), field.default, _HELP[field.name])
    flags.DEFINE_string("seeds", "0", "Comma-separated seeds; one run per seed.", flag_values=values)
    flags.DEFINE_string("logdir", None, "TensorBoard folder (one subfolder per seed).", flag_values=values)
    return values


def _flag_type(annotation):
    """bool, int, float or str; `Optional[X]` gives X."""
    arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
    return arguments[0] if arguments else annotation


class _IntegerParser(flags.IntegerParser):
    """absl's integer parser, whose error says what it expected."""

    def parse(self, argument):
        try:
            return super().parse(argument)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("expected an integer") from None


class _FloatParser(flags.FloatParser):
    """absl's float parser, whose error says what it expected."""

    def parse(self, argument):
        try:
            return super().parse(argument)
        except (TypeError, ValueError, OverflowError):
            raise ValueError("expected a number") from None


def _define_flag(values: flags.FlagValues, name: str, kind, default, help_text: str) -> None:
    if kind is bool:
        flags.DEFINE_boolean(name, default, help_text, flag_values=values)
    elif kind is str:
        flags.DEFINE_string(name, default, help_text, flag_values=values)
    else:
        parser = _IntegerParser() if kind is int else _FloatParser()
        flags.DEFINE(parser, name, default, help_text, serializer=flags.ArgumentSerializer(), flag_values=values)


def legacy_negations(argv: Sequence[str], boolean_names: Sequence[str]) -> List[str]:
    """argparse's `--no-<flag>` spelled as absl's `--no<flag>`, for the boolean flags."""
    renamed = []
    for argument in argv:
        name = argument[len("--no-"):]
        renamed.append(f"--no{name}" if argument.startswith("--no-") and name in boolean_names else argument)
    return renamed


def settings_from_flags(values: flags.FlagValues) -> Tuple[config_lib.SyntheticConfig, Tuple[int, ...], Optional[str]]:
    """(config, seeds, logdir) from the parsed flags; raises `ConfigError` for a bad value. The
    config keeps the default seed (0); each run replaces it with one of `seeds`."""
    fields = {field.name: values[field.name].value for field in dataclasses.fields(config_lib.SyntheticConfig)
              if field.name not in _NOT_FLAGS}
    config = config_lib.SyntheticConfig(**fields)
    seeds = config_lib.parse_seeds(values.seeds)
    for seed in seeds:
        dataclasses.replace(config, seed=seed)  # validates the seed
    if values.logdir and os.path.exists(values.logdir) and not os.path.isdir(values.logdir):
        raise common.UsageError(f"--logdir {values.logdir} exists and is not a folder; name a folder for "
                                f"the TensorBoard logs.")
    return config, seeds, values.logdir


def train_seeds(config: config_lib.SyntheticConfig, seeds: Sequence[int], logdir: Optional[str]):
    """One run per seed; logs each result and prints the summary line. Imports TensorFlow."""
    from gradual_rnn.synthetic import run as run_lib  # here, so that bad flags fail fast without it
    results = []
    for seed in seeds:
        seed_logdir = f"{logdir}/seed_{seed}" if logdir else None
        result = run_lib.run(dataclasses.replace(config, seed=seed), seed_logdir)
        logging.info("seed %d: %s", seed, run_lib.to_json(result))
        results.append(result)
    summary = dict(run_lib.summarize(results), config=dataclasses.asdict(config), runs=results)
    print(run_lib.to_json(summary))
    return summary


def main(arguments, values: flags.FlagValues) -> None:
    common.no_positional_arguments(arguments)
    config, seeds, logdir = settings_from_flags(values)
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.INFO)
    train_seeds(config, seeds, logdir)


def expected_errors():
    return ()


def run_main(argv=None) -> None:
    """Runs the command; `--no-<flag>` (argparse's spelling) is taken for absl's `--no<flag>`."""
    import sys

    booleans = [field.name for field in dataclasses.fields(config_lib.SyntheticConfig) if field.type is bool]
    arguments = legacy_negations(list(sys.argv if argv is None else argv), booleans)
    common.run_command(main, define_flags, expected_errors, arguments)
