from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractArrayStateCell,
    AbstractNewtonCell,
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
from ._jacobians import derivative
from ._misc import split_key


class MGUCell(AbstractStackedGatesCell, AbstractArrayStateCell, AbstractNewtonCell):
    r"""A minimal gated unit (Zhou et al. 2016, "Minimal Gated Unit for Recurrent
    Neural Networks", eq. 7): a GRU whose reset and update gates are one gate.

    $$\begin{aligned}
    f &= \sigma(W_{if} x + W_{hf} h + b_f) \\
    \tilde h &= \tanh(W_{in} x + W_{hn} (f \odot h) + b_n) \\
    h' &= (1 - f) \odot h + f \odot \tilde h
    \end{aligned}$$

    with $\sigma$ = `gate_fn` and $\tanh$ = `activation_fn`. Gates are stacked in the
    order f, n: `weight_ih` is `(2 * hidden_size, input_size)`, `weight_hh` is
    `(2 * hidden_size, hidden_size)` and `bias` is `(2 * hidden_size,)`. The two
    recurrent matmuls cannot be fused, because the second one needs `f`.

    !!! example

        ```python
        cell = eqrnn.MGUCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "two_hidden input_size"]
    weight_hh: Float[Array, "two_hidden hidden_size"]
    bias: Float[Array, " two_hidden"] | None
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
        - `use_bias`: whether to use `bias`.
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the candidate nonlinearity (default `jnp.tanh`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each gate's input weights (default LeCun normal, as Flax).
        - `recurrent_kernel_init`: the same for each gate's `(hidden_size,
            hidden_size)` recurrent weights (default orthogonal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        ikey, hkey, bkey, ckey = split_key("MGUCell", key, 4)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            self.bias,
        ) = stacked_gates(
            "MGUCell",
            input_size,
            hidden_size,
            2,
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
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        if not has_default_nonlinearities(self.activation_fn, self.gate_fn):
            return None
        hs = self.hidden_size
        project = identity if hoisted else laid_out(self.weight_ih, self.bias)
        recur_f, recur_n = laid_out(self.weight_hh[:hs]), laid_out(self.weight_hh[hs:])

        def fused_step(x: Array, hidden: HiddenArray) -> HiddenArray:
            projected = project(x)
            f = jax.nn.sigmoid(projected[..., :hs] + recur_f(hidden))
            n = jnp.tanh(projected[..., hs:] + recur_n(f * hidden))
            return hidden + f * (n - hidden)

        return fused_step

    def step(
        self, projected: Float[Array, " two_hidden"], hidden: HiddenArray
    ) -> HiddenArray:
        hs = self.hidden_size
        f = self.gate_fn(projected[:hs] + self.weight_hh[:hs] @ hidden)
        n = self.activation_fn(projected[hs:] + self.weight_hh[hs:] @ (f * hidden))
        return hidden + f * (n - hidden)

    def unit_jacobians(
        self, projected: Float[Array, " two_hidden"], hidden: HiddenArray
    ) -> Float[Array, "hidden_size 1 1"]:
        # n reads every unit's f * h, so the diagonal of dn/dh is W_n's diagonal
        # times f plus diag(W_n diag(h f') W_f) = (W_n * W_f.T) @ (h f').
        hs = self.hidden_size
        w_f, w_n = self.weight_hh[:hs], self.weight_hh[hs:]
        f, df = derivative(self.gate_fn, projected[:hs] + w_f @ hidden)
        n, dn = derivative(self.activation_fn, projected[hs:] + w_n @ (f * hidden))
        df_dh = df * jnp.diagonal(w_f)
        dn_dh = dn * (jnp.diagonal(w_n) * f + (w_n * w_f.T) @ (hidden * df))
        diagonal = 1 - f + (n - hidden) * df_dh + f * dn_dh
        return diagonal[:, None, None]
