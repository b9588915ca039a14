from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractPointwiseCell,
    AbstractStackedGatesCell,
    AbstractTupleStateCell,
    default_bias_init,
    default_kernel_init,
    default_recurrent_kernel_init,
    has_default_nonlinearities,
    initial_hidden,
    stacked_gates,
)
from ._custom_types import LSTMHidden
from ._fused import laid_out, lstm_pointwise
from ._misc import (
    check_forget_bias,
    check_size,
    gate_kernels,
    split_key,
    with_forget_bias,
)


class LSTMCell(AbstractStackedGatesCell, AbstractTupleStateCell, AbstractPointwiseCell):
    r"""A long short-term memory cell, with one fused matmul per step.

    $$\begin{aligned}
    i &= \sigma(W_{ii} x + W_{hi} h + b_i) &
    f &= \sigma(W_{if} x + W_{hf} h + b_f) \\
    g &= \tanh(W_{ig} x + W_{hg} h + b_g) &
    o &= \sigma(W_{io} x + W_{ho} h + b_o) \\
    c' &= f \odot c + i \odot g &
    h' &= o \odot \tanh(c')
    \end{aligned}$$

    with $\sigma$ = `gate_fn` and $\tanh$ = `activation_fn`. The hidden state is the
    tuple `(h, c)` (PyTorch and Equinox order; Flax's carry is `(c, h)`). The weights
    are stored as PyTorch stores them, gates stacked in the order i, f, g, o:
    `weight_ih` is `(4 * hidden_size, input_size)`, `weight_hh` is `(4 * hidden_size,
    hidden_size)`, and the single `bias` is PyTorch's `bias_ih + bias_hh`.

    With `proj_size` (PyTorch's LSTM with projections, Sak et al. 2014), $h' =
    W_{hr}(o \odot \tanh(c'))$ has `proj_size` entries: `weight_hr` is `(proj_size,
    hidden_size)` and `weight_hh` is `(4 * hidden_size, proj_size)`.

    !!! example

        ```python
        cell = eqrnn.LSTMCell(3, 8, key=jax.random.key(0))
        hs, cs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # (10, 8) each
        ```
    """

    weight_ih: Float[Array, "four_hidden input_size"]
    weight_hh: Float[Array, "four_hidden output_size"]
    bias: Float[Array, " four_hidden"] | None
    weight_hr: Float[Array, "output_size hidden_size"] | None
    initial_hidden: LSTMHidden | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    gate_fn: Callable[[Array], Array] = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)
    proj_size: int | None = eqx.field(static=True)

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
        forget_bias: float = 0.0,
        proj_size: int | None = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of `h` and `c`.
        - `use_bias`: whether to use `bias`.
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the nonlinearity of `g` and of `c'` (default `jnp.tanh`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each gate's input weights (default LeCun normal, as Flax).
        - `recurrent_kernel_init`: the same for each gate's `(hidden_size,
            hidden_size)` recurrent weights (`(proj_size, hidden_size)` with a
            projection; default orthogonal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting `h` and `c`, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `forget_bias`: added once, here, to the forget gate's part of `bias`
            (1.0 is the common choice for long memories; the default 0.0 matches
            Flax and PyTorch). It is a parameter from then on, never added at run
            time. Needs `use_bias=True` unless it is 0.
        - `proj_size`: if given, project `h` down to this many entries with
            `weight_hr` (initialised with `kernel_init`), as PyTorch's `proj_size`.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        check_forget_bias("LSTMCell", forget_bias, use_bias)
        if proj_size is not None:
            proj_size = check_size("proj_size", proj_size)
            if proj_size >= hidden_size:
                raise ValueError(
                    f"LSTMCell: `proj_size` must be smaller than `hidden_size` "
                    f"({hidden_size}), got {proj_size}."
                )
        self.proj_size = proj_size
        # The first four keys are those of the other cells; `weight_hr` takes a fifth.
        ikey, hkey, bkey, ckey, rkey = split_key("LSTMCell", key, 5)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            bias,
        ) = stacked_gates(
            "LSTMCell",
            input_size,
            hidden_size,
            4,
            use_bias,
            kernel_init,
            recurrent_kernel_init,
            bias_init,
            dtype,
            (ikey, hkey, bkey),
            recurrent_size=proj_size,
        )
        self.use_bias = use_bias
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        hs = self.hidden_size
        self.bias = with_forget_bias(bias, slice(hs, 2 * hs), forget_bias)
        self.weight_hr = (
            None
            if proj_size is None
            else gate_kernels(kernel_init, rkey, self.hidden_size, proj_size, 1, dtype)
        )
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        out = self.hidden_size if self.proj_size is None else self.proj_size
        return ((out,), (self.hidden_size,))

    def step(
        self, projected: Float[Array, " four_hidden"], hidden: LSTMHidden
    ) -> LSTMHidden:
        h, c = self._pointwise(projected, self.weight_hh @ hidden[0], hidden)
        return (h if self.weight_hr is None else self.weight_hr @ h), c

    def _pointwise(
        self, projected: Array, recurrent: Array, hidden: tuple[Array, Array]
    ) -> tuple[Array, Array]:
        # The step before the projection `weight_hr`: `(h, c)` of `hidden_size`.
        hs = self.hidden_size
        g = projected + recurrent
        i = self.gate_fn(g[:hs])
        f = self.gate_fn(g[hs : 2 * hs])
        cand = self.activation_fn(g[2 * hs : 3 * hs])
        o = self.gate_fn(g[3 * hs :])
        c = f * hidden[1] + i * cand
        return o * self.activation_fn(c), c

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        if self.weight_hr is not None or not has_default_nonlinearities(
            self.activation_fn, self.gate_fn
        ):
            return None
        if hoisted:
            recur = laid_out(self.weight_hh)

            def hoisted_step(projected: Array, hidden: LSTMHidden) -> LSTMHidden:
                h, c = hidden
                return lstm_pointwise(projected + recur(h), c)

            return hoisted_step
        # One matmul per step for both halves: `[x, h] @ [weight_ih, weight_hh].T`
        # (measured faster than two at the benchmark sizes). Its transpose is made
        # from the two weights' transposes, which XLA compiles to one kernel
        # (transposing the concatenation took two: less compile time).
        gates = laid_out(
            jnp.concatenate([self.weight_ih, self.weight_hh], axis=1),
            self.bias,
            weight_t=jnp.concatenate([self.weight_ih.T, self.weight_hh.T]),
        )

        def fused_step(x: Array, hidden: LSTMHidden) -> LSTMHidden:
            h, c = hidden
            return lstm_pointwise(gates(jnp.concatenate([x, h], axis=-1)), c)

        return fused_step
