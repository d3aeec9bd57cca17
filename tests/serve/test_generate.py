"""Scoring and generation from an export through the `generate` command's helpers
(`gradual_rnn.serve.generate`) and the inference API: out-of-vocabulary words in `score`, streamed
generation. The export is a tiny untrained model (no training run), written once per test process
and shared by tests/serve/test_inference.py and tests/cli/test_generate.py."""
import dataclasses
import functools
import io
import json
import os
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from gradual_rnn import configs
from gradual_rnn.cli import generate as generate_command
from gradual_rnn.serve import export
from gradual_rnn.serve import generate
from gradual_rnn.serve import inference
from gradual_rnn.train.models import build_model

WORDS = ["<unk>", "<eos>"] + [f"w{i}" for i in range(10)]
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def _write_tiny_export(directory):
    """An export of a seeded, untrained 2-layer model over WORDS (init_scale 1: peaked predictions)."""
    config = configs.Config(name="tiny", num_layers=2, hidden_size=8, num_steps=5, vocab_size=len(WORDS),
                            init_scale=1.0, seed=11)
    model = build_model(config)
    model(tf.zeros([1, 1], tf.int32), model.initial_state(1))
    export.write_export(model, WORDS, dict(vocab_size=len(WORDS), eos="<eos>", unk="<unk>"), directory)
    return directory


@functools.lru_cache(maxsize=None)
def _load(directory):
    return inference.load(directory)


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """The tiny export, written once per test process (the modules that import this fixture share it)."""
    return _write_tiny_export(str(tmp_path_factory.getbasetemp() / "tiny_export"))


@pytest.fixture(scope="session")
def exported(export_dir):
    return _load(export_dir)


def score_text(exported, text, carry_state=True, **options):
    """`text` read as the command reads a file, scored as one stream unless carry_state=False."""
    return exported.score_sentences(generate.split_sentences(text), carry_state, **options)


def options(export_dir, **values):
    defaults = dict(export_dir=export_dir, text_file=None, unknown="unk", carry_state=True, show_sentences=5,
                    json=False, prompt="w1 w2", num_words=20, uncapped=False, temperature=1.0, top_k=0,
                    top_p=1.0, seed=1)
    return types.SimpleNamespace(**dict(defaults, **values))


# ----- out-of-vocabulary words in score -----
@pytest.mark.parametrize("carry_state", [True, False])
def test_drop_scores_the_text_without_the_word_and_unk_differs(exported, carry_state):
    text, without = "w1 w2 zzz w3\nw4 w5 qqq\nw6\n", "w1 w2 w3\nw4 w5\nw6\n"
    dropped = score_text(exported, text, carry_state=carry_state, unknown="drop")
    removed = score_text(exported, without, carry_state=carry_state)
    mapped = score_text(exported, text, carry_state=carry_state, unknown="unk")
    np.testing.assert_allclose(dropped.nll, removed.nll, rtol=1e-6)
    assert dropped.tokens.tolist() == removed.tokens.tolist() == [4, 3, 2]
    assert dropped.unknown.tolist() == mapped.unknown.tolist() == [1, 1, 0]
    assert mapped.tokens.tolist() == [5, 4, 2]
    assert dropped.total_perplexity == pytest.approx(removed.total_perplexity, rel=1e-6)
    assert abs(mapped.total_perplexity - dropped.total_perplexity) > 1e-3 * dropped.total_perplexity
    assert mapped.unknown_mode == "unk" and dropped.unknown_mode == "drop"


def test_default_maps_to_unk(exported):
    default = score_text(exported, "w1 zzz\n")
    assert default.unknown_mode == inference.DEFAULT_UNKNOWN == "unk"
    assert default.nll == pytest.approx(score_text(exported, "w1 <unk>\n").nll)


def test_a_line_left_empty_by_drop_has_no_tokens_and_no_perplexity(exported):
    dropped = score_text(exported, "w1 w2\nzzz qqq", unknown="drop")
    assert dropped.tokens.tolist() == [3, 0] and dropped.unknown.tolist() == [0, 2]
    assert np.isnan(dropped.perplexities()[1])
    assert dropped.total_perplexity == pytest.approx(score_text(exported, "w1 w2\n").total_perplexity)
    alone = score_text(exported, "w1 w2\nzzz qqq", unknown="drop", carry_state=False)
    assert alone.total_perplexity == pytest.approx(dropped.total_perplexity, rel=1e-6)


def test_drop_needs_no_unk_and_refuses_a_text_with_nothing_left(exported):
    without_unk = dataclasses.replace(exported, words=[word for word in exported.words if word != "<unk>"])
    ids, count = without_unk.known_ids(["w1", "zzz", "w2"], "drop")
    assert count == 1 and [without_unk.words[i] for i in ids] == ["w1", "w2"]
    with pytest.raises(inference.ExportUseError, match="Nothing is left to score: all 2 words are outside"):
        score_text(exported, "zzz qqq", unknown="drop")
    with pytest.raises(inference.ExportUseError, match="--unknown must be one of unk, drop, got 'keep'"):
        score_text(exported, "w1\n", unknown="keep")


def test_score_output_and_log_name_the_count_and_what_was_done(export_dir, exported, tmp_path, capsys, caplog,
                                                                 monkeypatch):
    monkeypatch.setattr(inference, "load", lambda directory: exported)
    text = tmp_path / "text.txt"
    text.write_text("w1 w2 zzz\nw3 qqq w4\n")
    generate_command.score(options(export_dir, text_file=str(text), unknown="drop"))
    table = capsys.readouterr().out
    assert table.splitlines()[0] == "sentence\ttokens\tdropped\tperplexity"
    assert ("sentences 2, tokens 6 (words and <eos>), words dropped (not in the vocabulary): 2, "
            "state carried across sentences") in table
    assert ("2 words not in the vocabulary were dropped (--unknown=drop, as training does with its "
            "valid and test splits).") in caplog.text
    generate_command.score(options(export_dir, text_file=str(text), unknown="unk"))
    assert "words mapped to <unk>: 2, state carried" in capsys.readouterr().out
    assert "2 words not in the vocabulary were mapped to <unk> (--unknown=unk; --unknown=drop" in caplog.text
    for mode, action, tokens in (("drop", "dropped", 6), ("unk", "mapped to <unk>", 8)):
        generate_command.score(options(export_dir, text_file=str(text), unknown=mode, json=True))
        summary = json.loads(capsys.readouterr().out)
        assert summary["out_of_vocabulary"] == dict(count=2, handling=mode, action=action)
        assert summary["tokens"] == tokens and summary["sentences"] == 2
        assert [row["out_of_vocabulary"] for row in summary["first_sentences"]] == [1, 1]


def test_json_has_no_nan(export_dir, exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inference, "load", lambda directory: exported)
    text = tmp_path / "text.txt"
    text.write_text("w1 w2\nzzz")
    generate_command.score(options(export_dir, text_file=str(text), unknown="drop", json=True))
    output = capsys.readouterr().out
    assert "NaN" not in output and json.loads(output)["first_sentences"][1]["perplexity"] is None


# ----- streamed, capped generation -----
@pytest.mark.parametrize("words", [["a", "<eos>", "b", "c"], ["<eos>"], ["a", "<eos>", "<eos>", "b", "<eos>"],
                                   ["a"], []])
def test_streamed_text_is_the_rendered_text(words):
    out = io.StringIO()
    assert generate.stream_text(words, out) == len(words)
    assert out.getvalue() == inference.render(words) + "\n"


class Recorder(io.StringIO):
    """stdout that remembers what had been flushed."""

    flushed = ""

    def flush(self):
        self.flushed = self.getvalue()


class RecordingModule:
    """The SavedModel, noting how much of stdout had been flushed whenever a word is drawn."""

    def __init__(self, module, recorder):
        self.module, self.recorder, self.flushed_at_draw = module, recorder, []

    def draw_next(self, *args):
        self.flushed_at_draw.append(len(self.recorder.flushed))
        return self.module.draw_next(*args)

    def __getattr__(self, name):
        return getattr(self.module, name)


def test_generate_writes_each_word_before_drawing_the_next(export_dir, exported, monkeypatch):
    recorder = Recorder()
    recording = RecordingModule(exported.module, recorder)
    monkeypatch.setattr(sys, "stdout", recorder)
    monkeypatch.setattr(inference, "load", lambda directory: dataclasses.replace(exported, module=recording))
    generate_command.generate(options(export_dir, num_words=12, temperature=0.8, top_p=0.9, seed=3))
    flushed_at_draw = recording.flushed_at_draw
    assert len(flushed_at_draw) == 12
    assert all(later > earlier for earlier, later in zip(flushed_at_draw, flushed_at_draw[1:]))
    [generated] = exported.generate(["w1 w2"], 12, temperature=0.8, top_p=0.9, seed=3)
    assert recorder.getvalue() == inference.render(["w1", "w2", *generated.words]) + "\n"
