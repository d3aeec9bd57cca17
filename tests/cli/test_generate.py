"""`python -m gradual_rnn generate score|generate`: the numbers of 0.3.0, one-line refusals of bad flags
before TensorFlow loads, the cap on generated words, an interrupt, and a run into a closed pipe."""
import json
import os
import subprocess
import sys

import pytest

from gradual_rnn.cli import common
from gradual_rnn.cli import generate as generate_command
from gradual_rnn.serve import generate, inference
from serve.test_generate import REPOSITORY, export_dir, exported, options, score_text  # noqa: F401 (fixtures)

# `generate score --json --show_sentences=-1` on GOLDEN_TEXT with the tiny export, as gradual_rnn 0.3.0
# printed it (before the inference API): (carry_state, unknown) -> total, then per-sentence perplexities.
GOLDEN_TEXT = "w1 w2 zzz w3\nw4 qqq w5 w6 w7\n\nw8 w9 w0 <unk>\nw3 w3"
GOLDEN_0_3_0 = {
    (True, "unk"): (15.815163275728565, [14.223006510137632, 12.823928553223103, 27.07996808671794,
                                         17.3740535438573, 23.365829587624987]),
    (True, "drop"): (16.92004004875112, [16.602018721776986, 13.04627049288356, 27.593729854625355,
                                         18.037987382163834, 22.464597426484588]),
    (False, "unk"): (14.948848184408515, [14.223006510137632, 12.699968991363574, 28.689046864286937,
                                          15.602225118519032, 17.908637037342757]),
    (False, "drop"): (15.907819516333058, [16.602018721776986, 13.285953556860255, 28.689046864286937,
                                           15.602225118519032, 17.908637037342757]),
}
GOLDEN_TABLE_TAIL = {  # the last two lines of the table for (carry_state, unknown)
    (True, "unk"): "sentences 5, tokens 19 (words and <eos>), words mapped to <unk>: 2, state carried across "
                   "sentences\ntotal perplexity 15.815",
    (False, "drop"): "sentences 5, tokens 17 (words and <eos>), words dropped (not in the vocabulary): 2, each "
                     "sentence alone\ntotal perplexity 15.908",
}


@pytest.mark.parametrize("carry_state, unknown", sorted(GOLDEN_0_3_0))
def test_score_prints_the_numbers_of_0_3_0(export_dir, exported, tmp_path, capsys, monkeypatch, carry_state,
                                           unknown):
    """The command now scores through the inference API; on the same export and file it prints what
    0.3.0 printed (recorded from that code on this seeded untrained model)."""
    monkeypatch.setattr(inference, "load", lambda directory: exported)
    text = tmp_path / "text.txt"
    text.write_text(GOLDEN_TEXT)
    values = dict(text_file=str(text), carry_state=carry_state, unknown=unknown, show_sentences=-1)
    generate_command.score(options(export_dir, json=True, **values))
    summary = json.loads(capsys.readouterr().out)
    total, sentences = GOLDEN_0_3_0[(carry_state, unknown)]
    assert summary["total_perplexity"] == pytest.approx(total, rel=1e-12)
    assert [row["perplexity"] for row in summary["first_sentences"]] == pytest.approx(sentences, rel=1e-12)
    if (carry_state, unknown) in GOLDEN_TABLE_TAIL:
        generate_command.score(options(export_dir, **values))
        table = capsys.readouterr().out.strip()
        assert table.endswith(GOLDEN_TABLE_TAIL[(carry_state, unknown)])


def test_num_words_above_the_cap_is_refused_unless_uncapped(export_dir):
    cap = generate.MAX_NUM_WORDS
    assert cap == 100_000
    with pytest.raises(common.UsageError) as refused:
        generate_command.check_command_line(["generate", "generate"], options(export_dir, num_words=100_000_000))
    assert str(refused.value) == ("--num_words=100000000 is above the cap of 100000 words; ask for fewer, "
                                  "or add --uncapped to draw that many.")
    generate_command.check_command_line(["generate", "generate"], options(export_dir, num_words=cap))
    generate_command.check_command_line(["generate", "generate"],
                                        options(export_dir, num_words=100_000_000, uncapped=True))


# ----- bad flags -----
BAD_FLAGS = [
    ([], "UsageError: give one command, score or generate; got none."),
    (["bogus"], "UsageError: give one command, score or generate; got ['bogus']."),
    (["score", "generate", "--export_dir=x"], "UsageError: give one command, score or generate; got "
                                              "['score', 'generate']."),
    (["score"], "UsageError: --export_dir is required: the folder written by python -m gradual_rnn export."),
    (["score", "--export_dir=x"], "UsageError: score needs --text_file: the text to score, one sentence per line."),
    (["score", "--export_dir=x", "--text_file=t", "--show_sentences=-2"],
     "UsageError: --show_sentences must be -1 (all) or more, got -2."),
    (["score", "--export_dir=x", "--text_file=t", "--unknown=keep"],
     "UsageError: flag --unknown=keep: value should be one of <unk|drop>"),
    (["generate", "--export_dir=x"],
     'UsageError: generate needs --prompt with at least one word, e.g. --prompt="the company said".'),
    (["generate", "--export_dir=x", "--prompt=a", "--num_words=100000000"],
     "UsageError: --num_words=100000000 is above the cap of 100000 words; ask for fewer, or add --uncapped "
     "to draw that many."),
    (["generate", "--export_dir=x", "--prompt=a", "--num_words=0"],
     "UsageError: --num_words must be at least 1, got 0."),
    (["generate", "--export_dir=x", "--prompt=a", "--num_words=many"],
     "UsageError: flag --num_words=many: invalid literal for int() with base 10: 'many'"),
    (["generate", "--export_dir=x", "--prompt=a", "--temperature=nan"],
     "UsageError: --temperature must be a finite number >= 0 (0 = greedy), got nan."),
    (["generate", "--export_dir=x", "--prompt=a", "--temperature=-1"],
     "UsageError: --temperature must be a finite number >= 0 (0 = greedy), got -1.0."),
    (["generate", "--export_dir=x", "--prompt=a", "--top_k=-1"],
     "UsageError: --top_k must be >= 0 (0 = the whole vocabulary), got -1."),
    (["generate", "--export_dir=x", "--prompt=a", "--top_p=0"],
     "UsageError: --top_p must be in (0, 1] (1 = no nucleus cut), got 0.0."),
    (["generate", "--export_dir=x", "--prompt=a", "--top_p=1.5"],
     "UsageError: --top_p must be in (0, 1] (1 = no nucleus cut), got 1.5."),
    (["generate", "--export_dir=x", "--prompt=a", "--seed=-1"], "UsageError: --seed must be >= 0, got -1."),
    (["generate", "--export_dir=x", "--prompt=a", f"--seed={2 ** 63}"],
     "UsageError: --seed must be below 2**63, got 9223372036854775808."),
    (["generate", "--export_dir=x", "--prompt=a", "--nmu_words=3"],
     "UsageError: unknown flag --nmu_words; did you mean --num_words?"),
    (["score", "--export_dir=nowhere", f"--text_file={__file__}"],
     "ExportUseError: No export at nowhere: the folder does not exist (make one with python -m "
     "gradual_rnn export)."),
    (["score", "--export_dir=nowhere", "--text_file=missing.txt"], "ExportUseError: Text file not found: missing.txt"),
]


def start_tool(*args):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "gradual_rnn", "generate", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, cwd=REPOSITORY)


def test_every_bad_flag_gives_one_line_before_tensorflow_is_imported():
    processes = [(start_tool(*args), message) for args, message in BAD_FLAGS]
    for process, message in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 1 and stdout == ""
        assert stderr.strip() == message
    check = "import sys, gradual_rnn.cli.generate; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], cwd=REPOSITORY, timeout=120).returncode == 0


def test_help_lists_the_flags():
    stdout, _ = start_tool("--help").communicate(timeout=120)
    assert "--unknown: <unk|drop>: score: what to do with words outside the vocabulary" in " ".join(stdout.split())
    assert "--[no]uncapped: generate: allow --num_words above 100000." in stdout
    assert "--top_p: generate: draw from the smallest set of most likely words" in " ".join(stdout.split())


def test_an_interrupt_is_one_line_and_code_3(monkeypatch, capsys):
    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate_command, "generate", interrupted)
    with pytest.raises(SystemExit) as stopped:
        generate_command.run_main(["generate", "generate", "--export_dir=x", "--prompt=a"])
    assert stopped.value.code == common.EXIT_INTERRUPTED == 3
    assert capsys.readouterr().err == "Interrupted.\n"


@pytest.mark.slow
def test_cli_drops_unknown_words_and_streams_into_a_closed_pipe(export_dir, exported, tmp_path, capsys, caplog):
    """`score --unknown=drop --json` (in this process), and `generate` into a pipe whose reader goes
    away after one line (a real process): exit code 1, no traceback."""
    caplog.set_level("INFO", logger="absl")
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 zzz\nw3 w4\n")
    generating = start_tool("generate", f"--export_dir={export_dir}", "--prompt=w1", "--num_words=100000",
                            "--seed=2")
    with pytest.raises(SystemExit) as stopped:
        generate_command.run_main(["generate", "score", f"--export_dir={export_dir}", f"--text_file={text}",
                                   "--unknown=drop", "--json"])
    assert not stopped.value.code
    summary = json.loads(capsys.readouterr().out)
    assert summary["out_of_vocabulary"] == dict(count=1, handling="drop", action="dropped")
    expected = score_text(exported, "w1 w2\nw3 w4\n").total_perplexity
    assert summary["total_perplexity"] == pytest.approx(expected, rel=1e-6)
    assert "1 words not in the vocabulary were dropped (--unknown=drop" in caplog.text
    first_line = generating.stdout.readline()
    generating.stdout.close()
    generating.wait(timeout=300)
    assert first_line.split()[0] == "w1"
    errors = generating.stderr.read()
    assert generating.returncode == 1 and "Traceback" not in errors and "BrokenPipe" not in errors
