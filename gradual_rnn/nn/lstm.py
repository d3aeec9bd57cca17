"""The LSTM layers: TF1 BasicLSTMCell math, variational dropout, two compute paths.

`VariationalLSTM` is the Keras layer (any time length, optional state, `training=` switching its
dropout, `keras.Sequential`-ready); `BasicLSTM` is the same layer with the explicit-state call of
gradual_rnn 0.x. `lstm_recurrence` is the window's recurrence with a hand-written backward pass.

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
from gradual_rnn.nn.dropout import stateless_seed, variational_mask


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

    projected: `<float>[batch, time, 4 units]`, the input projection `x W + b` of every step; a time
    length unknown when the graph is traced runs one step per loop iteration. cell, hidden: the incoming state. recurrent_mask: `<float>[batch, units]` or None, applied
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
    units = recurrent_kernel.shape[0]
    if groups is None:
        groups = batch_groups(projected.shape[0], units)
    has_mask, has_detach = recurrent_mask is not None, detach is not None
    mask = recurrent_mask if has_mask else tf.zeros([0], projected.dtype)
    state_dtype, product_dtype = cell.dtype, recurrent_kernel.dtype
    if num_steps is None:  # a time length known only when the graph runs: one step per iteration
        block, num_steps = 1, tf.shape(projected)[1]
        num_blocks = num_steps
    else:
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
    """One layer's window, step by step (see `VariationalLSTM.stepwise`): `step(t, (c, h)) -> h_t`,
    and the c_t and h_t of every step t (outputs, unmasked)."""

    step: Callable
    cells: List
    hiddens: List


MASK_POLICIES = ("per_call", "fixed")


@keras.saving.register_keras_serializable(package=PACKAGE)
class VariationalLSTM(keras.layers.Layer):
    """An LSTM layer with the TF1 BasicLSTMCell math and variational dropout.

    call(inputs `<float>[batch, time, features]` (any time length), initial_state=None,
         training=None, masks=None, seed=None, detach=None)
      -> outputs `<float>[batch, time, units]` (`return_sequences`) or the last step's
         `<float>[batch, units]`; with `return_state`, `(outputs, LSTMState(cell, hidden))`.

    initial_state: an `LSTMState(cell, hidden)` or a pair `(c, h)`, each `<float32>[batch, units]`
    (note the order: Keras's own LSTM takes `[h, c]`); None starts from zeros, or, with
    `stateful=True`, from the state the previous call of the same batch size left (see below).

    Variational dropout (Gal & Ghahramani 2016, as the Gradual Learning paper, Aharoni et al. 2017,
    §3.3, uses it): while training, one mask `m_out = bernoulli(keep_output) / keep_output` and one
    `m_state = bernoulli(keep_state) / keep_state`, each `[batch, units]`, are drawn per call and
    applied at every step::

        h_t = tanh(c_t) * sigmoid(o_t)            c_t is never masked
        output_t = h_t * m_out                    what the layer returns
        h fed into step t+1 = h_t * m_state       also the h of the returned state

    Keras's `LSTM(recurrent_dropout=...)` instead draws a mask per gate and new masks at every call.
    The masks are stateless functions of a seed `<int>[2]`: the `seed` given to the call, else the
    layer's `seed_generator` (seeded from `seed + 2` of the constructor). `mask_policy`:

      * `per_call`: every training call draws new masks (it advances the generator; Keras's habit);
      * `fixed`: every training call applies the masks of the generator's current state, held
        until `refresh_masks(seed)` is called (the paper's masks, new once per epoch: see
        `gradual_rnn.train.gradual.RefreshMasks`).

    `masks=(output_mask, state_mask)` hands the call its masks (`bernoulli(keep) / keep` values,
    either None to skip): they are applied as given, whatever `training` says. The package's trainer
    draws its own per (phase, epoch, window) key and passes them so.

    Two paths compute the same function from the same variables:
      * `basic`: the input projection of every step as one matrix product, then the recurrence
        (`lstm_recurrence`, a hand-written backward pass). Needed whenever there is a state mask.
        `block` names the same path: the tutorial's `LSTMBlockCell` computes this math too (forget
        bias 0), under other checkpoint names (which `serve.tf1` reads and writes).
      * `cudnn`: `keras.layers.LSTM` with tanh / sigmoid, bias, no recurrent dropout, not unrolled:
        the arguments for which Keras runs its fused cuDNN kernel on a GPU (its generic loop on a
        CPU). Only with forget_bias 0 and no state mask.
    `rnn_mode='auto'` takes `cudnn` when the call allows it and a GPU is visible, `basic` otherwise.

    stateful: a call without `initial_state` starts from the state the previous such call left when
    its batch size is the same, else from zeros, and holds its own new state; `reset_state()` forgets
    it. The held state is a plain value: no gradient crosses from one call to the next (truncated
    backpropagation through time), so consecutive windows of the same streams train as the
    package's trainer trains them. Not with XLA.

    detach: None, or `<bool>[time]` for h-detach (Kanuparthi et al. 2019): where true, the gradient
    through h_{t-1} into the gates of step t is blocked (values unchanged); it needs the basic path.
    """

    def __init__(self, units: int, keep_output: float = 1.0, keep_state: float = 1.0,
                 mask_policy: str = "per_call", forget_bias: float = 0.0, init_scale: float = 0.1,
                 return_sequences: bool = False, return_state: bool = False, stateful: bool = False,
                 rnn_mode: str = "auto", seed: Optional[int] = None, precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        self.product_dtype = compute_dtype(precision)
        self.precision = precision
        _check_choice("rnn_mode", rnn_mode, RNN_MODES)
        _check_choice("mask_policy", mask_policy, MASK_POLICIES)
        if rnn_mode == "cudnn" and forget_bias:
            raise ValueError("rnn_mode='cudnn' needs forget_bias=0: the fused kernel adds no constant "
                             "to the forget gate. Use rnn_mode='basic' or 'auto'.")
        self.units, self.init_scale, self.forget_bias = units, init_scale, forget_bias
        self.rnn_mode, self.mask_policy = rnn_mode, mask_policy
        self.set_dropout(keep_output, keep_state)
        self.return_sequences, self.return_state = return_sequences, return_state
        self.stateful, self.seed = stateful, seed
        self.supports_jit = not stateful
        self.seed_generator = keras.random.SeedGenerator(None if seed is None else seed + 2,
                                                         name="mask_seed_generator")
        self.held_state, self.held_rows = None, None
        second_seed = None if seed is None else seed + 1
        self.lstm = keras.layers.LSTM(
            units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
            kernel_initializer=uniform_initializer(init_scale, seed),
            recurrent_initializer=uniform_initializer(init_scale, second_seed),
            bias_initializer="zeros", unit_forget_bias=False, recurrent_dropout=0.0, unroll=False,
            use_cudnn="auto", return_sequences=True, return_state=True, dtype=precision, name="lstm")

    def build(self, input_shape):
        self.lstm.build(input_shape)
        if self.stateful:
            with tf.init_scope():  # plain values of any batch size, not weights
                self.held_state = LSTMState(*(tf.Variable(tf.zeros([0, self.units]), trainable=False,
                                                          shape=tf.TensorShape([None, self.units]))
                                              for _ in range(2)))
                self.held_rows = tf.Variable(0, trainable=False)  # the batch size held (0: none)

    @property
    def kernel(self):
        return self.lstm.cell.kernel

    @property
    def recurrent_kernel(self):
        return self.lstm.cell.recurrent_kernel

    @property
    def bias(self):
        return self.lstm.cell.bias

    # ----- the masks -----
    def set_dropout(self, keep_output: float, keep_state: float) -> None:
        """Sets the keep probabilities of the layer's own masks (e.g. per gradual-learning phase; a
        compiled function traced before keeps the old ones)."""
        for name, keep in (("keep_output", keep_output), ("keep_state", keep_state)):
            if not 0.0 < keep <= 1.0:
                raise ValueError(f"{name}={keep} is outside (0, 1].")
        if self.rnn_mode == "cudnn" and keep_state < 1.0:
            raise ValueError("rnn_mode='cudnn' cannot apply a recurrent (state) mask; "
                             "use rnn_mode='auto' or 'basic', or keep_state=1.0.")
        self.keep_output, self.keep_state = float(keep_output), float(keep_state)

    def draw_masks(self, batch_size, seed):
        """`(output_mask, state_mask)` from the stateless `seed` (an int or `<int>[2]`), each
        `<float32>[batch_size, units]`, or None where the keep probability is 1."""
        seed = stateless_seed(seed)
        return tuple(None if keep >= 1.0 else variational_mask(
            tf.random.experimental.stateless_fold_in(seed, kind), [batch_size, self.units], keep)
            for kind, keep in enumerate((self.keep_output, self.keep_state)))

    def current_masks(self, batch_size):
        """The masks the next training call (given no masks nor seed) applies."""
        return self.draw_masks(batch_size, self.seed_generator.state.value)

    def refresh_masks(self, seed=None) -> None:
        """New masks from now on (`fixed` policy): from the next seed of the generator, or from
        `seed` (an int or `<int>[2]`), which makes them reproducible."""
        if seed is None:
            self.seed_generator.next()
            return
        self.seed_generator.state.assign(tf.cast(stateless_seed(seed), self.seed_generator.state.dtype))

    def _call_masks(self, batch_size, training, seed):
        if not training or (self.keep_output >= 1.0 and self.keep_state >= 1.0):
            return None, None
        if seed is None:
            fixed = self.mask_policy == "fixed"
            seed = self.seed_generator.state.value if fixed else self.seed_generator.next()
        return self.draw_masks(batch_size, seed)

    def drop_output(self, outputs, output_mask):
        """`outputs * output_mask` at every step (`[batch, time, units]` and `[batch, units]`)."""
        if output_mask is None:
            return outputs
        return outputs * tf.cast(output_mask, outputs.dtype)[:, tf.newaxis, :]

    # ----- the paths -----
    def cudnn_eligible(self, recurrent_mask=None) -> bool:
        """Whether a call with this state mask may run on keras.layers.LSTM's fused cuDNN kernel
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
        """Whether a call with this state mask runs on keras.layers.LSTM.

        `cudnn` always does. `auto` does when the call is cuDNN-eligible and a GPU is visible: on a
        CPU, Keras runs its generic loop, which is slower than the basic path (BUILD.md)."""
        if not self.cudnn_eligible(recurrent_mask):
            return False
        return self.rnn_mode == "cudnn" or hardware.gpu_available()

    def call(self, inputs, initial_state=None, training=None, masks=None, seed=None, detach=None):
        if masks is not None:
            output_mask, state_mask = masks
        else:
            output_mask, state_mask = self._call_masks(_batch_size(inputs), training, seed)
        state = self._start_state(inputs, initial_state)
        if detach is None and self.uses_cudnn_path(state_mask):
            outputs, state = self._cudnn_call(inputs, state, training)
        else:
            outputs, state = self._basic_call(inputs, state, state_mask, detach)
        if self.stateful and initial_state is None:
            self._hold(state)
        outputs = self.drop_output(outputs, output_mask)
        if not self.return_sequences:
            outputs = outputs[:, -1]
        return (outputs, state) if self.return_state else outputs

    def _start_state(self, inputs, initial_state):
        if initial_state is not None:
            return LSTMState(*initial_state)
        batch_size = _batch_size(inputs)
        zeros = tf.zeros([batch_size, self.units])
        if not self.stateful:
            return LSTMState(zeros, zeros)
        # The held batch size is a variable of its own: TensorFlow's graph optimizer may fold the
        # shape of a variable's value to the one it was created with.
        same = tf.equal(self.held_rows.read_value(), batch_size)

        def held_or_zeros(held):
            value = tf.cond(same, held.read_value, lambda: zeros)
            value.set_shape(zeros.shape)
            return value

        return LSTMState(*(held_or_zeros(held) for held in self.held_state))

    def _hold(self, state):
        for held, value in zip(self.held_state, state):
            held.assign(tf.cast(value, held.dtype))
        self.held_rows.assign(tf.shape(state.cell)[0])

    def reset_state(self) -> None:
        """Forgets the held state (`stateful`): the next call starts from zeros."""
        if self.held_state is not None:
            for held in self.held_state:
                held.assign(tf.zeros([0, self.units]))
            self.held_rows.assign(0)

    reset_states = reset_state

    def _cudnn_call(self, inputs, state, training):
        cell, hidden = state
        outputs, new_hidden, new_cell = self.lstm(inputs, initial_state=[hidden, cell], training=training)
        return outputs, LSTMState(tf.cast(new_cell, cell.dtype), tf.cast(new_hidden, hidden.dtype))

    def _projected(self, inputs):
        """(`x W + b` of every step, `recurrent_kernel`), in the product dtype."""
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

        Returns (outputs, (cell, hidden), trace): the unmasked outputs and the new state of
        `call(inputs, state, masks=(None, recurrent_mask))` (float32 only, static time), and a
        `StepTrace` whose `hiddens[t]` is the tensor h_t itself, so `tape.gradient(cost, hiddens)`
        gives the total derivatives ∂E/∂h_t, and whose `step(t, (c_{t-1}, h_{t-1}))` recomputes h_t
        from the unmasked previous output (the mask is applied inside, as in the window).
        Autodiff of this path is slower than the hand-written one, but differentiable twice.
        """
        if self.product_dtype != tf.float32:
            raise ValueError("VariationalLSTM.stepwise (used for Ω) runs in float32 only.")
        if inputs.shape[1] is None:
            raise ValueError("VariationalLSTM.stepwise needs a static number of time steps.")
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
        config.update(units=self.units, keep_output=self.keep_output, keep_state=self.keep_state,
                      mask_policy=self.mask_policy, forget_bias=self.forget_bias,
                      init_scale=self.init_scale, return_sequences=self.return_sequences,
                      return_state=self.return_state, stateful=self.stateful, rnn_mode=self.rnn_mode,
                      seed=self.seed, precision=self.precision)
        return config


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {choices}.")


def _batch_size(inputs):
    """The batch size of `[batch, ...]` inputs: a Python int when static, else a scalar tensor."""
    return inputs.shape[0] if inputs.shape[0] is not None else tf.shape(inputs)[0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicLSTM(VariationalLSTM):
    """`VariationalLSTM` with the explicit-state call of gradual_rnn 0.x (no dropout of its own).

    call(inputs `<float>[batch, time, input]`, state `(c, h)` each `<float>[batch, units]`,
    recurrent_mask `<float>[batch, units]` or None) -> (outputs `<float>[batch, time, units]`,
    new state `LSTMState(c, h)`): the outputs are the unmasked h of every step; the h fed back (and
    returned as state) is `h * recurrent_mask` (the state mask of `VariationalLSTM`).
    """

    def __init__(self, units: int, init_scale: float = 0.1, forget_bias: float = 0.0,
                 rnn_mode: str = "auto", seed: Optional[int] = None, precision: str = "float32", **kwargs):
        super().__init__(units, forget_bias=forget_bias, init_scale=init_scale, return_sequences=True,
                         return_state=True, rnn_mode=rnn_mode, seed=seed, precision=precision, **kwargs)

    def call(self, inputs, state, recurrent_mask=None, detach=None, training=False):
        return super().call(inputs, state, training=training, masks=(None, recurrent_mask), detach=detach)

    def get_config(self):
        config = super().get_config()
        for name in ("keep_output", "keep_state", "mask_policy", "return_sequences", "return_state",
                     "stateful"):
            del config[name]
        return config
