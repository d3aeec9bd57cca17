"""Gradual learning as data: a pure function from a config to the list of training phases.

Gradual Learning (GL, Aharoni et al. 2017, §3.1): phase k trains a depth-k network on the cost of
head k, after growing the depth-(k-1) network of phase k-1 by one layer. Without GL one phase trains
the whole network. Layer-wise adjusted dropout (LAD, §3.3) is the per-phase, per-layer keep table
of the config; each phase carries the row it trains with as its `dropout` plan.

TensorFlow-free: the phases of a run can be listed (and a run folder checked) before TensorFlow loads.
"""
import dataclasses
from typing import List, Tuple

from gradual_rnn.configs import Config


@dataclasses.dataclass(frozen=True)
class DropoutPlan:
    """What a training call drops, fixed per phase (the layers read these four fields).

    style 'zaremba': per-element dropout on the embedding and on each layer's output.
    style 'variational': per-element dropout on the embedding; per-layer masks (output and fed-back
    state, Gal & Ghahramani) passed to the call.
    """

    style: str
    keep_embed: float
    keep_output: Tuple[float, ...]
    keep_state: Tuple[float, ...]

    @classmethod
    def for_depth(cls, config: Config, depth: int) -> "DropoutPlan":
        """Row `depth` of the config's keep tables (the phase that trains layers 1..depth)."""
        return cls(config.dropout_style, config.keep_prob_embed, config.keep_output[depth - 1],
                   config.keep_state[depth - 1])

    @property
    def is_identity(self) -> bool:
        return self.keep_embed >= 1.0 and all(k >= 1.0 for k in self.keep_output + self.keep_state)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One learning phase: all that differs from phase to phase."""

    index: int  # 1-based position in the run
    depth: int  # layers 1..depth are computed; head `depth` gives the cost
    epochs: int
    dropout: DropoutPlan  # what training drops in this phase (row `depth` of the keep tables)
    trainable_layers: Tuple[int, ...]  # 0-based LSTM layers that train (embedding and heads always do)
    grows_model: bool  # True when the phase starts by adding a layer to the previous phase's model

    @property
    def frozen_layers(self) -> Tuple[int, ...]:
        return tuple(index for index in range(self.depth) if index not in self.trainable_layers)


def make_phases(config: Config) -> List[Phase]:
    """The phases of a run: one per layer with gradual learning, otherwise one for the whole net."""
    if not config.gradual:
        depth = config.num_layers
        return [Phase(1, depth, config.max_epochs, DropoutPlan.for_depth(config, depth),
                      tuple(range(depth)), grows_model=False)]
    phases = []
    for depth in range(1, config.num_layers + 1):
        is_last = depth == config.num_layers
        epochs = config.max_epochs if is_last or config.layer_epochs is None else config.layer_epochs
        trainable = (depth - 1,) if config.freeze_lower_layers else tuple(range(depth))
        phases.append(Phase(depth, depth, epochs, DropoutPlan.for_depth(config, depth), trainable,
                            grows_model=depth > 1))
    return phases
