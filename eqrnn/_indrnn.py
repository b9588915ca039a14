from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractAffineInputCell,
    AbstractArrayStateCell,
    AbstractNewtonCell,
    AbstractStepCell,
    default_bias_init,
    default_kernel_init,
    initial_hidden,
    input_gates,
)
from ._custom_types import HiddenArray
from ._jacobians import derivative
from ._misc import resolve_dtype, split_key


# The recurrent weights u, uniform in [0, 1).
default_recurrent_init = jax.nn.initializers.uniform(1.0)


class IndRNNCell(
    AbstractStepCell,
    AbstractAffineInputCell,
    AbstractArrayStateCell,
    AbstractNewtonCell,
):
    r"""The independently recurrent cell of Li et al. 2018, "Independently Recurrent
    Neural Network (IndRNN)": $h' = \phi(W x + u \odot h + b)$.

    Each unit reads only its own past, through one recurrent weight $u_j$ (the vector
    `weight_hh`), so the step's Jacobian is diagonal and `eqrnn.Newton` runs exact
    Newton for it. $\phi$ is `activation_fn` (`jax.nn.relu` by default, as in the
    paper). `weight_ih` is `(hidden_size, input_size)`.

    !!! example

        ```python
        cell = eqrnn.IndRNNCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "hidden_size input_size"]
    weight_hh: Float[Array, " hidden_size"]
    bias: Float[Array, " hidden_size"] | None
    initial_hidden: Float[Array, " hidden_size"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        activation_fn: Callable[[Array], Array] = jax.nn.relu,
        kernel_init: Callable[..., Array] = default_kernel_init,
        recurrent_init: Callable[..., Array] = default_recurrent_init,
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
        - `activation_fn`: the nonlinearity $\\phi$ (default `jax.nn.relu`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for the input weights (default LeCun normal, as Flax).
        - `recurrent_init`: initialiser `init(key, (hidden_size,), dtype)` for the
            recurrent weights $u$ (default uniform in [0, 1), within the paper's
            bound $|u_j| \\le 1$ for ReLU).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        dtype = resolve_dtype(dtype, "IndRNNCell")
        ikey, hkey, bkey, ckey = split_key("IndRNNCell", key, 4)
        self.input_size, self.hidden_size, self.weight_ih, self.bias = input_gates(
            "IndRNNCell",
            input_size,
            hidden_size,
            1,
            use_bias,
            kernel_init,
            bias_init,
            dtype,
            ikey,
            bkey,
        )
        self.weight_hh = recurrent_init(hkey, (self.hidden_size,), dtype)
        self.use_bias = use_bias
        self.activation_fn = activation_fn
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        del hoisted
        return None

    def step(
        self, projected: Float[Array, " hidden_size"], hidden: HiddenArray
    ) -> HiddenArray:
        return self.activation_fn(projected + self.weight_hh * hidden)

    def unit_jacobians(
        self, projected: Float[Array, " hidden_size"], hidden: HiddenArray
    ) -> Float[Array, "hidden_size 1 1"]:
        _, slope = derivative(self.activation_fn, projected + self.weight_hh * hidden)
        return (slope * self.weight_hh)[:, None, None]
