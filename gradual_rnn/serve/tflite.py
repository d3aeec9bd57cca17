"""The streaming TFLite model of an export (`python -m gradual_rnn export --tflite`): one token in,
its successor's log-probabilities out, the LSTM state carried by the caller.

    serving_default(token <int32>[1], state <float32>[depth, 2, 1, hidden])
        -> log_probs <float32>[1, vocab], state

Shapes are fixed (batch 1, one step), as on-device streaming wants them; the state is the
SavedModel's (index 0 = c, 1 = h) and starts at zeros. To score a text as `generate score` does,
feed `<eos>` first, then each token, reading the log-probability of the next token from each output.
The weights stay float32 (no quantisation), so the model computes the SavedModel's numbers.

Run it with `tf.lite.Interpreter(model_path=...).get_signature_runner()` (TensorFlow 2.21 still ships
it, with a warning that it moves to `ai_edge_litert.interpreter.Interpreter`, which has the same API).
"""
import tensorflow as tf

from gradual_rnn.nn import language_model as lm
from gradual_rnn.serve import signatures


def streaming_function(model: lm.LanguageModel):
    """The one-token step as a `tf.function` with the fixed input signature above."""
    depth, hidden = model.num_layers, model.hidden_size

    def stream(token, state):
        logits, pairs = model(tf.reshape(token, [1, 1]), signatures.state_pairs(state, depth))
        return {"log_probs": tf.nn.log_softmax(logits[:, 0]), "state": signatures.state_tensor(pairs)}

    return tf.function(stream, autograph=False, input_signature=[
        tf.TensorSpec([1], tf.int32, name="token"), tf.TensorSpec([depth, 2, 1, hidden], tf.float32, name="state")])


def convert(model: lm.LanguageModel) -> bytes:
    """The TFLite flatbuffer of `streaming_function(model)`: TFLite's builtin operations only."""
    holder = tf.Module()
    holder.model_variables = [weight.value for weight in model.weights]
    holder.stream = streaming_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([holder.stream.get_concrete_function()], holder)
    return converter.convert()


def write_tflite(model: lm.LanguageModel, path: str) -> int:
    """Writes the TFLite model of `model` to `path`; returns its size in bytes."""
    flatbuffer = convert(model)
    with open(path, "wb") as handle:
        handle.write(flatbuffer)
    return len(flatbuffer)
