"""gradual_rnn: the PTB word language model of Zaremba et al. (2014) and Gradual Learning of deep
LSTMs (Aharoni, Rattner & Permuter 2017) on TensorFlow 2 / Keras 3.

    from gradual_rnn import get_config, override, run_training, RunOptions, export_run

Every public name is listed in `__all__`; none shares its name with a module of the package. Names
are loaded on first use: TensorFlow is imported only when a name that needs it is asked for.
"""
import importlib

__version__ = "0.3.0"

_NAMES = {
    "Config": ("gradual_rnn.configs", "Config"),
    "ConfigError": ("gradual_rnn.configs", "ConfigError"),
    "get_config": ("gradual_rnn.configs", "get_config"),
    "override": ("gradual_rnn.configs", "override"),
    "Phase": ("gradual_rnn.phases", "Phase"),
    "DropoutPlan": ("gradual_rnn.phases", "DropoutPlan"),
    "make_phases": ("gradual_rnn.phases", "make_phases"),
    "Corpus": ("gradual_rnn.data.ptb", "Corpus"),
    "load_corpus": ("gradual_rnn.data.ptb", "load_corpus"),
    "RunFolder": ("gradual_rnn.train.run_folder", "RunFolder"),
    "LanguageModel": ("gradual_rnn.nn.language_model", "LanguageModel"),
    "BasicLSTM": ("gradual_rnn.nn.lstm", "BasicLSTM"),
    "VariationalLSTM": ("gradual_rnn.nn.lstm", "VariationalLSTM"),
    "WindowCrossEntropy": ("gradual_rnn.nn.objectives", "WindowCrossEntropy"),
    "Perplexity": ("gradual_rnn.nn.objectives", "Perplexity"),
    "GradualLearning": ("gradual_rnn.train.gradual", "GradualLearning"),
    "gradual_phases": ("gradual_rnn.train.gradual", "gradual_phases"),
    "build_model": ("gradual_rnn.train.models", "build_model"),
    "RunOptions": ("gradual_rnn.train.context", "RunOptions"),
    "TrainingDiverged": ("gradual_rnn.train.context", "TrainingDiverged"),
    "run_training": ("gradual_rnn.train.loop", "train"),
    "export_run": ("gradual_rnn.serve.export", "export_checkpoint"),
    "load": ("gradual_rnn.serve.inference", "load"),
    "ExportedModel": ("gradual_rnn.serve.inference", "ExportedModel"),
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module 'gradual_rnn' has no attribute {name!r}")
    module, attribute = _NAMES[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
