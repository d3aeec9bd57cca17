"""The TF1 checkpoints of the original programs (tests/fixtures/tf1_checkpoints) as the tf1 tests
read them: the numbers the programs recorded, each checkpoint's variables, and raw tensor I/O."""
import functools
import json
import os

import pytest
import tensorflow as tf

from gradual_rnn.serve import tf1

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures",
                        "tf1_checkpoints")
FOLDERS = ("tutorial_2x16", "gl_2x16")
RELATIVE = 1e-5
# Roles (fixture.json's variable_roles) of the variables that are not part of the model.
NON_MODEL_ROLES = ("learning rate", "global step", "global_step", "VariationalDropoutWrapper")


def fixture_file(folder, name):
    with open(os.path.join(FIXTURES, folder, name), encoding="utf-8") as handle:
        return json.load(handle)


def checkpoint_cases():
    return [(folder, entry["prefix"]) for folder in FOLDERS
            for entry in fixture_file(folder, "fixture.json")["checkpoints"]]


def checkpoint_entry(folder, prefix):
    return next(entry for entry in fixture_file(folder, "fixture.json")["checkpoints"] if entry["prefix"] == prefix)


def model_variables(folder, prefix):
    """{name: (shape, dtype)} of the fixture's variables whose role is a model variable."""
    roles = fixture_file(folder, "fixture.json")["variable_roles"]
    return {variable["name"]: (variable["shape"], variable["dtype"])
            for variable in checkpoint_entry(folder, prefix)["variables"]
            if not any(word in roles[variable["name"]] for word in NON_MODEL_ROLES)}


def all_variables(folder, prefix):
    return {variable["name"]: (variable["shape"], variable["dtype"])
            for variable in checkpoint_entry(folder, prefix)["variables"]}


def written_variables(prefix):
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    return {name: (list(shape), dtypes[name].name) for name, shape in reader.get_variable_to_shape_map().items()}


def settings_of(folder, prefix):
    """The evaluation settings the fixture's numbers were computed with."""
    data, expected = fixture_file(folder, "fixture.json")["data"], checkpoint_entry(folder, prefix)["expected"]
    valid = next(value for key, value in expected.items() if key.startswith("valid"))
    test = next(value for key, value in expected.items() if key.startswith("test"))
    return tf1.EvalSettings(valid["batch_size"], valid["num_steps"], test["batch_size"], test["num_steps"],
                            data["valid_prefix"]["count"], data["test_prefix"]["count"])


def expected_perplexities(folder, prefix, num_layers):
    """{depth: {split: perplexity}}; the tutorial's keys have no depth: its one head is the top."""
    result = {}
    for key, value in checkpoint_entry(folder, prefix)["expected"].items():
        split, _, depth = key.partition("/depth")
        result.setdefault(int(depth) if depth else num_layers, {})[split] = value["perplexity"]
    return result


def cost_key(folder, split, depth):
    return split if folder.startswith("tutorial") else f"{split}/depth{depth}"


@functools.lru_cache(maxsize=None)
def imported(folder, prefix):
    """The fixture checkpoint imported once per test process (the tests only read it)."""
    return tf1.import_checkpoint(os.path.join(FIXTURES, folder, prefix))


def raw_tensors(folder, prefix):
    reader = tf.train.load_checkpoint(os.path.join(FIXTURES, folder, prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def save_raw(tensors, prefix):
    """Writes `tensors` with the SaveV2 op, as a TF1 Saver does."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    return prefix


def evaluate_arguments(folder, prefix, ptb_dir):
    """The evaluate command's arguments that reproduce the fixture's numbers."""
    settings = settings_of(folder, prefix)
    return ["evaluate", f"--checkpoint={os.path.join(FIXTURES, folder, prefix)}", f"--data_path={ptb_dir}",
            f"--batch_size={settings.batch_size}", f"--num_steps={settings.num_steps}",
            f"--test_batch_size={settings.test_batch_size}", f"--test_num_steps={settings.test_num_steps}",
            f"--valid_tokens={settings.valid_tokens}", f"--test_tokens={settings.test_tokens}"]


def check_printed(output, folder, prefix):
    """The evaluate command's JSON line holds the program's perplexities of every head."""
    printed = json.loads(output.strip().splitlines()[-1])
    assert printed["program"] == folder.split("_")[0]
    expected = expected_perplexities(folder, prefix, 2)
    assert sorted(printed["depths"]) == sorted(str(depth) for depth in expected)
    for depth, splits in expected.items():
        assert sorted(printed["depths"][str(depth)]) == ["test", "valid"]
        for split, value in splits.items():
            assert printed["depths"][str(depth)][split] == pytest.approx(value, rel=RELATIVE)
