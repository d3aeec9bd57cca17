"""The tiny configuration and runs the training tests share."""
import dataclasses

from gradual_rnn import configs
from gradual_rnn.train import checkpoint, loop
from gradual_rnn.train.context import RunOptions
from gradual_rnn.train.run_folder import RunFolder


def tiny_config(**changes):
    base = configs.Config(name="tiny", num_layers=2, hidden_size=8, num_steps=5, batch_size=4,
                          vocab_size=41, init_scale=0.1, max_epochs=2, full_lr_epochs=1,
                          test_num_steps=1, seed=7)
    return dataclasses.replace(base, **changes)


def run_tiny(tmp_path, corpus, config, name, **options):
    """Trains `config` on `corpus` in the run folder tmp_path/name; returns the results."""
    run_options = RunOptions(data_dir="", save_path=str(tmp_path / name), **options)
    return loop.train(config, run_options, corpus)


def final_weights(tmp_path, name):
    """Every tensor of the newest complete checkpoint of the run folder tmp_path/name."""
    return checkpoint.read_tensors(RunFolder(str(tmp_path / name)).complete()[-1])
