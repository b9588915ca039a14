"""Layer-normalised cells: the LSTM of Ba, Kiros and Hinton (2016) and the GRU of
DreamerV2/V3's recurrent state-space model."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractArrayStateCell,
    AbstractStackedGatesCell,
    AbstractStepCell,
    AbstractTupleStateCell,
    affine,
    default_bias_init,
    default_kernel_init,
    default_recurrent_kernel_init,
    initial_hidden,
    stacked_gates,
)
from ._custom_types import HiddenArray, LSTMHidden
from ._misc import check_forget_bias, check_positive, split_key, with_forget_bias


def layer_norm(
    x: Float[Array, "*batch features"],
    weight: Float[Array, " features"],
    bias: Float[Array, " features"] | None,
    eps: float,
) -> Float[Array, "*batch features"]:
    """`(x - mean) / sqrt(var + eps) * weight + bias` over the last axis."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    out = centred * jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype)) * weight
    return out if bias is None else out + bias


def _norm_params(size: int, dtype: Any) -> tuple[Array, Array]:
    """A layer norm's gain (ones) and offset (zeros)."""
    return jnp.ones(size, dtype), jnp.zeros(size, dtype)


class LayerNormLSTMCell(AbstractStepCell, AbstractTupleStateCell):
    r"""An LSTM with layer normalisation (Ba, Kiros and Hinton 2016, eq. 20-22).

    $$\begin{aligned}
    (i, f, g, o) &= \mathrm{LN}(W_{ih} x; \gamma_{ih})
        + \mathrm{LN}(W_{hh} h; \gamma_{hh}) + b \\
    c' &= \sigma(f) \odot c + \sigma(i) \odot \tanh(g) \\
    h' &= \sigma(o) \odot \tanh(\mathrm{LN}(c'; \gamma_c, \beta_c))
    \end{aligned}$$

    where $\mathrm{LN}(v; \gamma, \beta) = (v - \bar v) / \sqrt{\mathrm{var}(v) +
    \epsilon} \odot \gamma + \beta$ normalises over all entries of $v$ (the four
    gates together for $W_{ih} x$ and $W_{hh} h$). The two gate normalisations have
    gains only: their offsets would add to $b$. The carried $c'$ is not normalised,
    as in the paper (TensorFlow Addons' `LayerNormLSTMCell` carries the normalised
    one and uses $\epsilon = 10^{-3}$). Normalising $W_{hh} h$ makes the gates blind to
    the scale of $h$, so the recurrence need not contract: at the default
    initialisation, on unit-variance inputs, a perturbation of $10^{-9}$ grows to
    order 1 within 2,000 steps and the gradient over 4,096 steps overflows float32
    (BENCHMARKS.md). Over long sequences clip gradients or train with
    `truncated_bptt`. The weights are stacked as `LSTMCell`'s, gates
    in the order i, f, g, o. The input's normalisation depends on the input alone,
    so a whole sequence's is computed before the loop where the platform hoists it.

    !!! example

        ```python
        cell = eqrnn.LayerNormLSTMCell(3, 8, key=jax.random.key(0))
        hs, cs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # (10, 8) each
        ```
    """

    weight_ih: Float[Array, "four_hidden input_size"]
    weight_hh: Float[Array, "four_hidden hidden_size"]
    bias: Float[Array, " four_hidden"] | None
    norm_ih_weight: Float[Array, " four_hidden"]
    norm_hh_weight: Float[Array, " four_hidden"]
    norm_c_weight: Float[Array, " hidden_size"]
    norm_c_bias: Float[Array, " hidden_size"]
    initial_hidden: LSTMHidden | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    eps: float = eqx.field(static=True)
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
        forget_bias: float = 0.0,
        eps: float = 1e-5,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of `h` and `c`.
        - `use_bias`: whether to use `bias`.
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the nonlinearity of `g` and of `LN(c')` (default
            `jnp.tanh`).
        - `kernel_init`, `recurrent_kernel_init`, `bias_init`, `carry_init`: as in
            `LSTMCell`. The normalisations' gains start at one and `c`'s offset at
            zero.
        - `forget_bias`: added once, here, to the forget gate's part of `bias`, as
            in `LSTMCell`.
        - `eps`: the normalisations' $\\epsilon$ (default `1e-5`, as PyTorch's
            `LayerNorm`).
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        check_forget_bias("LayerNormLSTMCell", forget_bias, use_bias)
        self.eps = check_positive("LayerNormLSTMCell", "eps", eps)
        ikey, hkey, bkey, ckey = split_key("LayerNormLSTMCell", key, 4)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            bias,
        ) = stacked_gates(
            "LayerNormLSTMCell",
            input_size,
            hidden_size,
            4,
            use_bias,
            kernel_init,
            recurrent_kernel_init,
            bias_init,
            dtype,
            (ikey, hkey, bkey),
        )
        hs = self.hidden_size
        self.bias = with_forget_bias(bias, slice(hs, 2 * hs), forget_bias)
        self.use_bias = use_bias
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.norm_ih_weight = jnp.ones(4 * hs, dtype)
        self.norm_hh_weight = jnp.ones(4 * hs, dtype)
        self.norm_c_weight, self.norm_c_bias = _norm_params(hs, dtype)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def step_input_shape(self) -> tuple[int, ...]:
        return (self.input_size,)

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.hidden_size,), (self.hidden_size,))

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time four_hidden"]:
        normed = layer_norm(
            affine(inputs, self.weight_ih, None), self.norm_ih_weight, None, self.eps
        )
        return normed if self.bias is None else normed + self.bias

    def step(
        self, projected: Float[Array, " four_hidden"], hidden: LSTMHidden
    ) -> LSTMHidden:
        h, c = hidden
        hs = self.hidden_size
        recurrent = layer_norm(self.weight_hh @ h, self.norm_hh_weight, None, self.eps)
        g = projected + recurrent
        i = self.gate_fn(g[:hs])
        f = self.gate_fn(g[hs : 2 * hs])
        cand = self.activation_fn(g[2 * hs : 3 * hs])
        o = self.gate_fn(g[3 * hs :])
        c = f * c + i * cand
        normed_c = layer_norm(c, self.norm_c_weight, self.norm_c_bias, self.eps)
        return o * self.activation_fn(normed_c), c

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        del hoisted
        return None


class LayerNormGRUCell(AbstractStackedGatesCell, AbstractArrayStateCell):
    r"""The layer-normalised GRU of DreamerV2/V3's recurrent state-space model.

    $$\begin{aligned}
    (r, n, u) &= \mathrm{LN}(W_{ih} x + W_{hh} h + b; \gamma, \beta) \\
    h' &= \sigma(u + b_u) \odot \tanh(\sigma(r) \odot n)
        + (1 - \sigma(u + b_u)) \odot h
    \end{aligned}$$

    with one normalisation over the three stacked gate pre-activations (see
    `LayerNormLSTMCell` for $\mathrm{LN}$), $\sigma$ = `gate_fn`, $\tanh$ =
    `activation_fn` and $b_u$ = `update_bias` (default -1, as Dreamer, which starts
    the state close to keeping itself). The gates are stacked in Dreamer's order:
    reset, candidate, update; the reset gate multiplies the whole candidate
    pre-activation, and the update gate weights the candidate (PyTorch's GRU weights
    the old state). `bias` (off by default, as Dreamer: the normalisation's offset
    $\beta$ takes its place) is added before the normalisation.

    !!! example

        ```python
        cell = eqrnn.LayerNormGRUCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "three_hidden input_size"]
    weight_hh: Float[Array, "three_hidden hidden_size"]
    bias: Float[Array, " three_hidden"] | None
    norm_weight: Float[Array, " three_hidden"]
    norm_bias: Float[Array, " three_hidden"]
    initial_hidden: Float[Array, " hidden_size"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    update_bias: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    gate_fn: Callable[[Array], Array] = eqx.field(static=True)
    activation_fn: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = False,
        gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Callable[..., Array] = default_kernel_init,
        recurrent_kernel_init: Callable[..., Array] = default_recurrent_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        update_bias: float = -1.0,
        eps: float = 1e-5,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to add `bias` before the normalisation (default
            `False`, as Dreamer).
        - `gate_fn`: the gate nonlinearity $\\sigma$ (default `jax.nn.sigmoid`).
        - `activation_fn`: the candidate nonlinearity (default `jnp.tanh`).
        - `kernel_init`, `recurrent_kernel_init`, `bias_init`, `carry_init`: as in
            `GRUCell`. The normalisation's gain starts at one and its offset at
            zero.
        - `update_bias`: $b_u$, a constant added to the update gate's
            pre-activation at every step (default -1.0, as DreamerV2/V3).
        - `eps`: the normalisation's $\\epsilon$ (default `1e-5`; Dreamer uses
            `1e-3`).
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        if isinstance(update_bias, bool) or not isinstance(update_bias, int | float):
            raise TypeError(
                f"LayerNormGRUCell: `update_bias` must be a float, got {update_bias!r}."
            )
        self.update_bias = float(update_bias)
        self.eps = check_positive("LayerNormGRUCell", "eps", eps)
        ikey, hkey, bkey, ckey = split_key("LayerNormGRUCell", key, 4)
        (
            self.input_size,
            self.hidden_size,
            dtype,
            self.weight_ih,
            self.weight_hh,
            self.bias,
        ) = stacked_gates(
            "LayerNormGRUCell",
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
        self.norm_weight, self.norm_bias = _norm_params(3 * self.hidden_size, dtype)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def step(
        self, projected: Float[Array, " three_hidden"], hidden: HiddenArray
    ) -> HiddenArray:
        hs = self.hidden_size
        parts = layer_norm(
            projected + self.weight_hh @ hidden,
            self.norm_weight,
            self.norm_bias,
            self.eps,
        )
        reset = self.gate_fn(parts[:hs])
        cand = self.activation_fn(reset * parts[hs : 2 * hs])
        update = self.gate_fn(parts[2 * hs :] + self.update_bias)
        return hidden + update * (cand - hidden)

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        del hoisted
        return None
