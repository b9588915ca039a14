"""Diagonal linear recurrent units: the LRU (Orvieto et al. 2023) and Griffin's
RG-LRU (De et al. 2024)."""

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractTupleStateCell,
    affine,
    default_bias_init,
    default_kernel_init,
    initial_hidden,
)
from ._linear_cell import AbstractArrayStateLinearCell, AbstractLinearCell
from ._misc import (
    check_bool,
    check_size,
    gate_kernels,
    optional_bias,
    resolve_dtype,
    split_key,
)


# `(y, x)`: the output and the complex state as `[Re x; Im x]`.
LRUHidden: TypeAlias = tuple[Float[Array, " hidden_size"], Float[Array, " two_state"]]


def _check_number(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: `{name}` must be a number, got {value!r}.")
    return float(value)


def _compute_dtype(dtype: Any) -> Any:
    # Decay rates near 1 need more than bfloat16's 8 bits: 0.999 rounds to 1.
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)


class LRU(AbstractLinearCell, AbstractTupleStateCell):
    r"""A linear recurrent unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural
    Networks for Long Sequences", §3): a complex diagonal linear recurrence with a
    stable exponential parametrisation and normalised input.

    $$\begin{aligned}
    \lambda &= \exp(-\exp(\nu) + i \exp(\theta)) \\
    x_t &= \lambda \odot x_{t-1} + \exp(\gamma^{\log}) \odot (B u_t) \\
    y_t &= \operatorname{Re}(C x_t) + D u_t
    \end{aligned}$$

    with a complex state $x_t$ of `state_size` entries, $B = B^{re} + i B^{im}$ and
    $C = C^{re} + i C^{im}$. At initialisation $|\lambda|$ is drawn uniformly on the
    ring `r_min <= |λ| <= r_max` of the complex plane (§3.3, Lemma 3.2), its phase
    uniformly in `[0, max_phase]`, and $\gamma^{\log} = \log\sqrt{1 - |\lambda|^2}$
    (the normalisation of §3.4, then trained); $B^{re}, B^{im} \sim
    \mathcal N(0, 1/(2\,\text{input\_size}))$ and $C^{re}, C^{im} \sim
    \mathcal N(0, 1/\text{state\_size})$, as in the paper's Appendix A.

    The hidden state is the tuple `(y, x)`: the output $y_t$ (shape `(hidden_size,)`,
    what `output` returns and the layer above sees) and the complex state stored as
    real numbers, $x = [\operatorname{Re} x_t; \operatorname{Im} x_t]$ (shape `(2 *
    state_size,)`). Real pairs rather than a complex dtype: the recurrence ran 25%
    faster on CPU that way, bfloat16 stays possible, and the hidden state is a real
    array like every other cell's. $y$ is carried so that `scan_all_hidden` returns
    every output; the recurrence reads only $x$.

    $D$ is a full `(hidden_size, input_size)` matrix, so that input and output sizes
    may differ; the paper's $D$ is diagonal (input size = output size, $\mathcal N(0,
    1)$ entries): for that, set `D` to `jnp.diag(d)`.

    !!! example

        ```python
        cell = eqrnn.LRU(3, 8, state_size=16, key=jax.random.key(0))
        ys, xs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # (10, 8), (10, 32)
        ```
    """

    nu_log: Float[Array, " state_size"]
    theta_log: Float[Array, " state_size"]
    gamma_log: Float[Array, " state_size"]
    B_re: Float[Array, "state_size input_size"]
    B_im: Float[Array, "state_size input_size"]
    C_re: Float[Array, "hidden_size state_size"]
    C_im: Float[Array, "hidden_size state_size"]
    D: Float[Array, "hidden_size input_size"]
    initial_hidden: LRUHidden | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        state_size: int | None = None,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        kernel_init: Callable[..., Array] = default_kernel_init,
        carry_init: Callable[..., Array] | None = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        r"""**Arguments:**

        - `input_size`: the size of the input $u_t$ at each time step.
        - `hidden_size`: the size of the output $y_t$.
        - `state_size`: the number of complex entries of the state $x_t$ (default
            `hidden_size`).
        - `r_min`, `r_max`: the ring that $|\lambda|$ is drawn from,
            `0 <= r_min < r_max <= 1` (default 0.9 and 0.999, the paper's choice
            for its long-range tasks).
        - `max_phase`: the phase of $\lambda$ is drawn from `[0, max_phase]`
            (default $2\pi$; the paper uses $\pi/10$ on some long-range tasks).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for $D$ (default LeCun normal, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state `(y,
            x)`, drawn once here and stored as the trainable `initial_hidden`; else
            zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        if state_size is None:
            state_size = hidden_size
        check_size("state_size", state_size)
        r_min = _check_number("r_min", r_min, "LRU")
        r_max = _check_number("r_max", r_max, "LRU")
        max_phase = _check_number("max_phase", max_phase, "LRU")
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(
                f"LRU: `r_min` and `r_max` must satisfy 0 <= r_min < r_max <= 1, got "
                f"r_min={r_min}, r_max={r_max}."
            )
        if not max_phase > 0:
            raise ValueError(f"LRU: `max_phase` must be positive, got {max_phase}.")
        dtype = resolve_dtype(dtype, "LRU")
        init_dtype = _compute_dtype(dtype)
        rkey, pkey, bkey, ckey, dkey, hkey = split_key("LRU", key, 6)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.state_size = state_size
        u1 = jr.uniform(rkey, (state_size,), init_dtype)
        u2 = jr.uniform(pkey, (state_size,), init_dtype)
        # |λ|² uniform in [r_min², r_max²]: uniform on the ring (Lemma 3.2).
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = jnp.log(max_phase * u2)
        modulus_sq = jnp.exp(-2 * jnp.exp(nu_log))
        gamma_log = 0.5 * jnp.log1p(-modulus_sq)
        self.nu_log = nu_log.astype(dtype)
        self.theta_log = theta_log.astype(dtype)
        self.gamma_log = gamma_log.astype(dtype)
        b_re, b_im = jr.normal(bkey, (2, state_size, input_size), init_dtype)
        scale_b = 1 / math.sqrt(2 * input_size)
        self.B_re = (scale_b * b_re).astype(dtype)
        self.B_im = (scale_b * b_im).astype(dtype)
        c_re, c_im = jr.normal(ckey, (2, hidden_size, state_size), init_dtype)
        scale_c = 1 / math.sqrt(state_size)
        self.C_re = (scale_c * c_re).astype(dtype)
        self.C_im = (scale_c * c_im).astype(dtype)
        self.D = gate_kernels(kernel_init, dkey, input_size, hidden_size, 1, dtype)
        self.initial_hidden = initial_hidden(  # pyright: ignore[reportAttributeAccessIssue]
            carry_init, hkey, self.hidden_shapes(), dtype
        )

    def step_input_shape(self) -> tuple[int, ...]:
        return (self.input_size,)

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.hidden_size,), (2 * self.state_size,))

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time projected"]:
        # [gamma Re(B u); gamma Im(B u); D u] in one matmul.
        gamma = jnp.exp(self.gamma_log)[:, None]
        weight = jnp.concatenate([gamma * self.B_re, gamma * self.B_im, self.D])
        return inputs @ weight.T

    def eigenvalues(
        self,
    ) -> tuple[Float[Array, " state_size"], Float[Array, " state_size"]]:
        r"""$\lambda$ as `(Re λ, Im λ)`.

        **Returns:**

        Two arrays of shape `(state_size,)`.
        """
        dtype = _compute_dtype(self.dtype)
        modulus = jnp.exp(-jnp.exp(self.nu_log.astype(dtype)))
        phase = jnp.exp(self.theta_log.astype(dtype))
        return (
            (modulus * jnp.cos(phase)).astype(self.dtype),
            (modulus * jnp.sin(phase)).astype(self.dtype),
        )

    def linear_coefficients(
        self, projected: Float[Array, "*time projected"]
    ) -> tuple[
        tuple[Float[Array, "*time state_size"], Float[Array, "*time state_size"]],
        tuple[Float[Array, "*time state_size"], Float[Array, "*time state_size"]],
    ]:
        n = self.state_size
        shape = (*projected.shape[:-1], n)
        lam_re, lam_im = self.eigenvalues()
        a = (jnp.broadcast_to(lam_re, shape), jnp.broadcast_to(lam_im, shape))
        return a, (projected[..., :n], projected[..., n : 2 * n])

    def linear_state(
        self,
        hidden: tuple[
            Float[Array, "*time hidden_size"], Float[Array, "*time two_state"]
        ],
    ) -> tuple[Float[Array, "*time state_size"], Float[Array, "*time state_size"]]:
        x = hidden[1]
        return x[..., : self.state_size], x[..., self.state_size :]

    def hidden_from_state(
        self,
        state: tuple[
            Float[Array, "*time state_size"], Float[Array, "*time state_size"]
        ],
        projected: Float[Array, "*time projected"],
    ) -> tuple[Float[Array, "*time hidden_size"], Float[Array, "*time two_state"]]:
        x_re, x_im = state
        skip = projected[..., 2 * self.state_size :]
        y = x_re @ self.C_re.T - x_im @ self.C_im.T + skip
        return y, jnp.concatenate([x_re, x_im], axis=-1)


class RGLRU(AbstractArrayStateLinearCell):
    r"""The real-gated linear recurrent unit of Griffin (De et al. 2024, "Griffin:
    Mixing Gated Linear Recurrences with Local Attention for Efficient Language
    Models", §2.4, eqs. 1-4), as in RecurrentGemma.

    $$\begin{aligned}
    r_t &= \sigma(W_a x_t + b_a) &
    i_t &= \sigma(W_x x_t + b_x) \\
    a_t &= a^{c r_t}, \quad a = \sigma(\Lambda) &
    h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t)
    \end{aligned}$$

    with $c$ = `c` (8 in the paper). $a_t$ is evaluated in log space, $\log a_t = -c
    r_t \operatorname{softplus}(-\Lambda)$, and $\sqrt{1 - a_t^2}$ as
    $\sqrt{-\operatorname{expm1}(2 \log a_t)}$, which keeps its accuracy when $a_t$
    is close to 1; the recurrence itself is then evaluated directly. $\Lambda$ is
    initialised as RecurrentGemma's code does, with $a^2 = \sigma(\Lambda)^2$
    uniform in `[min_rad², max_rad²]` (the paper's text says $a^c$).

    The gate weights are dense and stacked in the order a, x: `weight_ih` is `(2 *
    hidden_size, input_size)` (Griffin uses block-diagonal ones). The input is
    gated elementwise, so `input_size` must equal `hidden_size` (in Griffin a linear
    layer and a convolution come first). Unlike RecurrentGemma, a `resets` step in
    the scan helpers keeps the $\sqrt{1 - a_t^2}$ factor (eqrnn's resets only
    restart the state), and the square root's gradient is not clipped (RecurrentGemma
    bounds it at 1000, for $a_t \to 1$).

    !!! example

        ```python
        cell = eqrnn.RGLRU(8, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 8)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "two_hidden input_size"]
    bias: Float[Array, " two_hidden"] | None
    a_logit: Float[Array, " hidden_size"]
    initial_hidden: Float[Array, " hidden_size"] | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    c: float = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_bias: bool = True,
        c: float = 8.0,
        min_rad: float = 0.9,
        max_rad: float = 0.999,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        r"""**Arguments:**

        - `input_size`: the size of the input at each time step; must equal
            `hidden_size`.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to use `bias`.
        - `c`: the constant $c$ of $a_t = a^{c r_t}$ (default 8, as the paper).
        - `min_rad`, `max_rad`: the range of $a = \sigma(\Lambda)$ at
            initialisation, `0 < min_rad < max_rad < 1` (default 0.9 and 0.999).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each gate's weights (default LeCun normal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        input_size = check_size("input_size", input_size)
        hidden_size = check_size("hidden_size", hidden_size)
        if input_size != hidden_size:
            raise ValueError(
                f"RGLRU: `input_size` must equal `hidden_size`, because the input is "
                f"gated elementwise into the state, got input_size={input_size} and "
                f"hidden_size={hidden_size}. Map the input to `hidden_size` first "
                "(e.g. with `equinox.nn.Linear`), as Griffin does."
            )
        c = _check_number("c", c, "RGLRU")
        if not c > 0:
            raise ValueError(f"RGLRU: `c` must be positive, got {c}.")
        min_rad = _check_number("min_rad", min_rad, "RGLRU")
        max_rad = _check_number("max_rad", max_rad, "RGLRU")
        if not 0 < min_rad < max_rad < 1:
            raise ValueError(
                "RGLRU: `min_rad` and `max_rad` must satisfy 0 < min_rad < max_rad < "
                f"1, got min_rad={min_rad}, max_rad={max_rad}."
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.use_bias = check_bool("RGLRU", "use_bias", use_bias)
        self.c = c
        dtype = resolve_dtype(dtype, "RGLRU")
        wkey, bkey, akey, ckey = split_key("RGLRU", key, 4)
        self.weight_ih = gate_kernels(
            kernel_init, wkey, input_size, hidden_size, 2, dtype
        )
        self.bias = optional_bias(use_bias, bias_init, bkey, 2 * hidden_size, dtype)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )
        unif = jr.uniform(
            akey, (hidden_size,), _compute_dtype(dtype), min_rad**2, max_rad**2
        )
        radius = jnp.sqrt(unif)
        self.a_logit = (jnp.log(radius) - jnp.log1p(-radius)).astype(dtype)

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time projected"]:
        # The gates' pre-activations, then the input itself (gated in the step).
        gates = affine(inputs, self.weight_ih, self.bias)
        return jnp.concatenate([gates, inputs], axis=-1)

    def step_input_shape(self) -> tuple[int, ...]:
        return (self.input_size,)

    def linear_coefficients(
        self, projected: Float[Array, "*time projected"]
    ) -> tuple[Float[Array, "*time hidden_size"], Float[Array, "*time hidden_size"]]:
        hs = self.hidden_size
        r = jax.nn.sigmoid(projected[..., :hs])
        i = jax.nn.sigmoid(projected[..., hs : 2 * hs])
        x = projected[..., 2 * hs :]
        # log sigmoid(L) = -softplus(-L), L = a_logit.
        log_a = -self.c * r * jax.nn.softplus(-self.a_logit)
        a = jnp.exp(log_a)
        scale = jnp.sqrt(-jnp.expm1(2 * log_a))
        return a, scale * (i * x)
