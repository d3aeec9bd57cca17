"""Gradual learning as data: the phases of a config."""
import dataclasses

from gradual_rnn import configs, phases
from gradual_rnn.phases import DropoutPlan


def test_phases_of_deep_gl_lad():
    config = configs.get_config("deep_gl_lad")
    plan = phases.make_phases(config)
    assert [p.depth for p in plan] == [1, 2, 3, 4, 5]
    assert [p.epochs for p in plan] == [80] * 5
    assert plan[2].dropout.keep_output == (.5, .4, .25) and plan[2].dropout.keep_state == (.5, .5, .4)
    assert plan[2].dropout == DropoutPlan.for_depth(config, 3)
    assert plan[4].trainable_layers == (0, 1, 2, 3, 4)
    assert [p.grows_model for p in plan] == [False, True, True, True, True]


def test_phases_without_gradual_and_with_freezing():
    assert [(p.depth, p.epochs) for p in phases.make_phases(configs.get_config("lad"))] == [(2, 160)]
    frozen = phases.make_phases(dataclasses.replace(configs.get_config("gl"), freeze_lower_layers=True))
    assert frozen[1].trainable_layers == (1,) and frozen[1].frozen_layers == (0,)
    small = configs.override(configs.get_config("small"), {"gradual": "true", "layer_epochs": "3"})
    assert [(p.depth, p.epochs) for p in phases.make_phases(small)] == [(1, 3), (2, 13)]
