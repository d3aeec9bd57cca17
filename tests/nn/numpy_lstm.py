"""A NumPy reference of TF1's BasicLSTMCell, and a layer's weights in TF1's layout (used by the tests
of the LSTM layer and of the language model)."""
import numpy as np

from gradual_rnn.nn import lstm


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_basic_lstm(inputs, cell, hidden, kernel, bias, forget_bias, recurrent_mask=None):
    """TF1 BasicLSTMCell over `inputs [batch, time, input]`, in float64.

    kernel `[input + units, 4 units]` on `[x, h]`, bias `[4 units]`, gates in TF1 order (i, j, f, o):
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j);  h' = tanh(c') * sigmoid(o).
    With `recurrent_mask`, the h fed back (and returned) is `h' * recurrent_mask`; the outputs and c
    are not masked. Returns (outputs [batch, time, units], c, h).
    """
    outputs = []
    for step in range(inputs.shape[1]):
        gates = np.concatenate([inputs[:, step], hidden], axis=1) @ kernel + bias
        i, j, f, o = np.split(gates, 4, axis=1)
        cell = cell * _sigmoid(f + forget_bias) + _sigmoid(i) * np.tanh(j)
        hidden = np.tanh(cell) * _sigmoid(o)
        outputs.append(hidden)
        if recurrent_mask is not None:
            hidden = hidden * recurrent_mask
    return np.stack(outputs, axis=1), cell, hidden


def tf1_weights(layer):
    """The layer's variables as one TF1 kernel on `[x, h]` and a TF1 bias, gates (i, j, f, o)."""
    kernel = np.concatenate([lstm.keras_to_tf1_gates(layer.kernel.numpy()),
                             lstm.keras_to_tf1_gates(layer.recurrent_kernel.numpy())], axis=0)
    return kernel.astype(np.float64), lstm.keras_to_tf1_gates(layer.bias.numpy()).astype(np.float64)
