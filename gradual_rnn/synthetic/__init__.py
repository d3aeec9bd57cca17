"""The synthetic long-term-dependency suite: any task × unit × technique.

* `config` — `SyntheticConfig`, its validation and the names of the choices (no TensorFlow);
* `tasks` — the seeded task generators and `tf.data` streams;
* `units` — the SRN (tanh, rectifier, leaky) and LSTM units, stepped by hand;
* `techniques` — the seed techniques only this suite uses (the shared ones are in `gradual_rnn.train`);
* `run` — the model, the train step factory, evaluation and the run loop;
Its command line is `gradual_rnn.cli.synthetic` (`python -m gradual_rnn synthetic`).
"""
