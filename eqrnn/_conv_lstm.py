"""The convolutional LSTM (Shi et al. 2015) over 1, 2 or 3 spatial dimensions."""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractStepCell,
    AbstractTupleStateCell,
    default_bias_init,
    default_recurrent_kernel_init,
    initial_hidden,
)
from ._misc import (
    check_bool,
    check_forget_bias,
    check_size,
    gate_blocks,
    optional_bias,
    resolve_dtype,
    split_key,
    with_forget_bias,
)


ConvLSTMHidden = tuple[
    Float[Array, "*spatial channels"], Float[Array, "*spatial channels"]
]

_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
_PADDINGS = ("same", "valid")


def conv(x: Array, kernel: Array, padding: str) -> Array:
    """`x` `(batch, *spatial, in)` convolved with `kernel` `(*window, in, out)` (as
    Keras and TensorFlow lay them out), stride 1, `"same"` or `"valid"` padding."""
    letters = _SPATIAL[kernel.ndim - 2]
    numbers = jax.lax.conv_dimension_numbers(
        x.shape, kernel.shape, (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    )
    return jax.lax.conv_general_dilated(
        x, kernel, (1,) * (kernel.ndim - 2), padding.upper(), dimension_numbers=numbers
    )


def _default_kernel_init(key: PRNGKeyArray, shape: Sequence[int], dtype: Any) -> Array:
    # LeCun normal with fan-in = window size * input channels.
    return jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1)(key, shape, dtype)


class ConvLSTMCell(AbstractStepCell, AbstractTupleStateCell):
    r"""A convolutional LSTM (Shi et al. 2015): an LSTM whose matrix products are
    convolutions, over 1, 2 or 3 spatial dimensions, as Keras' `ConvLSTM1D/2D/3D`.

    $$\begin{aligned}
    (i, f, g, o) &= W * x + R * h + b \\
    c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(g), \quad
    h' = \sigma(o) \odot \tanh(c')
    \end{aligned}$$

    with $*$ a convolution over the spatial axes (stride 1). One step's input has
    shape `input_shape = (*spatial, in_channels)` (channels last), and `h` and `c`
    have shape `(*out_spatial, hidden_channels)`: `out_spatial` is `spatial` with
    `padding="same"`, and `spatial - kernel_size + 1` with `"valid"` (the recurrent
    convolution always pads to keep the state's shape, as Keras). The kernels are
    stored as Keras stores them: `weight_ih` is `(*kernel_size, in_channels, 4 *
    hidden_channels)`, `weight_hh` is `(*kernel_size, hidden_channels, 4 *
    hidden_channels)`, gates in the order i, f, g, o. `input_size` is the number of
    input channels and `hidden_size` that of hidden channels.

    !!! example

        ```python
        cell = eqrnn.ConvLSTMCell((16, 16, 3), 8, kernel_size=3, key=jax.random.key(0))
        frames = jnp.ones((10, 16, 16, 3))  # 10 steps of 16 x 16 pixels, 3 channels
        hs, cs = eqrnn.scan_all_hidden(cell, frames)  # each (10, 16, 16, 8)
        ```
    """

    weight_ih: Float[Array, "*kernel in_channels four_hidden"]
    weight_hh: Float[Array, "*kernel hidden_channels four_hidden"]
    bias: Float[Array, " four_hidden"] | None
    initial_hidden: ConvLSTMHidden | None
    input_shape: tuple[int, ...] = eqx.field(static=True)
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    gate_fn: Callable[[Array], Array] = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        padding: str = "same",
        use_bias: bool = True,
        gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Callable[..., Array] = _default_kernel_init,
        recurrent_kernel_init: Callable[..., Array] = default_recurrent_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        forget_bias: float = 0.0,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_shape`: one step's input shape, `(*spatial, in_channels)`, with 1,
            2 or 3 spatial axes.
        - `hidden_channels`: the channels of `h` and `c` (Keras' `filters`).
        - `kernel_size`: the convolutions' window, an int or one per spatial axis.
        - `padding`: `"same"` (default) or `"valid"`, of the input convolution.
        - `use_bias`: whether to use `bias`.
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the nonlinearity of `g` and of `c'` (default `jnp.tanh`).
        - `kernel_init`: initialiser `init(key, (*kernel_size, in_channels,
            hidden_channels), dtype)` of each gate's input kernel (default LeCun
            normal over the window and input channels).
        - `recurrent_kernel_init`: the same for each gate's recurrent kernel
            (default orthogonal).
        - `bias_init`: initialiser for `bias` (default zeros).
        - `carry_init`: if given, initialiser for the starting `h` and `c`, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `forget_bias`: added once, here, to the forget gate's part of `bias`
            (Keras' `unit_forget_bias=True` is 1.0).
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        if isinstance(input_shape, numbers.Integral):
            raise TypeError(
                f"ConvLSTMCell: `input_shape` must be one step's shape "
                f"(*spatial, in_channels), e.g. (16, 16, {input_shape}) for 16x16 "
                f"frames with {input_shape} channels, got the int {input_shape!r}. "
                "For vector inputs use `eqrnn.LSTMCell(input_size, hidden_size, "
                "key=...)`."
            )
        shape = tuple(input_shape)
        if not 2 <= len(shape) <= 4:
            raise ValueError(
                "ConvLSTMCell: `input_shape` must be (*spatial, in_channels) with 1, "
                f"2 or 3 spatial axes, e.g. (16, 16, 3), got {input_shape!r}."
            )
        self.input_shape = tuple(check_size("input_shape", n) for n in shape)
        spatial = self.input_shape[:-1]
        window = (
            (kernel_size,) * len(spatial)
            if isinstance(kernel_size, int)
            else tuple(kernel_size)
        )
        if len(window) != len(spatial):
            raise ValueError(
                f"ConvLSTMCell: `kernel_size` must be an int or have one entry per "
                f"spatial axis ({len(spatial)}), got {kernel_size!r}."
            )
        self.kernel_size = tuple(check_size("kernel_size", k) for k in window)
        if padding not in _PADDINGS:
            raise ValueError(
                f"ConvLSTMCell: `padding` must be 'same' or 'valid', got {padding!r}."
            )
        if padding == "valid" and any(
            k > n for k, n in zip(self.kernel_size, spatial, strict=True)
        ):
            raise ValueError(
                f"ConvLSTMCell: with padding='valid' the kernel {self.kernel_size} "
                f"must fit in the input's spatial shape {spatial}; use "
                "padding='same' or a smaller `kernel_size`."
            )
        self.padding = padding
        self.input_size = self.input_shape[-1]
        self.hidden_size = check_size("hidden_channels", hidden_channels)
        self.use_bias = check_bool("ConvLSTMCell", "use_bias", use_bias)
        check_forget_bias("ConvLSTMCell", forget_bias, use_bias)
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        dtype = resolve_dtype(dtype, "ConvLSTMCell")
        ikey, hkey, bkey, ckey = split_key("ConvLSTMCell", key, 4)
        hs = self.hidden_size
        window = self.kernel_size
        self.weight_ih = gate_blocks(
            kernel_init, ikey, (*window, self.input_size, hs), 4, dtype
        )
        self.weight_hh = gate_blocks(
            recurrent_kernel_init, hkey, (*window, hs, hs), 4, dtype
        )
        bias = optional_bias(use_bias, bias_init, bkey, 4 * hs, dtype)
        self.bias = with_forget_bias(bias, slice(hs, 2 * hs), forget_bias)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def step_input_shape(self) -> tuple[int, ...]:
        return self.input_shape

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        spatial = self.input_shape[:-1]
        if self.padding == "valid":
            spatial = tuple(
                n - k + 1 for n, k in zip(spatial, self.kernel_size, strict=True)
            )
        return ((*spatial, self.hidden_size),) * 2

    def project_inputs(
        self, inputs: Float[Array, "*time_and_input_shape"]
    ) -> Float[Array, "*time_and_state_shape"]:
        lead = inputs.shape[: inputs.ndim - len(self.input_shape)]
        x = inputs.reshape(math.prod(lead), *self.input_shape)
        out = conv(x, self.weight_ih, self.padding)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*lead, *out.shape[1:])

    def step(
        self, projected: Float[Array, "*spatial four_hidden"], hidden: ConvLSTMHidden
    ) -> ConvLSTMHidden:
        h, c = hidden
        hs = self.hidden_size
        g = projected + conv(h[None], self.weight_hh, "same")[0]
        i = self.gate_fn(g[..., :hs])
        f = self.gate_fn(g[..., hs : 2 * hs])
        cand = self.activation_fn(g[..., 2 * hs : 3 * hs])
        o = self.gate_fn(g[..., 3 * hs :])
        c = f * c + i * cand
        return o * self.activation_fn(c), c

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        del hoisted
        return None
