"""Configs: every registered value against the tables of docs/reference.md, validation errors, --set parsing, JSON."""
import dataclasses
import json

import pytest

from gradual_rnn import configs
from gradual_rnn.configs import ConfigError


def _uniform(num_layers, keep):
    return tuple(tuple(keep for _ in range(depth)) for depth in range(1, num_layers + 1))


# Every field of every registered config, written out (docs/reference.md). A field added to Config
# without a value here fails test_registered_config_values.
_TUTORIAL = dict(batch_size=20, vocab_size=10000, embedding_size=None, learning_rate=1.0,
                 layer_epochs=None, learning_rate_schedule="tutorial", dropout_style="zaremba",
                 mask_refresh="epoch", tied_weights=False, embedding_bias=False, forget_bias=0.0,
                 gradual=False, new_layer_init="random", freeze_lower_layers=False, rnn_mode="auto",
                 test_rule="after_training", test_batch_size=1, test_num_steps=1,
                 best_valid_across_phases=True, seed=123456789, optimizer="sgd", momentum=0.0,
                 h_detach=0.0, omega=0.0, sampling=False, q_min=-1.0, q_max=1.0,
                 sampling_convention="text", activity_l1=0.0, precision="float32")


def _tutorial(name, init_scale, max_grad_norm, num_layers, num_steps, hidden_size, max_epoch,
              max_max_epoch, keep_prob, lr_decay):
    return dict(_TUTORIAL, name=name, init_scale=init_scale, max_grad_norm=max_grad_norm,
                num_layers=num_layers, num_steps=num_steps, hidden_size=hidden_size,
                full_lr_epochs=max_epoch, max_epochs=max_max_epoch, keep_prob_embed=keep_prob,
                keep_output=_uniform(num_layers, keep_prob), keep_state=_uniform(num_layers, 1.0),
                learning_rate_decay=lr_decay)


# Common to the GL paper's configs (docs/reference.md): init 0.04, lr 1.0, decay 0.85, clip 5, B 20,
# keep_prob_embed 0.4, forget_bias 0, tied weights with an embedding bias, 1500 units.
_PAPER = dict(batch_size=20, vocab_size=10000, embedding_size=None, hidden_size=1500,
              init_scale=0.04, learning_rate=1.0, max_grad_norm=5.0, learning_rate_decay=0.85,
              full_lr_epochs=4,  # unused: the paper's configs use the plateau schedule
              learning_rate_schedule="plateau", dropout_style="variational", keep_prob_embed=0.4,
              mask_refresh="epoch", tied_weights=True, embedding_bias=True, forget_bias=0.0,
              new_layer_init="random", freeze_lower_layers=False, rnn_mode="auto",
              test_rule="at_best_valid", test_batch_size=1, best_valid_across_phases=True,
              seed=123456789, optimizer="sgd", momentum=0.0, h_detach=0.0, omega=0.0, sampling=False, q_min=-1.0, q_max=1.0,
                 sampling_convention="text", activity_l1=0.0, precision="float32")


def _paper(name, num_layers, num_steps, gradual, layer_epochs, max_epochs, keep_output, keep_state):
    return dict(_PAPER, name=name, num_layers=num_layers, num_steps=num_steps, gradual=gradual,
                layer_epochs=layer_epochs, max_epochs=max_epochs, keep_output=keep_output,
                keep_state=keep_state, test_num_steps=num_steps)


_POINT_FOUR = ((0.4,), (0.4, 0.4))
_LAD = ((0.5,), (0.5, 0.25))
_GL_LAD = ((0.3,), (0.5, 0.25))
_DEEP_OUTPUT = ((0.3,), (0.5, 0.25), (0.5, 0.4, 0.25), (0.5, 0.5, 0.4, 0.25),
                (0.5, 0.5, 0.5, 0.4, 0.25))
_DEEP_STATE = ((0.3,), (0.5, 0.5), (0.5, 0.5, 0.4), (0.5, 0.5, 0.5, 0.4), (0.5, 0.5, 0.5, 0.5, 0.4))

EXPECTED = {
    #                  name      init  clip  L  n    H     max_epoch max_max keep  decay
    "small": _tutorial("small", 0.1, 5.0, 2, 20, 200, 4, 13, 1.0, 0.5),
    "medium": _tutorial("medium", 0.05, 5.0, 2, 35, 650, 6, 39, 0.5, 0.8),
    "large": _tutorial("large", 0.04, 10.0, 2, 35, 1500, 14, 55, 0.35, 1 / 1.15),
    "test": _tutorial("test", 0.1, 1.0, 1, 2, 2, 1, 1, 1.0, 0.5),
    #                        name    L  n   GL     phase ep. last ep.
    "reference": _paper("reference", 2, 35, False, None, 160, _POINT_FOUR, _POINT_FOUR),
    "gl": _paper("gl", 2, 35, True, 80, 80, _POINT_FOUR, _POINT_FOUR),
    "lad": _paper("lad", 2, 35, False, None, 160, _LAD, _LAD),
    "gl_lad": _paper("gl_lad", 2, 35, True, 80, 80, _GL_LAD, _GL_LAD),
    "deep_gl_lad": _paper("deep_gl_lad", 5, 25, True, 80, 80, _DEEP_OUTPUT, _DEEP_STATE),
}


def _tiny(**changes):
    """A valid small config to vary in the error tests."""
    values = dict(name="tiny", num_layers=2, hidden_size=8, num_steps=3, vocab_size=50)
    values.update(changes)
    return configs.Config(**values)


# --- The registry against the tables of docs/reference.md. ---

def test_registry_holds_exactly_the_spec_configs():
    """The references' configs, and the two WikiText-2 configs of docs/corpora.md."""
    assert set(configs.CONFIGS) == set(EXPECTED) | {"small_wikitext2", "gl_wikitext2"}


def test_the_wikitext2_configs():
    small, gl = configs.get_config("small_wikitext2"), configs.get_config("gl_wikitext2")
    assert (small.num_layers, small.hidden_size, small.num_steps, small.keep_prob_embed) == (2, 200, 35, 0.8)
    assert small.keep_output == ((0.8,), (0.8, 0.8)) and small.learning_rate_schedule == "tutorial"
    assert (gl.hidden_size, gl.tied_weights, gl.dropout_style, gl.gradual, gl.layer_epochs) == (650, True, "variational", True, 40)
    assert gl.test_rule == "at_best_valid" and small.vocab_size == gl.vocab_size == 33278


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_config_values(name):
    config = configs.get_config(name)
    assert isinstance(config, configs.Config)
    assert dataclasses.asdict(config) == EXPECTED[name]
    # Tables are tuples of tuples (hashable, immutable), not lists.
    assert config.keep_output == EXPECTED[name]["keep_output"]
    assert all(type(row) is tuple for row in config.keep_output + config.keep_state)


def test_configs_are_frozen():
    config = configs.get_config("small")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 3


def test_embedding_width_defaults_to_hidden_size():
    assert configs.get_config("gl").embedding_width == 1500
    assert _tiny(embedding_size=5).embedding_width == 5


@pytest.mark.parametrize("rnn_mode", configs.RNN_MODES)
def test_every_rnn_mode_is_accepted(rnn_mode):
    """'block' names the tutorial's LSTMBlockCell default (the basic path's math)."""
    assert configs.RNN_MODES == ("auto", "cudnn", "basic", "block")
    assert _tiny(rnn_mode=rnn_mode).rnn_mode == rnn_mode
    assert configs.override(configs.get_config("small"), {"rnn_mode": rnn_mode}).rnn_mode == rnn_mode


def test_uniform_table():
    assert configs.uniform_table(3, 0.5) == ((0.5,), (0.5, 0.5), (0.5, 0.5, 0.5))


# --- Clear errors. ---

def test_unknown_name():
    with pytest.raises(ConfigError, match=r"Unknown model config 'huge'.*small.*deep_gl_lad"):
        configs.get_config("huge")
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("keep", [0.0, 1.5, -0.1])
def test_keep_probability_outside_zero_one(keep):
    message = rf"{keep} is not a keep probability in \(0, 1\]"
    with pytest.raises(ConfigError, match="keep_prob_embed=" + message):
        _tiny(keep_prob_embed=keep)
    with pytest.raises(ConfigError, match="keep_output=" + message):
        _tiny(keep_output=((1.0,), (1.0, keep)))
    with pytest.raises(ConfigError, match="keep_state=" + message):
        _tiny(dropout_style="variational", keep_state=((keep,), (1.0, 1.0)))


def test_keep_probability_one_is_allowed():
    assert _tiny(keep_prob_embed=1.0).keep_prob_embed == 1.0


@pytest.mark.parametrize("table", [((1.0,), (1.0, 1.0), (1.0, 1.0, 1.0)),  # too many rows
                                   ((1.0,),),  # too few rows
                                   ((1.0,), (1.0,)),  # row 2 too short
                                   ((1.0, 1.0), (1.0, 1.0))])  # row 1 too long
def test_keep_table_shape_must_match_num_layers(table):
    with pytest.raises(ConfigError, match=r"keep_output has rows of lengths .* num_layers=2"):
        _tiny(keep_output=table)
    with pytest.raises(ConfigError, match=r"keep_state has rows of lengths"):
        _tiny(keep_state=table)


def test_num_layers_change_without_table_change_is_rejected():
    with pytest.raises(ConfigError, match=r"rows of lengths \[1, 2\].*\[1, 2, 3\]"):
        _tiny(num_layers=3)


def test_tied_weights_need_embedding_size_equal_to_hidden_size():
    with pytest.raises(ConfigError, match="tied_weights needs embedding_size == hidden_size.*got 6 and 8"):
        _tiny(tied_weights=True, embedding_size=6)
    assert _tiny(tied_weights=True, embedding_size=8).tied_weights
    assert _tiny(tied_weights=False, embedding_size=6).embedding_width == 6


def test_zaremba_dropout_has_no_state_dropout():
    with pytest.raises(ConfigError, match="keep_state < 1 needs dropout_style='variational'"):
        _tiny(keep_state=((1.0,), (1.0, 0.5)))
    assert _tiny(dropout_style="variational", keep_state=((1.0,), (1.0, 0.5))).keep_state[1][1] == 0.5


def test_gradual_needs_two_layers():
    with pytest.raises(ConfigError, match="needs num_layers >= 2; tiny has num_layers=1"):
        _tiny(gradual=True, num_layers=1, keep_output=((1.0,),), keep_state=((1.0,),))


@pytest.mark.parametrize("changes, message", [
    (dict(rnn_mode="fast"), r"rnn_mode='fast' is not one of \('auto', 'cudnn', 'basic', 'block'\)"),
    (dict(dropout_style="gal"), "dropout_style='gal'"),
    (dict(num_steps=0), "num_steps must be at least 1, got 0"),
    (dict(layer_epochs=0), "layer_epochs must be at least 1"),
    (dict(learning_rate=0.0), "learning_rate must be a positive finite number"),
])
def test_other_invalid_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        _tiny(**changes)


# --- configs.override (the CLI's --set). ---

def test_override_parses_by_field_type():
    small = configs.get_config("small")
    changed = configs.override(small, {"num_steps": "7", "init_scale": "0.02", "learning_rate": "2",
                                       "tied_weights": "true", "gradual": "1", "rnn_mode": "basic",
                                       "seed": "5"})
    assert changed.num_steps == 7 and type(changed.num_steps) is int
    assert changed.init_scale == 0.02 and changed.learning_rate == 2.0
    assert type(changed.learning_rate) is float
    assert changed.tied_weights is True and changed.gradual is True
    assert changed.rnn_mode == "basic" and changed.seed == 5
    assert small.num_steps == 20 and small.tied_weights is False  # the original is untouched


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True),
                                         ("false", False), ("FALSE", False), ("0", False)])
def test_override_bools(text, value):
    assert configs.override(configs.get_config("gl"), {"embedding_bias": text}).embedding_bias is value


def test_override_none_for_optional_fields():
    gl = configs.get_config("gl")
    assert configs.override(gl, {"layer_epochs": "None"}).layer_epochs is None
    assert configs.override(gl, {"layer_epochs": "12"}).layer_epochs == 12
    small = configs.get_config("small")
    assert configs.override(small, {"embedding_size": "64"}).embedding_size == 64
    assert configs.override(configs.override(small, {"embedding_size": "64"}),
                            {"embedding_size": "null"}).embedding_size is None


def test_override_single_number_fills_keep_table():
    gl = configs.get_config("gl")
    changed = configs.override(gl, {"keep_output": "0.5", "keep_state": "1"})
    assert changed.keep_output == ((0.5,), (0.5, 0.5))
    assert changed.keep_state == ((1.0,), (1.0, 1.0))
    deeper = configs.override(gl, {"num_layers": "3", "keep_output": "0.3"})
    assert deeper.keep_output == ((0.3,), (0.3, 0.3), (0.3, 0.3, 0.3))


def test_override_json_keep_table():
    changed = configs.override(configs.get_config("gl"), {"keep_state": "[[0.3], [0.5, 0.25]]"})
    assert changed.keep_state == ((0.3,), (0.5, 0.25))


def test_override_num_layers_resizes_uniform_tables():
    medium = configs.override(configs.get_config("medium"), {"num_layers": "3"})
    assert medium.num_layers == 3
    assert medium.keep_output == ((0.5,), (0.5, 0.5), (0.5, 0.5, 0.5))
    assert medium.keep_state == ((1.0,), (1.0, 1.0), (1.0, 1.0, 1.0))
    shallow = configs.override(configs.get_config("gl"), {"num_layers": "1", "gradual": "false"})
    assert shallow.keep_output == shallow.keep_state == ((0.4,),)


def test_override_num_layers_with_a_non_uniform_table_is_rejected():
    with pytest.raises(ConfigError, match="keep_output has rows of lengths"):
        configs.override(configs.get_config("lad"), {"num_layers": "3"})


def test_override_unknown_field():
    with pytest.raises(ConfigError, match=r"Unknown config field\(s\) \['hidden', 'layers'\]"):
        configs.override(configs.get_config("small"), {"layers": "3", "hidden": "10"})


@pytest.mark.parametrize("assignment", [{"num_steps": "abc"}, {"init_scale": "big"},
                                        {"tied_weights": "yes"}, {"keep_output": "[0.5"},
                                        {"keep_output": "[0.5, 0.25]"}, {"keep_state": "[[null], [1, 1]]"},
                                        {"num_layers": "three"}])
def test_override_unparsable_values_raise_config_error(assignment):
    name = next(iter(assignment))
    with pytest.raises(ConfigError, match=name):
        configs.override(configs.get_config("gl"), assignment)


def test_override_result_is_validated():
    with pytest.raises(ConfigError, match="keep_prob_embed=1.5"):
        configs.override(configs.get_config("gl"), {"keep_prob_embed": "1.5"})


# --- JSON. ---

@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_round_trip(name):
    config = configs.get_config(name)
    text = config.to_json()
    assert json.loads(text)["name"] == name
    restored = configs.Config.from_json(text)
    assert restored == config
    assert hash(restored) == hash(config)  # tables came back as tuples
    assert restored.to_json() == text


def test_json_round_trip_of_a_variant():
    variant = dataclasses.replace(_tiny(embedding_size=6, layer_epochs=3, learning_rate_decay=1 / 1.15),
                                  seed=7)
    assert configs.Config.from_json(variant.to_json()) == variant


def test_from_json_validates():
    values = json.loads(_tiny().to_json())
    values["keep_prob_embed"] = 0.0
    with pytest.raises(ConfigError, match="keep_prob_embed"):
        configs.Config.from_json(json.dumps(values))
