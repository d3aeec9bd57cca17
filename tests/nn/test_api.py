"""The public face of `gradual_rnn.nn`: every name of `__all__` resolves to the object of the module
that defines it, no module of nn/ imports the run's config, and the layers accept exactly the
config's choices they mirror."""
import ast
import pathlib

import pytest

import gradual_rnn.nn
from gradual_rnn import configs
from gradual_rnn.nn import base, heads, language_model, lstm, objectives

NN_FOLDER = pathlib.Path(gradual_rnn.nn.__file__).parent
DEFINED_IN = {"BasicLSTM": lstm, "LSTMState": lstm, "VariationalLSTM": lstm, "lstm_recurrence": lstm,
              "WindowCrossEntropy": objectives, "Perplexity": objectives,
              "LanguageModel": language_model, "WordEmbedding": language_model, "freeze": language_model,
              "grow": language_model, "parameter_count": language_model,
              "SoftmaxHead": heads, "TiedSoftmaxHead": heads, "summed_softmax_cost": heads}


def test_all_names_the_public_layers_and_each_resolves():
    assert sorted(gradual_rnn.nn.__all__) == sorted(DEFINED_IN)
    assert len(set(gradual_rnn.nn.__all__)) == len(gradual_rnn.nn.__all__)
    for name in gradual_rnn.nn.__all__:
        assert getattr(gradual_rnn.nn, name) is getattr(DEFINED_IN[name], name), name


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from gradual_rnn.nn import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(gradual_rnn.nn.__all__)


def _imported_modules(path):
    """Every module an `import` or `from ... import` of the file names (relative ones resolved
    inside `gradual_rnn.nn`), with `from X import a` also giving `X.a` (a submodule or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # from . (gradual_rnn.nn) or from .. (gradual_rnn)
                package = ["gradual_rnn", "nn"][:3 - node.level]
                module = ".".join(package + ([module] if module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


NN_FILES = sorted(NN_FOLDER.glob("*.py"))


@pytest.mark.parametrize("path", NN_FILES, ids=[path.name for path in NN_FILES])
def test_nn_does_not_import_the_run_config(path):
    imported = _imported_modules(path)
    assert not {name for name in imported if name == "gradual_rnn.configs"
                or name.startswith("gradual_rnn.configs.")}, path.name
    assert "gradual_rnn.train" not in {".".join(name.split(".")[:2]) for name in imported}, path.name


def test_import_scan_sees_an_import_of_the_config(tmp_path):
    """Guards the scan: each spelling of the import is found."""
    for line in ("import gradual_rnn.configs", "from gradual_rnn.configs import Config",
                 "from gradual_rnn import configs", "from .. import configs",
                 "import gradual_rnn.configs as configs"):
        path = tmp_path / "module.py"
        path.write_text(f"{line}\n")
        assert "gradual_rnn.configs" in _imported_modules(path), line


def test_layers_accept_the_config_choices_they_mirror():
    """nn/ keeps its own copies of three of the config's tuples (it does not import the config)."""
    assert lstm.RNN_MODES == configs.RNN_MODES
    assert language_model.DROPOUT_STYLES == configs.DROPOUT_STYLES
    for precision in configs.PRECISIONS:
        base.compute_dtype(precision)
    with pytest.raises(ValueError, match="precision='float64'"):
        base.compute_dtype("float64")
