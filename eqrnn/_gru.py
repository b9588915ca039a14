from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractArrayStateCell,
    AbstractPointwiseCell,
    AbstractStackedGatesCell,
    default_bias_init,
    default_kernel_init,
    default_recurrent_kernel_init,
    has_default_nonlinearities,
    initial_hidden,
    stacked_gates,
)
from ._custom_types import HiddenArray
from ._fused import gru_pointwise, identity, laid_out
from ._misc import optional_bias, split_key


class GRUCell(AbstractStackedGatesCell, AbstractArrayStateCell, AbstractPointwiseCell):
    r"""A gated recurrent unit, reset-after form (as PyTorch, cuDNN and Equinox).

    $$\begin{aligned}
    r &= \sigma(W_{ir} x + W_{hr} h + b_r) \\
    z &= \sigma(W_{iz} x + W_{hz} h + b_z) \\
    n &= \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})) \\
    h' &= (1 - z) \odot n + z \odot h
    \end{aligned}$$

    with $\sigma$ = `gate_fn` and $\tanh$ = `activation_fn`. The weights are stored as
    PyTorch stores them, gates stacked in the order r, z, n: `weight_ih` is
    `(3 * hidden_size, input_size)` and `weight_hh` is `(3 * hidden_size,
    hidden_size)`. `bias` holds $b_r, b_z, b_{in}$ (PyTorch's `b_ih + b_hh` for r and
    z) and `bias_hn` holds $b_{hn}$, which sits inside the reset gate and so cannot be
    folded into `bias`. `bias_hn` is Equinox's `bias_n`; Flax's `GRUCell` has no
    such term (it is zero there).

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "three_hidden input_size"]
    weight_hh: Float[Array, "three_hidden hidden_size"]
    bias: Float[Array, " three_hidden"] | None
    bias_hn: Float[Array, " hidden_size"] | None
    initial_hidden: Float[Array, " hidden_size"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    gate_fn: Callable[[Array], Array] = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Callable[..., Array] = default_kernel_init,
        recurrent_kernel_init: Callable[..., Array] = default_recurrent_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to use `bias` and `bias_hn`.
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the candidate nonlinearity (default `jnp.tanh`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each gate's input weights (default LeCun normal, as Flax).
        - `recurrent_kernel_init`: the same for each gate's `(hidden_size,
            hidden_size)` recurrent weights (default orthogonal, as Flax).
        - `bias_init`: initialiser for the biases (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        # The first four keys are those of the other cells; `bias_hn` takes a fifth.
        ikey, hkey, bkey, ckey, nkey = split_key("GRUCell", key, 5)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            self.bias,
        ) = stacked_gates(
            "GRUCell",
            input_size,
            hidden_size,
            3,
            use_bias,
            kernel_init,
            recurrent_kernel_init,
            bias_init,
            dtype,
            (ikey, hkey, bkey),
        )
        self.use_bias = use_bias
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.bias_hn = optional_bias(use_bias, bias_init, nkey, self.hidden_size, dtype)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        if not has_default_nonlinearities(self.activation_fn, self.gate_fn):
            return None
        hs, bias_hn = self.hidden_size, self.bias_hn
        project = identity if hoisted else laid_out(self.weight_ih, self.bias)
        recur = laid_out(
            self.weight_hh,
            None
            if bias_hn is None
            else jnp.concatenate([jnp.zeros(2 * hs, bias_hn.dtype), bias_hn]),
        )

        def fused_step(x: Array, hidden: HiddenArray) -> HiddenArray:
            return gru_pointwise(project(x), recur(hidden), hidden)

        return fused_step

    def step(
        self, projected: Float[Array, " three_hidden"], hidden: HiddenArray
    ) -> HiddenArray:
        return self._pointwise(projected, self.weight_hh @ hidden, hidden)

    def _pointwise(
        self, projected: Array, recurrent: Array, hidden: HiddenArray
    ) -> HiddenArray:
        hs = self.hidden_size
        z_n = (
            recurrent[2 * hs :]
            if self.bias_hn is None
            else recurrent[2 * hs :] + self.bias_hn
        )
        r = self.gate_fn(projected[:hs] + recurrent[:hs])
        u = self.gate_fn(projected[hs : 2 * hs] + recurrent[hs : 2 * hs])
        n = self.activation_fn(projected[2 * hs :] + r * z_n)
        return n + u * (hidden - n)
