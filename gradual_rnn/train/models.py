"""The config -> model mapping: the `LanguageModel` a run of a `Config` trains (the layers of
`gradual_rnn.nn` take plain arguments and know nothing of the config)."""
from typing import Optional

from gradual_rnn.configs import Config
from gradual_rnn.nn.language_model import LanguageModel


def build_model(config: Config, depth: Optional[int] = None) -> LanguageModel:
    """A language model of `depth` layers (default: all) with the config's sizes and seed."""
    return LanguageModel(config.vocab_size, config.hidden_size, depth or config.num_layers,
                         config.init_scale, embedding_size=config.embedding_width,
                         tied_weights=config.tied_weights, embedding_bias=config.embedding_bias,
                         forget_bias=config.forget_bias, rnn_mode=config.rnn_mode, seed=config.seed,
                         precision=config.precision)
