"""The root API: `gradual_rnn.__all__` names resolve to the same objects whatever was imported before
them (no name collides with a module of the package), and `import gradual_rnn` loads no TensorFlow."""
import json
import subprocess
import sys

import pytest

SUBMODULES = ["gradual_rnn.train", "gradual_rnn.train.loop", "gradual_rnn.serve", "gradual_rnn.serve.export",
              "gradual_rnn.nn", "gradual_rnn.data", "gradual_rnn.cli", "gradual_rnn.configs", "gradual_rnn.phases"]

RESOLVE = """
import importlib, json, sys
first = sys.argv[1] == "modules_first"
if first:
    for module in {modules}:
        importlib.import_module(module)
import gradual_rnn
names = {{}}
for name in gradual_rnn.__all__:
    module, attribute = gradual_rnn._NAMES[name]
    value = getattr(gradual_rnn, name)
    names[name] = value is getattr(importlib.import_module(module), attribute)
after = {{name: getattr(gradual_rnn, name) is value for name, value in
          ((name, getattr(gradual_rnn, name)) for name in gradual_rnn.__all__)}}
print(json.dumps(dict(names=names, after=after, modules=sorted(set(dir(gradual_rnn)) & set(gradual_rnn.__all__)))))
"""


@pytest.mark.slow
def test_every_public_name_resolves_to_its_object_in_either_import_order():
    """Names first in a fresh process; modules first in this one (the suite has imported them)."""
    script = RESOLVE.format(modules=SUBMODULES)
    done = subprocess.run([sys.executable, "-c", script, "names_first"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["names"] and all(result["names"].values()), result["names"]
    assert all(result["after"].values())
    import importlib

    for module in SUBMODULES:
        importlib.import_module(module)
    import gradual_rnn

    assert result["modules"] == sorted(gradual_rnn.__all__)  # __dir__ lists every public name
    for name in gradual_rnn.__all__:
        module, attribute = gradual_rnn._NAMES[name]
        assert getattr(gradual_rnn, name) is getattr(importlib.import_module(module), attribute), name


def test_no_public_name_is_a_module_name():
    import pkgutil

    import gradual_rnn

    modules = {module.name for module in pkgutil.iter_modules(gradual_rnn.__path__)}
    assert {"train", "serve", "nn", "data", "cli", "configs", "phases"} <= modules
    assert not modules & set(gradual_rnn.__all__)
    assert {"run_training", "export_run", "RunOptions", "LanguageModel", "get_config"} <= set(gradual_rnn.__all__)


def test_import_loads_no_tensorflow():
    check = "import sys, gradual_rnn; gradual_rnn.get_config('small'); sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], timeout=120).returncode == 0
