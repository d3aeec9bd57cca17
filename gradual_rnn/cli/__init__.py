"""The package's commands, one TensorFlow-free module each (train, export, generate, report, tf1,
upgrade, synthetic): `python -m gradual_rnn COMMAND --flags` or `gradual-rnn COMMAND --flags`
(`python ptb_word_lm.py` is `train`).

Each module has `define_flags(values)`, `main(arguments, values)` and `run_main(argv=None)`, and
runs through `common.run_command`: flags are checked, and bad ones refused with one line, before
TensorFlow loads.
"""
