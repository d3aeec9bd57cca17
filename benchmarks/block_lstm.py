"""TensorFlow's fused LSTM kernel (`BlockLSTM`, the tutorial's `rnn_mode=BLOCK`) against the package's
recurrence, one layer, forward and backward, alternating.

    python benchmarks/block_lstm.py 20x20x200 20x35x650 20x35x1500   # BATCHxSTEPSxUNITS

For each shape it prints the largest difference of the outputs and the gradients (inputs, kernel,
recurrent kernel, bias) from the package's `BasicLSTM`, then the median milliseconds of one forward
and backward pass of each. `--op=v2` uses `BlockLSTMV2` instead: its forward pass matches, but
TensorFlow registers `BlockLSTM`'s gradient for it, whose gate layout (i, c, f, o) is not V2's
(i, f, c, o), so its gradients are wrong (the printed differences show it).
"""
import argparse
import time

import numpy as np
import tensorflow as tf

from gradual_rnn.nn.lstm import BasicLSTM, LSTMState


def _to_icfo(tensor):
    """Keras gate order (i, f, c, o) on the last axis to BlockLSTM's (i, c, f, o)."""
    input_gate, forget_gate, candidate, output_gate = tf.split(tensor, 4, axis=-1)
    return tf.concat([input_gate, candidate, forget_gate, output_gate], axis=-1)


def block_window(layer, inputs, state, op):
    """The layer's window through the fused kernel: (outputs [batch, time, units], last state)."""
    weights = tf.concat([layer.kernel, layer.recurrent_kernel], axis=0)
    bias = tf.convert_to_tensor(layer.bias)
    time_major = tf.transpose(inputs, [1, 0, 2])
    no_peephole = tf.zeros([layer.units])
    common = dict(seq_len_max=tf.cast(tf.shape(time_major)[0], tf.int64), x=time_major,
                  cs_prev=state.cell, h_prev=state.hidden, wci=no_peephole, wcf=no_peephole,
                  wco=no_peephole, use_peephole=False)
    if op == "v1":
        outputs = tf.raw_ops.BlockLSTM(w=_to_icfo(weights), b=_to_icfo(bias), forget_bias=0.0,
                                       cell_clip=-1.0, **common)
    else:
        outputs = tf.raw_ops.BlockLSTMV2(w=weights, b=bias, cell_clip=0.0, **common)
    cells, hiddens = outputs[1], outputs[6]
    return tf.transpose(hiddens, [1, 0, 2]), LSTMState(cells[-1], hiddens[-1])


def compare(batch, steps, units, op, rounds, repeats):
    layer = BasicLSTM(units, rnn_mode="basic", seed=1)
    inputs = tf.random.normal([batch, steps, units], seed=1)
    state = LSTMState(0.1 * tf.random.normal([batch, units], seed=2),
                      0.1 * tf.random.normal([batch, units], seed=3))
    layer(inputs, state)

    def compiled(window):
        @tf.function
        def forward_backward(inputs, state):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs, last = window(inputs, state)
                loss = tf.reduce_sum(outputs * outputs) + tf.reduce_sum(last.cell)
            return outputs, tape.gradient(loss, [inputs] + layer.trainable_variables)
        return forward_backward

    paths = {"package": compiled(lambda inputs, state: layer(inputs, state)),
             "block": compiled(lambda inputs, state: block_window(layer, inputs, state, op))}
    (ours, our_grads), (fused, fused_grads) = (path(inputs, state) for path in paths.values())
    relative = [float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a)))
                for a, b in zip(our_grads, fused_grads)]
    print(f"{batch}x{steps}x{units} {op}: outputs differ by at most {float(tf.reduce_max(tf.abs(ours - fused))):.2e}; "
          "gradients (inputs, kernel, recurrent, bias) by " + ", ".join(f"{value:.1e}" for value in relative)
          + " relative to their largest entry")
    milliseconds = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            started = time.perf_counter()
            for _ in range(repeats):
                path(inputs, state)[1][0].numpy()
            milliseconds[name].append((time.perf_counter() - started) / repeats * 1e3)
    medians = {name: float(np.median(values)) for name, values in milliseconds.items()}
    print(f"  median ms per forward+backward: package {medians['package']:.2f}, block {medians['block']:.2f} "
          f"(block / package {medians['block'] / medians['package']:.2f}); rounds: "
          + "; ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(milliseconds["package"], milliseconds["block"])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="+", help="BATCHxSTEPSxUNITS, e.g. 20x20x200")
    parser.add_argument("--op", choices=("v1", "v2"), default="v1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    arguments = parser.parse_args()
    for shape in arguments.shapes:
        batch, steps, units = (int(part) for part in shape.split("x"))
        compare(batch, steps, units, arguments.op, arguments.rounds, arguments.repeats)


if __name__ == "__main__":
    main()
