"""`SyntheticConfig.validate` and the seeds' parser, in process (no TensorFlow needed); the command
line's helpers are tested in tests/cli/test_synthetic.py."""
import pytest

from gradual_rnn.configs import ConfigError
from gradual_rnn.synthetic.config import SyntheticConfig, parse_seeds


def test_defaults_are_valid_and_frozen():
    config = SyntheticConfig()
    with pytest.raises(AttributeError):
        config.length = 5


@pytest.mark.parametrize("changes, message", [
    (dict(task="parity"), "--task got 'parity'; expected one of adding, multiplication"),
    (dict(hidden_size=0), "--hidden_size got 0; expected an integer >= 1 (units per layer)."),
    (dict(momentum=1.0), "--momentum got 1.0; expected a number in [0, 1)."),
    (dict(clip=0.0), "--clip got 0.0; expected a finite number > 0."),
    (dict(clip=float("inf")), "--clip got inf; expected a finite number > 0."),
    (dict(h_detach=-0.1), "--h_detach got -0.1; expected a number in [0, 1)."),
    (dict(unit="lstm", omega=1.0), "--omega got 1.0; expected it off with --unit=lstm"),
    (dict(q_min=1.0, q_max=0.0), "--q_max got 0.0; expected a finite number >= --q_min (1)."),
    (dict(task="copying", length=10, horizon=30), "--horizon got 30; expected an integer in [1, 29]"),
    (dict(seed=-1), "--seeds got -1; expected integers in [0, 2147483647]."),
    (dict(leak_range=(0.3, 0.2)), "leak_range=(0.3, 0.2): expected 0 <= low <= high < 1."),
])
def test_each_refusal_names_the_flag_the_value_and_what_is_expected(changes, message):
    with pytest.raises(ConfigError) as caught:
        SyntheticConfig(**changes)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_seeds_parse_and_refuse():
    assert parse_seeds("0, 1,2") == (0, 1, 2)
    for bad in ("", "1,", "1.5", "-3", str(2 ** 31)):
        with pytest.raises(ConfigError, match="--seeds got"):
            parse_seeds(bad)
