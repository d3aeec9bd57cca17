"""The `generate` command's text: reading a text file into sentences, the cap on generated words,
writing words as they are drawn, the JSON summary of a score. Scoring and generation themselves are
the inference API's (`gradual_rnn.serve.inference`, `gradual_rnn.load`).

    python -m gradual_rnn generate score --export_dir=exports/small --text_file=ptb.test.txt \
        [--unknown=unk|drop] [--nocarry_state] [--show_sentences=5] [--json]
    python -m gradual_rnn generate generate --export_dir=exports/small --prompt="the company said" \
        --num_words=20 --temperature=1.0 --top_k=0 --top_p=1.0 --seed=1 [--uncapped]

(the command line is `gradual_rnn.cli.generate`).

A text file is read as the original programs read PTB (docs/reference.md, section 1): each line is
split on whitespace and ends with `<eos>`, the last line only if a newline ends it. The command
scores it as one stream by default (`carry_state`), as the original evaluation does.

The command writes each generated word to stdout as it is drawn; it refuses `--num_words` above
`MAX_NUM_WORDS` unless `--uncapped` is given. TensorFlow-free: the command imports this module, and
checks its flags, before TensorFlow loads.
"""
import math
import os
from typing import Dict, Iterable, List, Optional, TextIO

from gradual_rnn.serve.inference import ExportUseError, Scores, unknown_action

# The most words one `generate` call draws without --uncapped: a few minutes of a PTB model on a CPU.
MAX_NUM_WORDS = 100_000


def split_sentences(text: str, eos: str = "<eos>") -> List[List[str]]:
    """Each line split on whitespace, plus `eos` when a newline ends it (the references' rule)."""
    lines = text.split("\n")
    sentences = [line.split() + [eos] for line in lines[:-1]]
    if lines[-1].split():
        sentences.append(lines[-1].split())
    return sentences


def read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise ExportUseError(f"Text file not found: {path}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ExportUseError(f"{path} cannot be read ({error.strerror or error}).") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ExportUseError(f"{path} is not UTF-8 text ({error}).") from None
    if not text.split():
        raise ExportUseError(f"{path} holds no words.")
    return text


def cap_problem(num_words: int, uncapped: bool = False) -> Optional[str]:
    """The refusal of a `--num_words` above `MAX_NUM_WORDS` (unless `uncapped`), or None."""
    if num_words <= MAX_NUM_WORDS or uncapped:
        return None
    return (f"--num_words={num_words} is above the cap of {MAX_NUM_WORDS} words; ask for fewer, or add "
            f"--uncapped to draw that many.")


def stream_text(words: Iterable[str], out: TextIO, eos: str = "<eos>") -> int:
    """Writes `render(words) + "\\n"` word by word, flushing after each; returns the words written."""
    line_start, count = True, 0
    for word in words:
        if word == eos:
            out.write("\n")
        else:
            out.write(word if line_start else f" {word}")
        line_start = word == eos
        out.flush()
        count += 1
    out.write("\n")
    out.flush()
    return count


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def score_summary(scores: Scores, unk: str, carry_state: bool, shown: int) -> Dict:
    """A JSON-ready summary: totals, the out-of-vocabulary count and handling, the first sentences."""
    rows = [dict(sentence=index + 1, tokens=int(scores.tokens[index]), out_of_vocabulary=int(scores.unknown[index]),
                 perplexity=_finite_or_none(perplexity))
            for index, perplexity in enumerate(scores.perplexities()[:shown])]
    return dict(sentences=len(scores.tokens), tokens=int(scores.tokens.sum()), carry_state=carry_state,
                out_of_vocabulary=dict(count=int(scores.unknown.sum()), handling=scores.unknown_mode,
                                       action=unknown_action(scores.unknown_mode, unk)),
                total_perplexity=_finite_or_none(scores.total_perplexity), first_sentences=rows)
