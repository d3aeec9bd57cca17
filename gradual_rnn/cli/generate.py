"""`python -m gradual_rnn generate score|generate --export_dir=DIR ...`: scores text with, or generates
text from, an export, through the inference API (`gradual_rnn.load`, which needs only TensorFlow and
the export).

    python -m gradual_rnn generate score --export_dir=exports/small --text_file=ptb.test.txt \
        [--unknown=unk|drop] [--nocarry_state] [--show_sentences=5] [--json]
    python -m gradual_rnn generate generate --export_dir=exports/small --prompt="the company said" \
        --num_words=20 --temperature=1.0 --top_k=0 --top_p=1.0 --seed=1 [--uncapped]

Every flag is checked before TensorFlow loads; generated words are written to stdout as they are drawn.
"""
import itertools
import json
import sys
from typing import Optional

from absl import flags

from gradual_rnn.cli import common
from gradual_rnn.serve import generate as generation
from gradual_rnn.serve import inference

SUBCOMMANDS = ("score", "generate")


def define_flags(values: flags.FlagValues) -> flags.FlagValues:
    define = dict(flag_values=values)
    flags.DEFINE_string("export_dir", None, "Folder written by python -m gradual_rnn export (required).", **define)
    flags.DEFINE_string("text_file", None, "score: the text to score, one sentence per line.", **define)
    flags.DEFINE_enum("unknown", inference.DEFAULT_UNKNOWN, list(inference.UNKNOWN_ACTIONS),
                      "score: what to do with words outside the vocabulary. unk (default): map each to "
                      "<unk> and score it, so every word of the text counts; drop: leave them out, as "
                      "training does with its valid and test splits. On PTB both agree (no such words); "
                      "docs/generate.md says why unk is the default.", **define)
    flags.DEFINE_boolean("carry_state", True, "score: carry the LSTM state from sentence to sentence "
                         "(the references' evaluation); --nocarry_state scores each sentence alone.", **define)
    flags.DEFINE_integer("show_sentences", 5, "score: print the first N per-sentence perplexities "
                         "(-1: all).", **define)
    flags.DEFINE_boolean("json", False, "score: print one JSON object instead of the table.", **define)
    flags.DEFINE_string("prompt", None, "generate: the words to continue.", **define)
    flags.DEFINE_integer("num_words", 20, f"generate: how many words to draw (at most "
                         f"{generation.MAX_NUM_WORDS} unless --uncapped); each is written to stdout as it "
                         f"is drawn.", **define)
    flags.DEFINE_boolean("uncapped", False, f"generate: allow --num_words above {generation.MAX_NUM_WORDS}.",
                         **define)
    flags.DEFINE_float("temperature", 1.0, "generate: softmax temperature; 0 is greedy (argmax).", **define)
    flags.DEFINE_integer("top_k", 0, "generate: draw from the k most likely words only (0: all).", **define)
    flags.DEFINE_float("top_p", 1.0, "generate: draw from the smallest set of most likely words whose "
                       "probability reaches p (nucleus sampling; 1: all), in (0, 1].", **define)
    flags.DEFINE_integer("seed", 1, "generate: seed of the draws, 0 <= seed < 2**63 (a seed gives the same words "
                         "on every machine).", **define)
    return values


def _score_problem(values) -> Optional[str]:
    if not values.text_file:
        return "score needs --text_file: the text to score, one sentence per line."
    if values.show_sentences < -1:
        return f"--show_sentences must be -1 (all) or more, got {values.show_sentences}."
    return None


def _generate_problem(values) -> Optional[str]:
    if not (values.prompt or "").split():
        return 'generate needs --prompt with at least one word, e.g. --prompt="the company said".'
    return (inference.sampling_problem(values.num_words, values.temperature, values.top_k, values.top_p, values.seed)
            or generation.cap_problem(values.num_words, values.uncapped))


def check_command_line(arguments, values) -> str:
    """The subcommand, once its flags are complete and plausible (a UsageError otherwise)."""
    if len(arguments) != 2 or arguments[1] not in SUBCOMMANDS:
        raise common.UsageError(f"give one command, {' or '.join(SUBCOMMANDS)}; got {list(arguments[1:]) or 'none'}.")
    if not values.export_dir:
        raise common.UsageError("--export_dir is required: the folder written by python -m gradual_rnn export.")
    problem = (_score_problem if arguments[1] == "score" else _generate_problem)(values)
    if problem:
        raise common.UsageError(problem)
    return arguments[1]


def score(values) -> None:
    text = generation.read_text(values.text_file)
    exported = inference.load(values.export_dir)
    sentences = generation.split_sentences(text, exported.eos)
    scores = exported.score_sentences(sentences, values.carry_state, unknown=values.unknown)
    shown = len(sentences) if values.show_sentences < 0 else min(values.show_sentences, len(sentences))
    if values.json:
        print(json.dumps(generation.score_summary(scores, exported.unk, values.carry_state, shown)))
    else:
        _print_score_table(scores, exported.unk, values.carry_state, shown)


def _print_score_table(scores, unk: str, carry_state: bool, shown: int) -> None:
    column = "unk" if scores.unknown_mode == "unk" else "dropped"
    print(f"sentence\ttokens\t{column}\tperplexity")
    for index, perplexity in enumerate(scores.perplexities()[:shown]):
        print(f"{index + 1}\t{scores.tokens[index]}\t{scores.unknown[index]}\t{perplexity:.3f}")
    mode = "state carried across sentences" if carry_state else "each sentence alone"
    handling = (f"words mapped to {unk}" if scores.unknown_mode == "unk"
                else "words dropped (not in the vocabulary)")
    print(f"sentences {len(scores.tokens)}, tokens {scores.tokens.sum()} (words and <eos>), "
          f"{handling}: {scores.unknown.sum()}, {mode}")
    print(f"total perplexity {scores.total_perplexity:.3f}")


def generate(values) -> None:
    exported = inference.load(values.export_dir)
    prompt = values.prompt or ""
    steps, unknown = exported.stream([prompt], values.num_words, values.temperature, values.top_k, values.top_p,
                                     values.seed)
    if unknown[0]:
        print(f"({unknown[0]} prompt word(s) mapped to {exported.unk})", flush=True)
    words = (step[0] for step in steps)
    generation.stream_text(itertools.chain(prompt.split(), words), sys.stdout, exported.eos)


def main(arguments, values: flags.FlagValues) -> None:
    command = check_command_line(arguments, values)
    (score if command == "score" else generate)(values)


def expected_errors():
    return (inference.ExportUseError,)


def run_main(argv=None) -> None:
    common.run_command(main, define_flags, expected_errors, argv)
