"""The LSTM layer of both references: TF1 BasicLSTMCell math, explicit state, two compute paths.

Gate math (TF1 `BasicLSTMCell`, Zaremba et al. 2014; the GL code uses the same cell)::

    z = x W + h R + b                       split into gates i, j, f, o
    c' = c * sigmoid(f + forget_bias) + sigmoid(i) * tanh(j)
    h' = tanh(c') * sigmoid(o)

TF1 stores one kernel `[x, h] -> [i, j, f, o]`. These layers keep their weights in Keras's layout
(`kernel [input, 4 units]`, `recurrent_kernel [units, 4 units]`, gates ordered i, f, c(=j), o) so that
the same variables feed both paths; `tf1_to_keras_gates` / `keras_to_tf1_gates` map the gate order.
"""
import dataclasses
from typing import Callable, List, NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from gradual_rnn import hardware
from gradual_rnn.nn.base import PACKAGE, compute_dtype, uniform_initializer

class LSTMState(NamedTuple):
    """The recurrent state of one LSTM layer: the cell `c` and the output `h` fed back, each
    `<float>[batch, units]` (Sonnet's `LSTMState`)."""

    cell: tf.Tensor
    hidden: tf.Tensor


# TF1 (i, j, f, o) and Keras (i, f, c=j, o) differ by swapping the middle blocks, both ways.
_SWAP_MIDDLE_GATES = (0, 2, 1, 3)


def _permute_gate_blocks(weights, order):
    blocks = np.split(np.asarray(weights), 4, axis=-1)
    return np.concatenate([blocks[index] for index in order], axis=-1)


def tf1_to_keras_gates(weights):
    """Reorders the last axis from TF1's (i, j, f, o) to Keras's (i, f, c, o)."""
    return _permute_gate_blocks(weights, _SWAP_MIDDLE_GATES)


def keras_to_tf1_gates(weights):
    """Reorders the last axis from Keras's (i, f, c, o) to TF1's (i, j, f, o)."""
    return _permute_gate_blocks(weights, _SWAP_MIDDLE_GATES)


def lstm_gate_step(projected_input, cell, hidden, recurrent_kernel, forget_bias):
    """One BasicLSTMCell step on a precomputed input projection `x W + b`, `[batch, 4 units]`.

    Returns the new `(cell, hidden)`, each `[batch, units]`. Gates in Keras order (i, f, c, o).
    The plain, autodiff-able form of one step; `lstm_recurrence` is the fast window form.
    """
    input_gate, forget_gate, candidate, output_gate = _gate_activations(
        projected_input + tf.matmul(hidden, recurrent_kernel), forget_bias)
    cell = cell * forget_gate + input_gate * candidate
    return cell, tf.tanh(cell) * output_gate


def detach_where(detach, tensor):
    """`tensor` with its gradient blocked when the scalar bool `detach` is true (value unchanged)."""
    if detach is None:
        return tensor
    return tf.where(detach, tf.stop_gradient(tensor), tensor)


def _gate_activations(gates, forget_bias):
    """sigmoid(i), sigmoid(f + forget_bias), tanh(c), sigmoid(o) of pre-activations `[batch, 4 units]`."""
    input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
    if forget_bias:
        forget_gate = forget_gate + forget_bias
    return tf.sigmoid(input_gate), tf.sigmoid(forget_gate), tf.tanh(candidate), tf.sigmoid(output_gate)


RNN_MODES = ("auto", "cudnn", "basic", "block")
MAX_UNROLLED_STEPS = 8


def steps_per_block(num_steps: int) -> int:
    """Time steps unrolled inside one iteration of the recurrence's graph loop: the largest divisor
    of `num_steps` up to `MAX_UNROLLED_STEPS`. A window of at most that many steps is one block."""
    return max(size for size in range(1, min(num_steps, MAX_UNROLLED_STEPS) + 1) if num_steps % size == 0)


def batch_groups(batch_size, units: int) -> int:
    """How many row groups `lstm_recurrence` splits the batch into by default: 2 on a CPU when the
    process may run on two or more cores, the batch is even and `MIN_GROUPED_UNITS <= units <=
    MAX_GROUPED_UNITS`, else 1.

    Each group's steps form an independent chain of small kernels, which TensorFlow runs side by
    side, one per core, where a single chain of `[batch, units] x [units, 4 units]` products and gate
    kernels is bound by latency. A row of a product does not depend on the other rows, and the
    gate kernels compute each element alike as long as a group's `[rows, units]` tensors fill whole
    vector registers (Eigen computes a tensor's last, partial register with other, scalar code);
    then the numbers are the same bit for bit (tests/nn/test_lstm.py). Measured on 2 cores
    (docs/performance.md): `small` (200 units) about 5% faster per window at the median (its
    recurrence 20%); at 32 to 100 units and at 650 (`medium`) the second chain cost more than it
    saved. Products in bfloat16 and float16 split by rows bit for bit too.
    """
    if not isinstance(batch_size, int) or batch_size % 2 or (batch_size // 2 * units) % _WHOLE_REGISTERS:
        return 1
    if not MIN_GROUPED_UNITS <= units <= MAX_GROUPED_UNITS:
        return 1
    if hardware.gpu_available() or hardware.usable_cores() < 2:
        return 1
    return 2


MIN_GROUPED_UNITS, MAX_GROUPED_UNITS = 128, 512
_WHOLE_REGISTERS = 16  # floats per AVX-512 register: a multiple of every CPU vector width


def lstm_recurrence(projected, cell, hidden, recurrent_kernel, recurrent_mask=None, detach=None,
                    forget_bias: float = 0.0, groups: Optional[int] = None):
    """The recurrent part of a BasicLSTM window with a hand-written backward pass.

    projected: `<float>[batch, time, 4 units]`, the input projection `x W + b` of every step (static
    time). cell, hidden: the incoming state. recurrent_mask: `<float>[batch, units]` or None, applied
    to the h fed back (see `BasicLSTM`). detach: `<bool>[time]` or None, h-detach coins.
    groups: how many row groups of the batch step side by side (see `batch_groups`, the default).
    Returns (outputs `<float>[batch, time, units]`, (cell, hidden)), the same values as stepping
    `lstm_gate_step`, with the same gradients.

    Mixed precision: the matrix products run in `recurrent_kernel.dtype` (projected and the outputs
    have it too); the gates, the cell and the returned state are computed in `cell.dtype`.

    Why by hand: autodiff of the unrolled steps computes the recurrent weight gradient as one small
    `[units, batch] x [batch, 4 units]` product per step and keeps every one of them alive until
    their sum. Here the backward pass only walks the steps for the gate gradients (elementwise work
    and `dgates R^T`), and the recurrent weight gradient is one large product over all steps,
    `[units, time*batch] x [time*batch, 4 units]`.

    The window runs as a graph loop over blocks of `steps_per_block` unrolled steps, forward and
    backward: unrolling the whole window runs no faster on a CPU but makes the graph (and the memory
    TensorFlow holds for it) grow with the window length. Inside a block, each row group of the
    batch is its own chain of kernels; the groups are joined again for the weight gradient.
    """
    num_steps = projected.shape[1]
    if num_steps is None:
        raise ValueError("BasicLSTM's basic path needs a static number of time steps.")
    units = recurrent_kernel.shape[0]
    if groups is None:
        groups = batch_groups(projected.shape[0], units)
    has_mask, has_detach = recurrent_mask is not None, detach is not None
    mask = recurrent_mask if has_mask else tf.zeros([0], projected.dtype)
    state_dtype, product_dtype = cell.dtype, recurrent_kernel.dtype
    block = steps_per_block(num_steps)
    num_blocks = num_steps // block

    def split_rows(tensor, axis=0):
        """The row groups of a tensor whose `axis` is the batch."""
        return tf.split(tensor, groups, axis=axis) if groups > 1 else [tensor]

    def join_rows(tensors, axis=0):
        return tf.concat(tensors, axis=axis) if groups > 1 else tensors[0]

    def product(left, right, **options):
        """A matrix product in the product dtype, returned in the state dtype."""
        return tf.cast(tf.matmul(tf.cast(left, product_dtype), right, **options), state_dtype)

    def forward_step(projected_step, cell, hidden, mask):
        """One step -> (cell, output h, h fed on, saved tensors for the backward step)."""
        fed = tf.cast(hidden, product_dtype)
        gates = projected_step + product(fed, recurrent_kernel)
        input_gate, forget_gate, candidate, output_gate = _gate_activations(gates, forget_bias)
        new_cell = cell * forget_gate + input_gate * candidate
        squashed = tf.tanh(new_cell)
        output = squashed * output_gate
        saved = (fed, input_gate, forget_gate, candidate, output_gate, cell, squashed)
        return new_cell, output, output * mask if has_mask else output, saved

    def backward_step(saved, d_output, d_cell, d_fed, coin, recurrent_transposed, mask):
        """One step back -> (d_gates in the product dtype, d_cell, d_fed into the step before).
        recurrent_transposed: `R^T`, `[4 units, units]`, made once per window."""
        _, input_gate, forget_gate, candidate, output_gate, previous_cell, squashed = saved
        d_h = d_output + (d_fed * mask if has_mask else d_fed)
        d_cell = d_cell + d_h * output_gate * (1.0 - tf.square(squashed))
        d_gates = tf.cast(tf.concat([
            d_cell * candidate * input_gate * (1.0 - input_gate),
            d_cell * previous_cell * forget_gate * (1.0 - forget_gate),
            d_cell * input_gate * (1.0 - tf.square(candidate)),
            d_h * squashed * output_gate * (1.0 - output_gate)], axis=-1), product_dtype)
        d_fed = product(d_gates, recurrent_transposed)
        if has_detach:
            d_fed = tf.where(coin, tf.zeros_like(d_fed), d_fed)
        return d_gates, d_cell * forget_gate, d_fed

    def time_major_blocks(tensor):
        """`[batch, time, ...]` -> `[blocks, block, batch, ...]`."""
        time_major = tf.transpose(tensor, [1, 0, 2])
        return tf.reshape(time_major, [num_blocks, block, -1, tensor.shape[-1]])

    def batch_major(blocks):
        """`[blocks, block, batch, width]` -> `[batch, time, width]`."""
        return tf.transpose(tf.reshape(blocks, [num_steps, -1, blocks.shape[-1]]), [1, 0, 2])

    def group_arrays(dtype):
        return [tf.TensorArray(dtype, size=num_blocks, element_shape=None) for _ in range(groups)]

    @tf.custom_gradient
    def run(projected, cell, hidden, recurrent_kernel, mask):
        projected_groups = split_rows(time_major_blocks(tf.cast(projected, state_dtype)), axis=2)
        mask_groups = split_rows(mask) if has_mask else [mask] * groups
        # saved_arrays[kind][group], output_arrays[group]: one block per entry.
        saved_arrays = [group_arrays(dtype) for dtype in (product_dtype,) + (state_dtype,) * 6]
        output_arrays = group_arrays(product_dtype)

        def forward_block(index, cells, hiddens, output_arrays, saved_arrays):
            cells, hiddens, output_arrays = list(cells), list(hiddens), list(output_arrays)
            saved_arrays = [list(arrays) for arrays in saved_arrays]
            for group in range(groups):
                steps = tf.unstack(projected_groups[group][index], num=block)
                outputs, saved_steps = [], []
                for step in range(block):
                    cells[group], output, hiddens[group], saved = forward_step(
                        steps[step], cells[group], hiddens[group], mask_groups[group])
                    outputs.append(tf.cast(output, product_dtype))
                    saved_steps.append(saved)
                output_arrays[group] = output_arrays[group].write(index, tf.stack(outputs))
                for kind, arrays in enumerate(saved_arrays):
                    arrays[group] = arrays[group].write(index, tf.stack([saved[kind] for saved in saved_steps]))
            return index + 1, cells, hiddens, output_arrays, saved_arrays

        _, final_cells, final_hiddens, output_arrays, saved_arrays = tf.while_loop(
            lambda index, *_: index < num_blocks, forward_block,
            (tf.constant(0), split_rows(cell), split_rows(hidden), output_arrays, saved_arrays))
        saved_groups = [[array.stack() for array in arrays] for arrays in saved_arrays]

        def backward(d_outputs, d_cell, d_hidden):
            d_output_groups = split_rows(time_major_blocks(tf.cast(d_outputs, state_dtype)), axis=2)
            coin_blocks = tf.reshape(detach, [num_blocks, block]) if has_detach else None
            d_gate_arrays = group_arrays(product_dtype)
            # oneDNN runs `[batch, 4 units] x R^T` about twice as fast from a row-major copy of R^T
            # as with `transpose_b` at medium and large (docs/performance.md); one copy a window.
            recurrent_transposed = tf.transpose(recurrent_kernel)

            def backward_block(index, d_cells, d_feds, d_gate_arrays):
                d_cells, d_feds, d_gate_arrays = list(d_cells), list(d_feds), list(d_gate_arrays)
                block_index = num_blocks - 1 - index
                for group in range(groups):
                    saved = [tf.unstack(kind[group][block_index], num=block) for kind in saved_groups]
                    d_steps = tf.unstack(d_output_groups[group][block_index], num=block)
                    d_gates = [None] * block
                    for step in reversed(range(block)):
                        coin = coin_blocks[block_index, step] if has_detach else None
                        d_gates[step], d_cells[group], d_feds[group] = backward_step(
                            [kind[step] for kind in saved], d_steps[step], d_cells[group], d_feds[group],
                            coin, recurrent_transposed, mask_groups[group])
                    d_gate_arrays[group] = d_gate_arrays[group].write(block_index, tf.stack(d_gates))
                return index + 1, d_cells, d_feds, d_gate_arrays

            _, d_cells, d_feds, d_gate_arrays = tf.while_loop(
                lambda index, *_: index < num_blocks, backward_block,
                (tf.constant(0), split_rows(d_cell), split_rows(d_hidden), d_gate_arrays))
            d_gate_blocks = join_rows([array.stack() for array in d_gate_arrays], axis=2)
            fed_blocks = join_rows(saved_groups[0], axis=2)
            d_recurrent = tf.einsum("nkbh,nkbg->hg", fed_blocks, d_gate_blocks)
            return (batch_major(d_gate_blocks), join_rows(d_cells), join_rows(d_feds), d_recurrent,
                    tf.zeros_like(mask))

        outputs = join_rows([array.stack() for array in output_arrays], axis=2)
        return (batch_major(outputs), join_rows(final_cells), join_rows(final_hiddens)), backward

    outputs, cell, hidden = run(projected, cell, hidden, recurrent_kernel, mask)
    return outputs, LSTMState(cell, hidden)


@dataclasses.dataclass
class StepTrace:
    """One layer's window, step by step (see `BasicLSTM.stepwise`): `step(t, (c, h)) -> h_t`, and
    the c_t and h_t of every step t (outputs, unmasked)."""

    step: Callable
    cells: List
    hiddens: List


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicLSTM(keras.layers.Layer):
    """An LSTM layer over one window with the TF1 BasicLSTMCell math and explicit state.

    call(inputs `<float>[batch, time, input]`, state `(c, h)` each `<float>[batch, units]`,
    recurrent_mask `<float>[batch, units]` or None) -> (outputs `<float>[batch, time, units]`,
    new state `(c, h)`).

    `recurrent_mask` is the variational state mask of Gal & Ghahramani as the GL code applies it: the
    h fed back at every step (and returned as state, to be carried into the next window) is
    `h * recurrent_mask`, where the mask already holds `bernoulli(keep) / keep`. c is never masked.
    The outputs are the unmasked h of every step.

    Two paths compute the same function from the same variables:
      * `basic`: the input projection of all time steps as one matrix multiply, then only the
        recurrent part step by step. Needed whenever there is a recurrent mask.
        `block` names the same path: the tutorial's `LSTMBlockCell` computes this math too (forget
        bias 0), under other checkpoint names (which `serve.tf1` reads and writes).
      * `cudnn`: `keras.layers.LSTM` with tanh / sigmoid, bias, no recurrent dropout, not unrolled:
        the arguments for which Keras runs its fused cuDNN kernel on a GPU (its generic loop on
        a CPU). Only with forget_bias 0 and no recurrent mask.
    `rnn_mode='auto'` takes `cudnn` when the call allows it and a GPU is visible, `basic` otherwise.
    """

    def __init__(self, units: int, init_scale: float = 0.1, forget_bias: float = 0.0,
                 rnn_mode: str = "auto", seed: Optional[int] = None, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.product_dtype = compute_dtype(precision)
        self.precision = precision
        if rnn_mode not in RNN_MODES:
            raise ValueError(f"rnn_mode={rnn_mode!r} is not one of {RNN_MODES}.")
        if rnn_mode == "cudnn" and forget_bias:
            raise ValueError("rnn_mode='cudnn' needs forget_bias=0: the fused kernel adds no constant "
                             "to the forget gate. Use rnn_mode='basic' or 'auto'.")
        self.units = units
        self.init_scale = init_scale
        self.forget_bias = forget_bias
        self.rnn_mode = rnn_mode
        self.seed = seed
        second_seed = None if seed is None else seed + 1
        self.lstm = keras.layers.LSTM(
            units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
            kernel_initializer=uniform_initializer(init_scale, seed),
            recurrent_initializer=uniform_initializer(init_scale, second_seed),
            bias_initializer="zeros", unit_forget_bias=False, recurrent_dropout=0.0, unroll=False,
            use_cudnn="auto", return_sequences=True, return_state=True, dtype=precision, name="lstm")

    def build(self, input_shape):
        self.lstm.build(input_shape)

    @property
    def kernel(self):
        return self.lstm.cell.kernel

    @property
    def recurrent_kernel(self):
        return self.lstm.cell.recurrent_kernel

    @property
    def bias(self):
        return self.lstm.cell.bias

    def cudnn_eligible(self, recurrent_mask=None) -> bool:
        """Whether a call with this recurrent mask may run on keras.layers.LSTM's fused cuDNN kernel
        (on a GPU): not forced to `basic`, no state mask, no forget bias (the arguments are fixed
        at construction). Raises for `rnn_mode='cudnn'` with a state mask."""
        if self.rnn_mode in ("basic", "block"):
            return False
        if recurrent_mask is not None:
            if self.rnn_mode == "cudnn":
                raise ValueError("rnn_mode='cudnn' cannot apply a recurrent (state) mask; "
                                 "use rnn_mode='auto' or 'basic', or keep_state=1.0.")
            return False
        return not self.forget_bias

    def uses_cudnn_path(self, recurrent_mask=None) -> bool:
        """Whether a call with this recurrent mask runs on keras.layers.LSTM.

        `cudnn` always does. `auto` does when the call is cuDNN-eligible and a GPU is visible: on a
        CPU, Keras runs its generic loop, which is slower than the basic path (BUILD.md)."""
        if not self.cudnn_eligible(recurrent_mask):
            return False
        return self.rnn_mode == "cudnn" or hardware.gpu_available()

    def call(self, inputs, state, recurrent_mask=None, detach=None, training=False):
        """detach: None, or `<bool>[time]` for h-detach (Kanuparthi et al. 2019): where true, the
        gradient through h_{t-1} into the gates of step t is blocked (values unchanged); it needs
        the basic path."""
        if detach is None and self.uses_cudnn_path(recurrent_mask):
            cell, hidden = state
            outputs, hidden, cell = self.lstm(inputs, initial_state=[hidden, cell], training=training)
            return outputs, LSTMState(tf.cast(cell, state[0].dtype), tf.cast(hidden, state[1].dtype))
        return self._basic_call(inputs, state, recurrent_mask, detach)

    def _projected(self, inputs):
        """(`x W + b` of every step, `recurrent_kernel`), in the product dtype; static time only."""
        if inputs.shape[1] is None:
            raise ValueError("BasicLSTM's basic path needs a static number of time steps.")
        kernel, recurrent_kernel, bias = (tf.cast(tf.convert_to_tensor(weight), self.product_dtype)
                                          for weight in (self.kernel, self.recurrent_kernel, self.bias))
        return tf.einsum("bti,ig->btg", tf.cast(inputs, self.product_dtype), kernel) + bias, recurrent_kernel

    def _basic_call(self, inputs, state, recurrent_mask, detach=None):
        projected, recurrent_kernel = self._projected(inputs)
        cell, hidden = state
        return lstm_recurrence(projected, cell, hidden, recurrent_kernel, recurrent_mask, detach,
                               self.forget_bias)

    def stepwise(self, inputs, state, recurrent_mask=None):
        """The basic path stepped with plain TensorFlow ops, every step exposed (for Ω).

        Returns (outputs, (cell, hidden), trace): the values of `call` (float32 only), and a
        `StepTrace` whose `hiddens[t]` is the tensor h_t itself, so `tape.gradient(cost, hiddens)`
        gives the total derivatives ∂E/∂h_t, and whose `step(t, (c_{t-1}, h_{t-1}))` recomputes h_t
        from the unmasked previous output (the mask is applied inside, as in the window).
        Autodiff of this path is slower than the hand-written one, but differentiable twice.
        """
        if self.product_dtype != tf.float32:
            raise ValueError("BasicLSTM.stepwise (used for Ω) runs in float32 only.")
        projected, recurrent_kernel = self._projected(inputs)

        def fed(output):
            return output if recurrent_mask is None else output * recurrent_mask

        def advance(index, cell, fed_hidden):
            return lstm_gate_step(projected[:, index], cell, fed_hidden, recurrent_kernel, self.forget_bias)

        cell, hidden = state
        cells, hiddens = [], []
        for index in range(inputs.shape[1]):
            cell, output = advance(index, cell, hidden)
            cells.append(cell)
            hiddens.append(output)
            hidden = fed(output)
        trace = StepTrace(lambda index, previous: advance(index, previous[0], fed(previous[1]))[1],
                          cells, hiddens)
        return tf.stack(hiddens, axis=1), LSTMState(cell, hidden), trace

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, init_scale=self.init_scale, forget_bias=self.forget_bias,
                      rnn_mode=self.rnn_mode, seed=self.seed, precision=self.precision)
        return config
