"""The Keras layers, loss and metric of both references, registered for serialization under the
package `gradual_rnn`.

    from gradual_rnn.nn import VariationalLSTM, LanguageModel, WindowCrossEntropy, Perplexity

The layers know nothing of a run's configuration: `gradual_rnn.train.models.build_model` maps a
`Config` to their constructor arguments.
"""
from gradual_rnn.nn.heads import SoftmaxHead, TiedSoftmaxHead, summed_softmax_cost
from gradual_rnn.nn.language_model import LanguageModel, WordEmbedding, freeze, grow, parameter_count
from gradual_rnn.nn.lstm import BasicLSTM, LSTMState, VariationalLSTM, lstm_recurrence
from gradual_rnn.nn.objectives import Perplexity, WindowCrossEntropy

__all__ = ["BasicLSTM", "LSTMState", "LanguageModel", "Perplexity", "SoftmaxHead", "TiedSoftmaxHead",
           "VariationalLSTM", "WindowCrossEntropy", "WordEmbedding", "freeze", "grow", "lstm_recurrence",
           "parameter_count", "summed_softmax_cost"]
