"""Weights to and from Keras 3's `ConvLSTM1D`, `ConvLSTM2D` and `ConvLSTM3D`.

keras is imported only when `to_keras` is called (a layer handed to `from_keras`
was made with keras, which is then already imported), so that `eqrnn.interop` works
without it. Any Keras backend works: the weights travel as NumPy arrays.

Keras' default backend is TensorFlow, so `import keras` fails where TensorFlow is
not installed unless `KERAS_BACKEND` names another backend before the first import.
`to_keras` imports keras with the JAX backend unless `KERAS_BACKEND` says otherwise.
"""

import os
import sys
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._conv_lstm import ConvLSTMCell
from .._layers import RNN
from ._common import as_jax


_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def _activation(config: dict[str, Any], key: str, name: str) -> Any:
    value = config[key]
    if value not in _ACTIVATIONS:
        raise ValueError(
            f"from_keras: {name} has {key}={value!r}; eqrnn converts 'tanh' and "
            "'sigmoid' exactly (build the ConvLSTMCell with your own functions "
            "and copy the weights by hand for others)."
        )
    return _ACTIVATIONS[value]


def from_keras(layer: Any, *, input_shape: Sequence[int]) -> RNN:
    """Convert a built Keras 3 `ConvLSTM1D`, `ConvLSTM2D` or `ConvLSTM3D` layer to
    an `eqrnn.RNN` of a `ConvLSTMCell` with the same weights.

    Keras runs a batch `(batch, time, *spatial, channels)`; the `RNN` runs one
    sequence `(time, *spatial, channels)` (batch it with `jax.vmap`) and returns
    every step's output, which is Keras' `return_sequences=True` (`outputs[-1]` is
    its default). `return_state=True` becomes `return_hidden=True`; its state is
    `(h, c)` in both.

    !!! example

        ```python
        import os

        os.environ.setdefault("KERAS_BACKEND", "jax")  # before the first import
        import keras

        layer = keras.layers.ConvLSTM2D(8, 3, padding="same", return_sequences=True)
        layer.build((None, None, 16, 16, 3))  # or call it on a batch
        rnn = eqrnn.interop.from_keras(layer, input_shape=(16, 16, 3))
        frames = jnp.ones((2, 10, 16, 16, 3))  # (batch, time, 16, 16, 3)
        outputs = jax.vmap(rnn)(frames)  # (2, 10, 16, 16, 8)
        ```

    **Arguments:**

    - `layer`: the Keras layer, built (called once, or `layer.build(...)`).
    - `input_shape`: one step's input shape `(*spatial, channels)`: Keras' layer
        works for any spatial size, an eqrnn cell is built for one. (Keyword only
        argument.)

    **Returns:**

    The `eqrnn.RNN`.

    **Raises:**

    `ValueError` where eqrnn's cell cannot express the layer exactly: channels-first
    data, strides or dilation other than 1, dropout, `go_backwards`, `stateful`,
    activations other than tanh and sigmoid, an unbuilt layer, or an `input_shape`
    whose channels differ from the kernel's. `TypeError` for anything else.
    """
    name = type(layer).__name__
    if name not in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"):
        raise TypeError(
            f"from_keras: expected a keras.layers.ConvLSTM1D, 2D or 3D, got {name}."
        )
    config = layer.get_config()
    rank = int(name[-2])
    refused = {
        "data_format": ("channels_last", "channels-first data"),
        "strides": ((1,) * rank, "strides other than 1"),
        "dilation_rate": ((1,) * rank, "dilation other than 1"),
        "dropout": (0.0, "input dropout"),
        "recurrent_dropout": (0.0, "recurrent dropout"),
        "go_backwards": (False, "go_backwards=True"),
        "stateful": (False, "stateful=True"),
    }
    for key, (wanted, what) in refused.items():
        value = config[key]
        if (tuple(value) if isinstance(value, list | tuple) else value) != wanted:
            raise ValueError(
                f"from_keras: {name} has {key}={value!r} ({what}), which eqrnn's "
                "ConvLSTMCell does not express."
            )
    gate_fn = _activation(config, "recurrent_activation", name)
    activation_fn = _activation(config, "activation", name)
    weights = {w.path.rsplit("/", 1)[-1]: w for w in layer.weights}
    if "kernel" not in weights:
        raise ValueError(
            f"from_keras: the {name} is not built yet: call it on a batch first."
        )
    kernel = as_jax(np.asarray(weights["kernel"]), "kernel")
    recurrent = as_jax(np.asarray(weights["recurrent_kernel"]), "recurrent_kernel")
    shape = tuple(input_shape)
    if len(shape) != rank + 1 or shape[-1] != kernel.shape[-2]:
        raise ValueError(
            f"from_keras: `input_shape` must be (*spatial, channels) with {rank} "
            f"spatial axes and {kernel.shape[-2]} channels (the kernel's), got "
            f"{input_shape!r}."
        )
    cell = ConvLSTMCell(
        shape,
        config["filters"],
        tuple(config["kernel_size"]),
        padding=config["padding"],
        use_bias=config["use_bias"],
        gate_fn=gate_fn,
        activation_fn=activation_fn,
        dtype=kernel.dtype,
        key=jax.random.key(0),
    )
    cell = eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh), cell, (kernel, recurrent))
    if config["use_bias"]:
        bias = as_jax(np.asarray(weights["bias"]), "bias")
        cell = eqx.tree_at(lambda c: c.bias, cell, bias)
    return RNN(cell, return_hidden=config["return_state"])


def to_keras(model: RNN | ConvLSTMCell) -> Any:
    """Convert a `ConvLSTMCell`, or an `RNN` of one, to a built Keras 3
    `ConvLSTM1D`/`2D`/`3D` layer with the same weights and `return_sequences=True`
    (`return_state` from the `RNN`'s `return_hidden`).

    **Arguments:**

    - `model`: the cell or `RNN` (not reversed).

    **Returns:**

    The Keras layer, built for inputs `(batch, time, *model's input_shape)`.

    **Raises:**

    `ValueError` for a reversed `RNN`, nonlinearities other than `jnp.tanh` and
    `jax.nn.sigmoid`, or a learned starting state; `TypeError` for anything else.
    """
    keras = _import_keras()

    rnn = model if isinstance(model, RNN) else None
    cell = model.cell if isinstance(model, RNN) else model
    if not isinstance(cell, ConvLSTMCell):
        raise TypeError(
            "to_keras: expected an eqrnn.ConvLSTMCell or an RNN of one, got "
            f"{type(cell).__name__}."
        )
    if rnn is not None and rnn.reverse:
        raise ValueError("to_keras: a reversed RNN has no Keras ConvLSTM counterpart.")
    names = {fn: name for name, fn in _ACTIVATIONS.items()}
    if cell.activation_fn not in names or cell.gate_fn not in names:
        raise ValueError(
            "to_keras: Keras' ConvLSTM takes named activations; eqrnn converts "
            "jnp.tanh and jax.nn.sigmoid."
        )
    if cell.initial_hidden is not None:
        raise ValueError(
            "to_keras: the cell has a learned starting state (`carry_init`), which "
            "Keras' ConvLSTM does not have."
        )
    rank = len(cell.kernel_size)
    layer_cls = {1: keras.layers.ConvLSTM1D, 2: keras.layers.ConvLSTM2D}.get(
        rank, keras.layers.ConvLSTM3D
    )
    layer = layer_cls(
        cell.hidden_size,
        cell.kernel_size,
        padding=cell.padding,
        use_bias=cell.use_bias,
        activation=names[cell.activation_fn],
        recurrent_activation=names[cell.gate_fn],
        return_sequences=True,
        return_state=bool(rnn is not None and rnn.return_hidden),
        unit_forget_bias=False,
        dtype=str(jnp.dtype(cell.dtype)),
    )
    layer.build((None, None, *cell.input_shape))
    weights = [np.asarray(cell.weight_ih), np.asarray(cell.weight_hh)]
    if cell.bias is not None:
        weights.append(np.asarray(cell.bias))
    for variable, value in zip(layer.trainable_variables, weights, strict=True):
        variable.assign(value)
    return layer


def _import_keras() -> Any:
    """`keras`, imported with the JAX backend unless `KERAS_BACKEND` names another
    or keras is imported already (its default, TensorFlow, is rarely installed
    beside eqrnn)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras
