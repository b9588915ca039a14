from collections.abc import Callable
from typing import Any

import equinox as eqx
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
from ._fused import identity, laid_out
from ._misc import check_bool, split_key


class SimpleCell(
    AbstractStackedGatesCell, AbstractArrayStateCell, AbstractPointwiseCell
):
    r"""An Elman cell: $h' = \phi(W_{ih} x + W_{hh} h + b)$.

    With `residual=True`, $h' = \phi(W_{ih} x + W_{hh} h + b + h)$, as Flax's
    `SimpleCell(residual=True)`. $\phi$ is `activation_fn` (`jnp.tanh` by default;
    `jax.nn.relu` gives PyTorch's `nonlinearity="relu"`). `weight_ih` is
    `(hidden_size, input_size)`, `weight_hh` is `(hidden_size, hidden_size)` and the
    single `bias` is PyTorch's `bias_ih + bias_hh`.

    !!! example

        ```python
        cell = eqrnn.SimpleCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "hidden_size input_size"]
    weight_hh: Float[Array, "hidden_size hidden_size"]
    bias: Float[Array, " hidden_size"] | None
    initial_hidden: Float[Array, " hidden_size"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Callable[..., Array] = default_kernel_init,
        recurrent_kernel_init: Callable[..., Array] = default_recurrent_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        residual: bool = False,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to use `bias`.
        - `activation_fn`: the nonlinearity $\\phi$ (default `jnp.tanh`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for the input weights (default LeCun normal, as Flax).
        - `recurrent_kernel_init`: the same for the `(hidden_size, hidden_size)`
            recurrent weights (default orthogonal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `residual`: add `h` to the pre-activation, as Flax's `residual=True`.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        self.residual = check_bool("SimpleCell", "residual", residual)
        ikey, hkey, bkey, ckey = split_key("SimpleCell", key, 4)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            self.bias,
        ) = stacked_gates(
            "SimpleCell",
            input_size,
            hidden_size,
            1,
            use_bias,
            kernel_init,
            recurrent_kernel_init,
            bias_init,
            dtype,
            (ikey, hkey, bkey),
        )
        self.use_bias = use_bias
        self.activation_fn = activation_fn
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        if not has_default_nonlinearities(self.activation_fn):
            return None
        project = identity if hoisted else laid_out(self.weight_ih, self.bias)
        recur = laid_out(self.weight_hh)
        residual = self.residual

        def fused_step(x: Array, hidden: HiddenArray) -> HiddenArray:
            pre = project(x) + recur(hidden)
            return jnp.tanh(pre + hidden if residual else pre)

        return fused_step

    def step(
        self, projected: Float[Array, " hidden_size"], hidden: HiddenArray
    ) -> HiddenArray:
        return self._pointwise(projected, self.weight_hh @ hidden, hidden)

    def _pointwise(
        self, projected: Array, recurrent: Array, hidden: HiddenArray
    ) -> HiddenArray:
        pre = projected + recurrent
        return self.activation_fn(pre + hidden if self.residual else pre)
