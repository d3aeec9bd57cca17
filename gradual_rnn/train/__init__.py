"""Training: the phase loop, epochs, compiled steps, evaluation, schedules, regularizers, the run
folder and its checkpoints, distribution.

`run_folder` and `progress` need no TensorFlow; the rest does. Import the modules themselves, e.g.
`from gradual_rnn.train import loop` (`loop.train(config, options)` trains a run).
"""
