"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?")."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractAffineInputCell,
    default_bias_init,
    default_kernel_init,
    initial_hidden,
    input_gates,
)
from ._linear_cell import AbstractArrayStateLinearCell
from ._misc import check_forget_bias, resolve_dtype, split_key, with_forget_bias


def positive_g(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""The paper's $g(x) = x + \tfrac12$ for $x \ge 0$, $\sigma(x)$ for $x < 0$:
    continuous, increasing and positive (Feng et al. 2024, Appendix B.3)."""
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


def _check_activation(name: str, activation_fn: Any) -> None:
    if not callable(activation_fn):
        raise TypeError(
            f"{name}: `activation_fn` must be callable, got {activation_fn!r}."
        )


class AbstractMinCell(AbstractArrayStateLinearCell, AbstractAffineInputCell):
    """What minGRU and minLSTM share: every gate is a linear map of the input, and
    the hidden state is the linear state."""


class MinGRU(AbstractMinCell):
    r"""A minimal GRU (Feng et al. 2024, "Were RNNs All We Needed?", §3.1): a GRU
    whose gate and candidate read the input only, so that its recurrence is linear.

    $$\begin{aligned}
    z_t &= \sigma(W_z x_t + b_z) \\
    \tilde h_t &= g(W_h x_t + b_h) \\
    h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t
    \end{aligned}$$

    with $g$ = `activation_fn`. The default is the paper's
    $g(x) = x + \tfrac12$ for $x \ge 0$, $\sigma(x)$ for $x < 0$ (Appendix B.3), the
    activation of its log-space implementation, so that a model matches the paper's
    trained ones; pass `activation_fn=lambda x: x` for §3.1's plain $\tilde h_t = W_h
    x_t + b_h$. eqrnn never computes in log space (it needs no positive $\tilde h$):
    $1 - z_t$ is evaluated as $\sigma(-(W_z x_t + b_z))$ and the sequence backends
    multiply and add the coefficients directly, which stays accurate to float32
    rounding over long sequences. The starting state is used as given (the paper's
    log-space code passes it through $g$ as well).

    The weights are stacked in the order z, h: `weight_ih` is `(2 * hidden_size,
    input_size)` and `bias` is `(2 * hidden_size,)`. There is no recurrent weight.

    !!! example

        ```python
        cell = eqrnn.MinGRU(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "two_hidden input_size"]
    bias: Float[Array, " two_hidden"] | None
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
        activation_fn: Callable[[Array], Array] = positive_g,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        r"""**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to use `bias`.
        - `activation_fn`: the candidate's activation $g$ (default the paper's
            $g$, see above).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each of the two weight blocks (default LeCun normal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        _check_activation("MinGRU", activation_fn)
        dtype = resolve_dtype(dtype, "MinGRU")
        wkey, bkey, ckey = split_key("MinGRU", key, 3)
        self.input_size, self.hidden_size, self.weight_ih, self.bias = input_gates(
            "MinGRU",
            input_size,
            hidden_size,
            2,
            use_bias,
            kernel_init,
            bias_init,
            dtype,
            wkey,
            bkey,
        )
        self.use_bias = use_bias
        self.activation_fn = activation_fn
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def linear_coefficients(
        self, projected: Float[Array, "*time two_hidden"]
    ) -> tuple[Float[Array, "*time hidden_size"], Float[Array, "*time hidden_size"]]:
        hs = self.hidden_size
        k = projected[..., :hs]
        candidate = self.activation_fn(projected[..., hs:])
        # 1 - sigmoid(k) = sigmoid(-k), without the cancellation when z is near 1.
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * candidate


class MinLSTM(AbstractMinCell):
    r"""A minimal LSTM (Feng et al. 2024, "Were RNNs All We Needed?", §3.2): an LSTM
    whose gates and candidate read the input only, with the forget and input gates
    normalised to sum to one, so that its recurrence is linear and time-independent
    in scale.

    $$\begin{aligned}
    f_t &= \sigma(W_f x_t + b_f) &
    i_t &= \sigma(W_i x_t + b_i) &
    \tilde h_t &= g(W_h x_t + b_h) \\
    f'_t &= \frac{f_t}{f_t + i_t} &
    i'_t &= \frac{i_t}{f_t + i_t} &
    h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t
    \end{aligned}$$

    with $g$ = `activation_fn`, by default the paper's $g(x) = x + \tfrac12$ for
    $x \ge 0$, $\sigma(x)$ for $x < 0$ (see `MinGRU`). The normalised gates are
    evaluated as $f'_t = \sigma(\log\sigma(k_f) - \log\sigma(k_i))$ and $i'_t =
    \sigma(\log\sigma(k_i) - \log\sigma(k_f))$ (the same numbers, as the paper's
    log-space code computes them), which neither overflows nor loses $i'_t$ to
    cancellation when $f'_t$ is close to 1.

    The weights are stacked in the order f, i, h: `weight_ih` is `(3 * hidden_size,
    input_size)` and `bias` is `(3 * hidden_size,)`. There is no recurrent weight.

    !!! example

        ```python
        cell = eqrnn.MinLSTM(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # shape (10, 8)
        ```
    """

    weight_ih: Float[Array, "three_hidden input_size"]
    bias: Float[Array, " three_hidden"] | None
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
        activation_fn: Callable[[Array], Array] = positive_g,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        forget_bias: float = 0.0,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        r"""**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of the hidden state.
        - `use_bias`: whether to use `bias`.
        - `activation_fn`: the candidate's activation $g$ (default the paper's
            $g$, see `MinGRU`).
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each of the three weight blocks (default LeCun normal, as Flax).
        - `bias_init`: initialiser for `bias` (default zeros, as Flax).
        - `carry_init`: if given, initialiser for the starting hidden state, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `forget_bias`: added once, here, to the forget gate's part of `bias`
            (as `LSTMCell`'s; a positive value favours long memories). It is a
            parameter from then on. Needs `use_bias=True` unless it is 0.
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        _check_activation("MinLSTM", activation_fn)
        check_forget_bias("MinLSTM", forget_bias, use_bias)
        dtype = resolve_dtype(dtype, "MinLSTM")
        wkey, bkey, ckey = split_key("MinLSTM", key, 3)
        input_size, hidden_size, self.weight_ih, bias = input_gates(
            "MinLSTM",
            input_size,
            hidden_size,
            3,
            use_bias,
            kernel_init,
            bias_init,
            dtype,
            wkey,
            bkey,
        )
        self.bias = with_forget_bias(bias, slice(hidden_size), forget_bias)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.use_bias = use_bias
        self.activation_fn = activation_fn
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def linear_coefficients(
        self, projected: Float[Array, "*time three_hidden"]
    ) -> tuple[Float[Array, "*time hidden_size"], Float[Array, "*time hidden_size"]]:
        hs = self.hidden_size
        log_f = jax.nn.log_sigmoid(projected[..., :hs])
        log_i = jax.nn.log_sigmoid(projected[..., hs : 2 * hs])
        candidate = self.activation_fn(projected[..., 2 * hs :])
        diff = log_f - log_i
        return jax.nn.sigmoid(diff), jax.nn.sigmoid(-diff) * candidate
