"""Frozen run configurations: the tutorial's (Zaremba et al. 2014) and the Gradual Learning paper's.

Every configuration is a `Config`; variants are made with `dataclasses.replace` (or `override`),
never by mutation. Keep probabilities are probabilities of *keeping* a unit, as in both references
(the GL code calls them `drop_output` / `drop_state` but uses them as P(keep)).

Keep tables are per phase (row k, for the phase that trains layers 1..k+1) and per layer (column):
row k has k + 1 entries, so a table has `num_layers` rows. A run without gradual learning uses the
last row only.
"""
import dataclasses
import json
import math
from typing import Any, Dict, Optional, Tuple

KeepTable = Tuple[Tuple[float, ...], ...]

DROPOUT_STYLES = ("zaremba", "variational")
LEARNING_RATE_SCHEDULES = ("tutorial", "plateau")
MASK_REFRESH_MODES = ("epoch", "batch")
RNN_MODES = ("auto", "cudnn", "basic", "block")
NEW_LAYER_INITS = ("random", "copy_below")
TEST_RULES = ("after_training", "at_best_valid")
OPTIMIZERS = ("sgd", "nesterov")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SAMPLING_CONVENTIONS = ("text", "printed")


class ConfigError(ValueError):
    """An unknown configuration name or inconsistent configuration values."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides a run's numbers. Saved as JSON beside every checkpoint."""

    name: str
    num_layers: int
    hidden_size: int
    num_steps: int
    batch_size: int = 20
    vocab_size: int = 10000
    # Width of the word embedding; None means hidden_size. Tied weights need it equal to hidden_size.
    embedding_size: Optional[int] = None
    init_scale: float = 0.1
    learning_rate: float = 1.0
    max_grad_norm: float = 5.0
    learning_rate_decay: float = 0.5
    # Tutorial schedule: epochs at the full learning rate before decay starts ("max_epoch").
    full_lr_epochs: int = 4
    # Epochs of the last (entire-network) phase; the whole run when not gradual ("max_max_epoch").
    max_epochs: int = 13
    # Epochs of every earlier gradual phase; None means the same schedule as the last phase.
    layer_epochs: Optional[int] = None
    learning_rate_schedule: str = "tutorial"
    dropout_style: str = "zaremba"
    keep_prob_embed: float = 1.0
    keep_output: KeepTable = ((1.0,), (1.0, 1.0))
    keep_state: KeepTable = ((1.0,), (1.0, 1.0))
    mask_refresh: str = "epoch"
    tied_weights: bool = False
    embedding_bias: bool = False
    forget_bias: float = 0.0
    gradual: bool = False
    new_layer_init: str = "random"
    freeze_lower_layers: bool = False
    rnn_mode: str = "auto"
    test_rule: str = "after_training"
    test_batch_size: int = 1
    test_num_steps: int = 1
    # The GL code keeps one best validation value across phases (faithful); False resets it per phase.
    best_valid_across_phases: bool = True
    seed: int = 123456789
    # Techniques of the other seed papers (all off by default, as in both references).
    optimizer: str = "sgd"  # "sgd", or "nesterov": simplified Nesterov momentum (Bengio et al. §3.5)
    momentum: float = 0.0
    h_detach: float = 0.0  # probability per time step of blocking the h-path gradient (Kanuparthi et al.)
    # Weight of Pascanu et al.'s vanishing-gradient regularizer Ω over every layer's steps; 0 is off.
    omega: float = 0.0
    # Chernodub & Nowicki's sampling-based gradient regularization (Algorithm 1), extended to the
    # stacked LSTM: δ(t) = ∂E/∂h_t of all layers, h = num_steps - 1, W_rec = the recurrent kernels.
    sampling: bool = False
    q_min: float = -1.0
    q_max: float = 1.0
    sampling_convention: str = "text"
    # L1 penalty weight on every layer's outputs h, per sequence (Bengio et al. 2013, §3.4); 0 is off.
    activity_l1: float = 0.0
    # "float32" (both references), "mixed_bfloat16" or "mixed_float16" (with dynamic loss scaling):
    # matrix products in 16 bits, variables, cell state and softmax in float32.
    precision: str = "float32"

    def __post_init__(self):
        validate(self)

    @property
    def embedding_width(self) -> int:
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def defaults_json() -> str:
        """The fields that have defaults, with them, as JSON."""
        return json.dumps({field.name: field.default for field in dataclasses.fields(Config)
                           if field.default is not dataclasses.MISSING})

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        for key in ("keep_output", "keep_state"):
            values[key] = _as_table(values[key])
        return cls(**values)


def _as_table(rows) -> KeepTable:
    return tuple(tuple(float(value) for value in row) for row in rows)


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {choices}.")


def _check_keep(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{name}={value} is not a keep probability in (0, 1].")


def _check_table(name: str, table: KeepTable, num_layers: int) -> None:
    shape = [len(row) for row in table]
    expected = list(range(1, num_layers + 1))
    if shape != expected:
        raise ConfigError(f"{name} has rows of lengths {shape}; with num_layers={num_layers} "
                          f"it needs rows of lengths {expected} (row k for the phase of depth k).")
    for row in table:
        for value in row:
            _check_keep(name, value)


def _check_name(name: str) -> None:
    """A run's name is a plain name: it names the default run folder runs/<name>."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
    if not name or name in (".", "..") or not set(name) <= allowed:
        raise ConfigError(f"name={name!r} is not a plain name: use letters, digits, '_', '-' and '.' "
                          f"(it names the run folder runs/<name>).")


def validate(config: Config) -> None:
    """Raises ConfigError for values no run can use."""
    _check_name(config.name)
    for name in ("num_layers", "hidden_size", "num_steps", "batch_size", "vocab_size", "max_epochs",
                 "test_batch_size", "test_num_steps"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}.")
    if config.embedding_size is not None and config.embedding_size < 1:
        raise ConfigError(f"embedding_size must be at least 1, got {config.embedding_size}.")
    if config.tied_weights and config.embedding_width != config.hidden_size:
        raise ConfigError(f"tied_weights needs embedding_size == hidden_size (every head uses the "
                          f"embedding transposed); got {config.embedding_width} and {config.hidden_size}.")
    if config.layer_epochs is not None and config.layer_epochs < 1:
        raise ConfigError(f"layer_epochs must be at least 1, got {config.layer_epochs}.")
    if config.full_lr_epochs < 0:
        raise ConfigError(f"full_lr_epochs must be at least 0, got {config.full_lr_epochs}.")
    for name in ("init_scale", "learning_rate", "learning_rate_decay"):
        value = getattr(config, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{name} must be a positive finite number, got {value}.")
    if config.learning_rate_decay > 1:
        raise ConfigError(f"learning_rate_decay must be in (0, 1] (a factor that lowers the learning "
                          f"rate), got {config.learning_rate_decay}.")
    if config.seed < 0:
        raise ConfigError(f"seed must be 0 or more, got {config.seed}.")
    if not config.max_grad_norm > 0:  # inf is allowed: no clipping
        raise ConfigError(f"max_grad_norm must be positive (inf: no clipping), got {config.max_grad_norm}.")
    for name in ("momentum", "omega", "activity_l1", "h_detach", "forget_bias", "q_min", "q_max"):
        value = getattr(config, name, 0.0)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value}.")
    _check_choice("dropout_style", config.dropout_style, DROPOUT_STYLES)
    _check_choice("learning_rate_schedule", config.learning_rate_schedule, LEARNING_RATE_SCHEDULES)
    _check_choice("mask_refresh", config.mask_refresh, MASK_REFRESH_MODES)
    _check_choice("rnn_mode", config.rnn_mode, RNN_MODES)
    _check_choice("new_layer_init", config.new_layer_init, NEW_LAYER_INITS)
    _check_choice("test_rule", config.test_rule, TEST_RULES)
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_choice("precision", config.precision, PRECISIONS)
    if not 0.0 <= config.momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {config.momentum}.")
    if config.optimizer == "nesterov" and config.momentum == 0.0:
        raise ConfigError("optimizer='nesterov' needs momentum > 0 (e.g. --set=momentum=0.9).")
    if not config.omega >= 0.0:
        raise ConfigError(f"omega must be 0 (off) or positive, got {config.omega}.")
    if config.omega and config.h_detach:
        raise ConfigError("omega and h_detach cannot be combined (Ω's step Jacobians assume every "
                          "h-path is open).")
    if config.omega and config.precision != "float32":
        raise ConfigError(f"omega needs precision=float32 (it differentiates the steps twice), got "
                          f"{config.precision}.")
    if config.sampling:
        _check_choice("sampling_convention", config.sampling_convention, SAMPLING_CONVENTIONS)
        if config.q_min > config.q_max:
            raise ConfigError(f"q_min={config.q_min} is above q_max={config.q_max}.")
        if config.h_detach or config.omega or config.precision != "float32":
            raise ConfigError("sampling runs in float32 without h_detach and omega (it differentiates "
                              "the steps twice).")
        if config.num_steps < 2:
            raise ConfigError("sampling needs num_steps >= 2 (δ(k) and δ(k-h) are different steps).")
    if not config.activity_l1 >= 0.0:
        raise ConfigError(f"activity_l1 must be 0 (off) or positive, got {config.activity_l1}.")
    if not 0.0 <= config.h_detach < 1.0:
        raise ConfigError(f"h_detach is a probability in [0, 1), got {config.h_detach}.")
    _check_keep("keep_prob_embed", config.keep_prob_embed)
    _check_table("keep_output", config.keep_output, config.num_layers)
    _check_table("keep_state", config.keep_state, config.num_layers)
    if config.dropout_style == "zaremba" and any(v != 1.0 for row in config.keep_state for v in row):
        raise ConfigError("keep_state < 1 needs dropout_style='variational'; Zaremba dropout has no "
                          "recurrent (state) dropout.")
    if config.gradual and config.num_layers < 2:
        raise ConfigError(f"Gradual learning adds one layer per phase and needs num_layers >= 2; "
                          f"{config.name} has num_layers={config.num_layers}.")


def uniform_table(num_layers: int, keep: float) -> KeepTable:
    """A keep table with the same probability for every phase and layer."""
    return tuple(tuple(keep for _ in range(depth)) for depth in range(1, num_layers + 1))


def _tutorial(name, num_layers, hidden_size, num_steps, init_scale, max_grad_norm, full_lr_epochs,
              max_epochs, keep_prob, learning_rate_decay) -> Config:
    """Zaremba et al.'s configs as in the tutorial: per-element dropout, untied softmax."""
    return Config(name=name, num_layers=num_layers, hidden_size=hidden_size, num_steps=num_steps,
                  init_scale=init_scale, max_grad_norm=max_grad_norm, full_lr_epochs=full_lr_epochs,
                  max_epochs=max_epochs, learning_rate_decay=learning_rate_decay,
                  keep_prob_embed=keep_prob, keep_output=uniform_table(num_layers, keep_prob),
                  keep_state=uniform_table(num_layers, 1.0))


def _paper(name, num_layers, num_steps, gradual, layer_epochs, max_epochs, keep_output, keep_state) -> Config:
    """The GL paper's variational LSTM with tied weights and an embedding bias."""
    return Config(name=name, num_layers=num_layers, hidden_size=1500, num_steps=num_steps,
                  init_scale=0.04, max_grad_norm=5.0, learning_rate_decay=0.85,
                  max_epochs=max_epochs, layer_epochs=layer_epochs, learning_rate_schedule="plateau",
                  dropout_style="variational", keep_prob_embed=0.4, keep_output=_as_table(keep_output),
                  keep_state=_as_table(keep_state), tied_weights=True, embedding_bias=True,
                  gradual=gradual, test_rule="at_best_valid", test_num_steps=num_steps)


_GL_LAD = ((0.3,), (0.5, 0.25))
_DEEP_OUTPUT = ((.3,), (.5, .25), (.5, .4, .25), (.5, .5, .4, .25), (.5, .5, .5, .4, .25))
_DEEP_STATE = ((.3,), (.5, .5), (.5, .5, .4), (.5, .5, .5, .4), (.5, .5, .5, .5, .4))

CONFIGS: Dict[str, Config] = {
    "small": _tutorial("small", 2, 200, 20, 0.1, 5.0, 4, 13, 1.0, 0.5),
    "medium": _tutorial("medium", 2, 650, 35, 0.05, 5.0, 6, 39, 0.5, 0.8),
    "large": _tutorial("large", 2, 1500, 35, 0.04, 10.0, 14, 55, 0.35, 1 / 1.15),
    "test": _tutorial("test", 1, 2, 2, 0.1, 1.0, 1, 1, 1.0, 0.5),
    # The paper's reference model: variational LSTM + weight tying + embedding bias, trained
    # traditionally for 160 epochs with keep 0.4 everywhere (the gl config without gradual learning).
    "reference": _paper("reference", 2, 35, False, None, 160, ((0.4,), (0.4, 0.4)), ((0.4,), (0.4, 0.4))),
    "gl": _paper("gl", 2, 35, True, 80, 80, ((0.4,), (0.4, 0.4)), ((0.4,), (0.4, 0.4))),
    "lad": _paper("lad", 2, 35, False, None, 160, ((0.5,), (0.5, 0.25)), ((0.5,), (0.5, 0.25))),
    "gl_lad": _paper("gl_lad", 2, 35, True, 80, 80, _GL_LAD, _GL_LAD),
    "deep_gl_lad": _paper("deep_gl_lad", 5, 25, True, 80, 80, _DEEP_OUTPUT, _DEEP_STATE),
    # WikiText-2 (33,278 words; the vocabulary size is taken from the corpus). Neither reference
    # trained on it; docs/corpora.md says what others used and why these values.
    "small_wikitext2": dataclasses.replace(
        _tutorial("small_wikitext2", 2, 200, 35, 0.1, 5.0, 4, 13, 0.8, 0.5), vocab_size=33278),
    "gl_wikitext2": dataclasses.replace(
        _paper("gl_wikitext2", 2, 35, True, 40, 40, ((0.5,), (0.5, 0.5)), ((0.5,), (0.5, 0.5))),
        hidden_size=650, init_scale=0.05, vocab_size=33278),
}


def get_config(name: str) -> Config:
    """The registered configuration `name`."""
    if name not in CONFIGS:
        raise ConfigError(f"Unknown model config {name!r}; choose one of {', '.join(CONFIGS)}.")
    return CONFIGS[name]


_TABLE_FIELDS = ("keep_output", "keep_state")


def _parse_value(field: dataclasses.Field, text: str, num_layers: int):
    """Parses one `--set` value by the field's type; a single number fills a whole keep table."""
    if field.name in _TABLE_FIELDS:
        value = json.loads(text)
        if isinstance(value, (int, float)):
            return uniform_table(num_layers, float(value))
        if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
            raise ValueError("expected one number or a list of rows, e.g. [[0.5], [0.5, 0.25]]")
        return _as_table(value)
    kind = str(field.type)
    if text.lower() in ("none", "null") and "Optional" in kind:
        return None
    if "bool" in kind:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{field.name} expects true or false, got {text!r}.")
        return text.lower() in ("true", "1")
    if "int" in kind:
        return int(text)
    if "float" in kind:
        return float(text)
    return text


def override(config: Config, assignments: Dict[str, str]) -> Config:
    """A copy of `config` with `field=value` strings applied (from the CLI's --set flags).

    `num_layers` is applied first, so a single number given for a keep table fills a table of the
    new depth, and a uniform keep table that is not given is resized to the new depth.
    """
    fields = {field.name: field for field in dataclasses.fields(Config)}
    unknown = sorted(set(assignments) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown config field(s) {unknown}; known: {', '.join(sorted(fields))}.")
    try:
        num_layers = int(assignments.get("num_layers", config.num_layers))
    except ValueError as error:
        raise ConfigError(f"Cannot parse num_layers={assignments['num_layers']!r}: {error}") from None
    changes = {}
    for name, text in assignments.items():
        try:
            changes[name] = _parse_value(fields[name], text, num_layers)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"Cannot parse {name}={text!r}: {error}") from None
    for name in _TABLE_FIELDS:
        old = getattr(config, name)
        if name not in changes and num_layers != config.num_layers and len({*sum(old, ())}) == 1:
            changes[name] = uniform_table(num_layers, old[0][0])
    return dataclasses.replace(config, **changes)
