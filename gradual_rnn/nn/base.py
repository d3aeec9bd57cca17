"""What every layer of `gradual_rnn.nn` shares: the Keras registration package, the product dtype of
a precision, and the references' uniform initializer."""
from typing import Optional

import keras
import tensorflow as tf

PACKAGE = "gradual_rnn"

# Mixed precision: variables, the cell state and the softmax stay float32; matrix products (and the
# activations between layers) use the low-precision type. The names are Keras's dtype policies.
_COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


def compute_dtype(precision: str) -> tf.DType:
    """The matrix-product dtype of a precision: "float32", "mixed_bfloat16" or "mixed_float16"."""
    if precision not in _COMPUTE_DTYPES:
        raise ValueError(f"precision={precision!r} is not one of {tuple(_COMPUTE_DTYPES)}.")
    return _COMPUTE_DTYPES[precision]


def uniform_initializer(init_scale: float, seed: Optional[int]):
    return keras.initializers.RandomUniform(-init_scale, init_scale, seed=seed)

