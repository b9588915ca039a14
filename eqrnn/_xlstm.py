"""xLSTM's cells (Beck et al. 2024): `SLSTMCell`, with exponential gating and
block-diagonal recurrence, and `MLSTMCell`, with a matrix memory."""

import math
from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._cell import (
    AbstractAffineInputCell,
    AbstractChunkCell,
    AbstractStackedGatesCell,
    AbstractTupleStateCell,
    default_bias_init,
    default_kernel_init,
    default_recurrent_kernel_init,
    initial_hidden,
    input_gates,
)
from ._linear_scan import (
    linear_scan_final,
    mask_coefficients,
)
from ._loop import Plan, from_chunks, previous, to_chunks, zero_where_padded
from ._misc import (
    check_bool,
    check_forget_bias,
    check_positive,
    check_size,
    gate_kernels,
    optional_bias,
    resolve_dtype,
    split_key,
    with_forget_bias,
)
from ._modes import Associative


SLSTMHidden = tuple[
    Float[Array, " hidden_size"],
    Float[Array, " hidden_size"],
    Float[Array, " hidden_size"],
    Float[Array, " hidden_size"],
]


def check_heads(where: str, hidden_size: int, num_heads: Any) -> int:
    """`num_heads`: a positive integer that divides `hidden_size`."""
    num_heads = check_size("num_heads", num_heads)
    if hidden_size % num_heads:
        raise ValueError(
            f"{where}: `num_heads` ({num_heads}) must divide `hidden_size` "
            f"({hidden_size}): each head holds `hidden_size // num_heads` units, "
            f"e.g. num_heads={_a_divisor(hidden_size, num_heads)}."
        )
    return num_heads


def _a_divisor(n: int, near: int) -> int:
    """The divisor of `n` closest to `near` (for a suggestion that runs)."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - near))


class SLSTMCell(AbstractStackedGatesCell, AbstractTupleStateCell):
    r"""xLSTM's sLSTM (Beck et al. 2024, eq. 8-17): exponential input gate, a
    normaliser state, and recurrence within heads.

    $$\begin{aligned}
    (\tilde\imath, \tilde f, \tilde z, \tilde o) &= W x + R h + b \\
    m' &= \max(\log\sigma(\tilde f) + m, \tilde\imath) \\
    i &= \exp(\tilde\imath - m'), \quad f = \exp(\log\sigma(\tilde f) + m - m') \\
    c' &= f \odot c + i \odot \tanh(\tilde z), \quad n' = f \odot n + i \\
    h' &= \sigma(\tilde o) \odot c' / n'
    \end{aligned}$$

    The hidden state is `(h, c, n, m)`, each of shape `(hidden_size,)`; the layer
    above sees `h`. The stabiliser $m$ keeps every exponential at most 1, so no
    pre-activation overflows, however long the sequence; $c / n$ is unchanged by it.
    Where $n = 0$ (the zero starting state), $m' = \tilde\imath$, as the xLSTM
    package does, so that the first step's $n'$ is 1. The forget gate is the
    sigmoid (the xLSTM package's default, its log taken in log space).

    $R$ is block-diagonal: `num_heads` heads of `hidden_size // num_heads` units,
    each unit's gates reading its own head's `h` only. `weight_ih` is
    `(4 * hidden_size, input_size)`, gates stacked in the order i, f, z, o (the
    xLSTM package's), and `weight_hh` is `(num_heads, 4 * head_size, head_size)`,
    each head's gates stacked in the same order.

    !!! example

        ```python
        cell = eqrnn.SLSTMCell(3, 8, num_heads=2, key=jax.random.key(0))
        h, c, n, m = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # (10, 8) each
        ```
    """

    weight_ih: Float[Array, "four_hidden input_size"]
    weight_hh: Float[Array, "num_heads four_head head_size"]
    bias: Float[Array, " four_hidden"] | None
    initial_hidden: SLSTMHidden | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_heads: int = 1,
        use_bias: bool = True,
        kernel_init: Callable[..., Array] = default_kernel_init,
        recurrent_kernel_init: Callable[..., Array] = default_recurrent_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        forget_bias: float = 0.0,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of `h`, `c`, `n` and `m`.
        - `num_heads`: how many blocks the recurrence splits the units into; must
            divide `hidden_size` (default 1: a full recurrent matrix).
        - `use_bias`: whether to use `bias`.
        - `kernel_init`: initialiser `init(key, (input_size, hidden_size), dtype)`
            for each gate's input weights (default LeCun normal).
        - `recurrent_kernel_init`: the same for each head's and gate's `(head_size,
            head_size)` block (default orthogonal).
        - `bias_init`: initialiser for `bias` (default zeros).
        - `carry_init`: if given, initialiser for the starting `(h, c, n, m)`, drawn
            once here and stored as the trainable `initial_hidden`; else zeros.
        - `forget_bias`: added once, here, to the forget gate's part of `bias` (the
            xLSTM paper starts its forget gates open, e.g. 3.0).
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        check_forget_bias("SLSTMCell", forget_bias, use_bias)
        dtype = resolve_dtype(dtype, "SLSTMCell")
        ikey, hkey, bkey, ckey = split_key("SLSTMCell", key, 4)
        self.input_size, self.hidden_size, self.weight_ih, bias = input_gates(
            "SLSTMCell", input_size, hidden_size, 4, use_bias, kernel_init, bias_init,
            dtype, ikey, bkey,
        )  # fmt: skip
        hs = self.hidden_size
        self.num_heads = check_heads("SLSTMCell", hs, num_heads)
        self.use_bias = use_bias
        head = hs // self.num_heads
        self.weight_hh = jnp.stack(
            [
                gate_kernels(recurrent_kernel_init, k, head, head, 4, dtype)
                for k in jr.split(hkey, self.num_heads)
            ]
        )
        self.bias = with_forget_bias(bias, slice(hs, 2 * hs), forget_bias)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.hidden_size,),) * 4

    def step(
        self, projected: Float[Array, " four_hidden"], hidden: SLSTMHidden
    ) -> SLSTMHidden:
        h, c, n, m = hidden
        hs, heads = self.hidden_size, self.num_heads
        size = hs // heads
        # Each head's gates from its own units, gate-major: (4, heads, head_size).
        recurrent = jnp.einsum(
            "kgij,kj->gki",
            self.weight_hh.reshape(heads, 4, size, size),
            h.reshape(heads, size),
        )
        g = projected + recurrent.reshape(4 * hs)
        i_pre, f_pre, z_pre, o_pre = (
            g[:hs],
            g[hs : 2 * hs],
            g[2 * hs : 3 * hs],
            g[3 * hs :],
        )
        log_f_plus_m = m + jax.nn.log_sigmoid(f_pre)
        m_new = jnp.where(n == 0, i_pre, jnp.maximum(i_pre, log_f_plus_m))
        i = jnp.exp(i_pre - m_new)
        f = jnp.exp(log_f_plus_m - m_new)
        c = f * c + i * jnp.tanh(z_pre)
        n = f * n + i
        return jax.nn.sigmoid(o_pre) * c / n, c, n, m_new

    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        del hoisted
        return None


# Steps per block of `MLSTMCell`'s chunkwise form (see benchmarks/NOTES.md).
_BLOCK = 32

MLSTMHidden = tuple[
    Float[Array, " hidden_size"],
    Float[Array, "num_heads head_size head_size"],
    Float[Array, "num_heads head_size"],
    Float[Array, " num_heads"],
]


class MLSTMCell(AbstractTupleStateCell, AbstractAffineInputCell, AbstractChunkCell):
    r"""xLSTM's mLSTM (Beck et al. 2024, eq. 19-27): a matrix memory per head,
    written by an outer product, with exponential input gate and no recurrence in
    the gates, so that a whole sequence also runs in parallel over time.

    Per head, with $d$ = `head_size`:

    $$\begin{aligned}
    q &= W_q x + b_q, \quad k = (W_k x + b_k) / \sqrt{d}, \quad v = W_v x + b_v \\
    m' &= \max(\log\sigma(\tilde f) + m, \tilde\imath), \quad
    i = \exp(\tilde\imath - m'), \quad f = \exp(\log\sigma(\tilde f) + m - m') \\
    C' &= f\, C + i\, v k^\top, \quad n' = f\, n + i\, k \\
    h' &= \sigma(\tilde o) \odot C' q / (\max(|n'^\top q|, e^{-m'}) + \epsilon)
    \end{aligned}$$

    where $\tilde\imath = w_i^\top x + b_i$ and $\tilde f = w_f^\top x + b_f$ are
    one number per head and $\tilde o = W_o x + b_o$ has `hidden_size` entries. The
    hidden state is `(h, C, n, m)` of shapes `(hidden_size,)`, `(num_heads,
    head_size, head_size)`, `(num_heads, head_size)` and `(num_heads,)`; the layer
    above sees `h`. The stabiliser $m$ keeps every exponential at most 1 and does
    not change $h$ (the $e^{-m'}$ in the denominator is the paper's 1, rescaled);
    $\epsilon$ is the xLSTM package's `1e-6`.

    `weight_ih` is `(4 * hidden_size + 2 * num_heads, input_size)`, stacked in the
    order q, k, v, o, i, f. The scan helpers' `mode` picks the form:

    - `eqrnn.Chunked()` (and `eqrnn.Auto()`): the chunkwise-parallel form. Within
        blocks of 32 steps each output is a masked, stabilised attention over the
        block plus the memory carried into it, and one `jax.lax.scan` step carries
        the memory from block to block. Each step's memory `C` is formed only
        where the stacked hidden states are used (an `RNN` layer uses `h` alone).
    - `eqrnn.Associative()`: the stabilisers by a parallel max-plus scan and every
        step's memory by `eqrnn.linear_scan`, of depth `log2(time)`; it keeps
        every step's `C` (`time * hidden_size * head_size` numbers).
    - `eqrnn.Sequential()`: the recurrent form, one step after another.

    All three give the same numbers to rounding.

    !!! example

        ```python
        cell = eqrnn.MLSTMCell(3, 8, num_heads=2, key=jax.random.key(0))
        h, C, n, m = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)), mode="associative")
        ```
    """

    weight_ih: Float[Array, "projected input_size"]
    bias: Float[Array, " projected"] | None
    initial_hidden: MLSTMHidden | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_heads: int = 1,
        use_bias: bool = True,
        kernel_init: Callable[..., Array] = default_kernel_init,
        bias_init: Callable[..., Array] = default_bias_init,
        carry_init: Callable[..., Array] | None = None,
        forget_bias: float = 0.0,
        eps: float = 1e-6,
        dtype: Any = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `input_size`: the size of the input at each time step.
        - `hidden_size`: the size of `h`, `num_heads * head_size`.
        - `num_heads`: how many memories; must divide `hidden_size` (default 1).
        - `use_bias`: whether to use `bias`.
        - `kernel_init`: initialiser `init(key, (input_size, out), dtype)` of each
            block of `weight_ih` (q, k, v, o with `out = hidden_size`, i and f with
            `out = num_heads`; default LeCun normal).
        - `bias_init`: initialiser for `bias` (default zeros).
        - `carry_init`: if given, initialiser for the starting `(h, C, n, m)`,
            drawn once here and stored as the trainable `initial_hidden`; else
            zeros.
        - `forget_bias`: added once, here, to the forget gates' part of `bias`
            (the xLSTM paper starts its forget gates open, e.g. 3.0).
        - `eps`: added to the denominator of `h` (default `1e-6`, as the xLSTM
            package).
        - `dtype`: the parameters' dtype; default float32 (float64 with
            `jax_enable_x64`).
        - `key`: a `jax.random` key for the initialisation. (Keyword only argument.)
        """
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = hs = check_size("hidden_size", hidden_size)
        self.num_heads = heads = check_heads("MLSTMCell", hs, num_heads)
        self.use_bias = check_bool("MLSTMCell", "use_bias", use_bias)
        check_forget_bias("MLSTMCell", forget_bias, use_bias)
        self.eps = check_positive("MLSTMCell", "eps", eps)
        dtype = resolve_dtype(dtype, "MLSTMCell")
        wkey, gkey, bkey, ckey = split_key("MLSTMCell", key, 4)
        self.weight_ih = jnp.concatenate(
            [
                gate_kernels(kernel_init, wkey, self.input_size, hs, 4, dtype),
                gate_kernels(kernel_init, gkey, self.input_size, heads, 2, dtype),
            ]
        )
        bias = optional_bias(use_bias, bias_init, bkey, 4 * hs + 2 * heads, dtype)
        self.bias = with_forget_bias(bias, slice(4 * hs + heads, None), forget_bias)
        self.initial_hidden = initial_hidden(
            carry_init, ckey, self.hidden_shapes(), dtype
        )

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        heads, size = self.num_heads, self.hidden_size // self.num_heads
        return ((self.hidden_size,), (heads, size, size), (heads, size), (heads,))

    def _split(self, projected: Array) -> tuple[Array, ...]:
        """q, k (scaled), v as `(..., heads, head_size)`; o `(..., hidden_size)`;
        the input and forget pre-activations `(..., heads)`."""
        hs, heads = self.hidden_size, self.num_heads
        size = hs // heads
        lead = projected.shape[:-1]
        q, k, v, o = (
            projected[..., g * hs : (g + 1) * hs].reshape(*lead, heads, size)
            for g in range(4)
        )
        k = k * jnp.asarray(1 / math.sqrt(size), k.dtype)
        i_pre = projected[..., 4 * hs : 4 * hs + heads]
        f_pre = projected[..., 4 * hs + heads :]
        return q, k, v, o.reshape(*lead, hs), i_pre, f_pre

    def _readout(
        self, memory: Array, norm: Array, m: Array, q: Array, o: Array
    ) -> Array:
        """`h` from the memory, normaliser and stabiliser, for any leading axes."""
        num = jnp.einsum("...kvd,...kd->...kv", memory, q)
        dot = jnp.einsum("...kd,...kd->...k", norm, q)
        h = _normalised(num, dot, m, self.eps)
        return jax.nn.sigmoid(o) * h.reshape(*h.shape[:-2], self.hidden_size)

    def step(
        self, projected: Float[Array, " projected"], hidden: MLSTMHidden
    ) -> MLSTMHidden:
        _, memory, norm, m = hidden
        q, k, v, o, i_pre, f_pre = self._split(projected)
        log_f = jax.nn.log_sigmoid(f_pre)
        m_new = jnp.maximum(log_f + m, i_pre)
        f = jnp.exp(log_f + m - m_new)
        i = jnp.exp(i_pre - m_new)
        memory = f[:, None, None] * memory + i[:, None, None] * (
            v[:, :, None] * k[:, None, :]
        )
        norm = f[:, None] * norm + i[:, None] * k
        return self._readout(memory, norm, m_new, q, o), memory, norm, m_new

    def chunk_form(self, plan: Plan) -> Callable[[Any, Any], tuple[Any, Any]]:
        """`run(hidden, (inputs, valid, resets, keys))` for `in_chunks`: the
        chunkwise-parallel form. Within blocks of `_BLOCK` steps every
        output is a masked, stabilised attention over the block plus the memory
        carried into it; a `lax.scan` carries the memory from block to block. No
        step's memory is formed unless the stacked states are used."""
        hs, eps = self.hidden_size, self.eps
        init = cast(MLSTMHidden, self.init_hidden())

        def run(carry: Any, seq_in: Any) -> tuple[Any, Any]:
            x, ok, reset, _ = seq_in
            num_steps = x.shape[0]
            if num_steps == 0:
                return carry, _empty_like(carry) if plan.stack else None
            valid = jnp.ones(num_steps, bool) if ok is None else ok
            if reset is not None:
                reset = reset & valid  # a reset in the padding is ignored
            if plan.reverse:
                x, valid = x[::-1], valid[::-1]
                reset = None if reset is None else reset[::-1]
            block = min(_BLOCK, num_steps)

            def blocks(a: Array) -> Array:
                return to_chunks(a, block)

            per_step = (*self._split(self.project_inputs(x)), valid)
            if reset is not None:
                per_step += (reset,)
            q, k, v, o, i_pre, f_pre, valid_b, *reset_b = jax.tree.map(blocks, per_step)
            # A padded step (the blocks' own padding too) is the identity: forget
            # nothing, write nothing.
            log_f = jnp.where(valid_b[..., None], jax.nn.log_sigmoid(f_pre), 0)
            i_pre = jnp.where(valid_b[..., None], i_pre, -jnp.inf)
            # Heads first: (blocks, heads, block, ...).
            q, k, v, log_f, i_pre = (a.swapaxes(1, 2) for a in (q, k, v, log_f, i_pre))
            body = _mlstm_block(init, hs, eps, plan.stack)
            final, stacked = jax.lax.scan(
                body, carry, (q, k, v, o, log_f, i_pre, valid_b, *reset_b)
            )
            if stacked is None:
                return final, None
            stacked = zero_where_padded(
                valid, jax.tree.map(lambda a: from_chunks(a, num_steps), stacked)
            )
            if plan.reverse:
                stacked = jax.tree.map(lambda a: a[::-1], stacked)
            return final, stacked

        return run

    def associative_form(self, plan: Plan) -> Callable[[Any, Any], tuple[Any, Any]]:
        """`run(hidden, (inputs, valid, resets, keys))` for `in_chunks`: the
        parallel form over one chunk of steps (the whole sequence unless
        checkpointed)."""
        heads = self.num_heads
        reverse = plan.reverse
        _, reset_memory, reset_norm, reset_m = cast(MLSTMHidden, self.init_hidden())

        def flat(memory: Array, norm: Array) -> Array:
            return jnp.concatenate([memory.reshape(*norm.shape[:-1], -1), norm], -1)

        def unflat(state: Array) -> tuple[Array, Array]:
            size = self.hidden_size // heads
            lead = state.shape[:-1]
            return state[..., : size * size].reshape(*lead, size, size), state[
                ..., size * size :
            ]

        def run(carry: Any, seq_in: Any) -> tuple[Any, Any]:
            x, ok, reset, _ = seq_in
            h0, memory0, norm0, m0 = carry
            q, k, v, o, i_pre, f_pre = self._split(self.project_inputs(x))
            log_f = jax.nn.log_sigmoid(f_pre)
            # The stabiliser, m_t = max(log_f_t + m_{t-1}, i_t): a max-plus
            # recurrence, associative in the pairs (log_f_t, i_t).
            shift, top = log_f, i_pre
            if reset is not None:
                r = reset[:, None]
                top = jnp.where(r, jnp.maximum(log_f + reset_m, i_pre), top)
                shift = jnp.where(r, -jnp.inf, shift)
            if ok is not None:
                shift = jnp.where(ok[:, None], shift, 0)
                top = jnp.where(ok[:, None], top, -jnp.inf)
            total, best = jax.lax.associative_scan(
                _max_plus, (shift, top), reverse=reverse
            )
            m = jnp.maximum(total + m0, best)
            m_prev = previous(m, m0, reverse)
            if reset is not None:
                m_prev = jnp.where(reset[:, None], reset_m, m_prev)
            f = jnp.exp(log_f + m_prev - m)
            i = jnp.exp(i_pre - m)
            a = jnp.broadcast_to(
                f[..., None], (*f.shape, reset_memory[0].size + reset_norm.shape[-1])
            )
            b = i[..., None] * flat(v[..., :, None] * k[..., None, :], k)
            a, b = mask_coefficients(a, b, ok, reset, flat(reset_memory, reset_norm))
            final, states = linear_scan_final(
                a,
                b,
                flat(memory0, norm0),
                mode=Associative(),
                reverse=reverse,
                unroll=plan.unroll,
                stack=plan.stack,
            )
            # The final `h` is read at the chunk's last valid step, if any.
            m_final = m[0] if reverse else m[-1]
            steps = jnp.arange(x.shape[0])
            valid = jnp.ones(x.shape[0], bool) if ok is None else ok
            last = (
                jnp.min(jnp.where(valid, steps, x.shape[0] - 1))
                if reverse
                else jnp.max(jnp.where(valid, steps, 0))
            )
            memory, norm = unflat(final)
            h = self._readout(memory, norm, m_final, q[last], o[last])
            h = jnp.where(valid.any(), h, h0)
            if states is None:
                return (h, memory, norm, m_final), None
            memories, norms = unflat(states)
            stacked = (self._readout(memories, norms, m, q, o), memories, norms, m)
            return (h, memory, norm, m_final), zero_where_padded(ok, stacked)

        return run


def _normalised(num: Array, den: Array, m: Array, eps: float) -> Array:
    """`num / (max(|den|, exp(-m)) + eps)`: the mLSTM's output before its gate, from
    the stabilised numerator `C q` and denominator `n . q`."""
    den = jnp.maximum(jnp.abs(den), jnp.exp(-m)) + jnp.asarray(eps, m.dtype)
    return num / den[..., None]


def _empty_like(hidden: Any) -> Any:
    return jax.tree.map(lambda h: jnp.zeros((0, *h.shape), h.dtype), hidden)


def _mlstm_block(
    init: MLSTMHidden, hidden_size: int, eps: float, stack: bool
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """The `lax.scan` body of the chunkwise form: one block of steps from the
    memory carried into it, heads on the leading axis (`q`, `k`, `v`: `(heads,
    block, head_size)`; gates `(heads, block)`).

    With `F_t` the block's cumulative log forget gates, step `t` reads step `s <= t`
    of its segment (the steps since the last reset) with log weight
    `D_ts = F_t - F_s + i_s`, and the segment's starting memory (the carried one,
    or after a reset the starting state) with `g_t = F_t - F_start + m_start`. The
    stabiliser is `m_t = max(g_t, max_s D_ts)`, which is the recurrence's."""
    _, init_memory, init_norm, init_m = init

    def body(carry: Any, inputs: Any) -> tuple[Any, Any]:
        h0, memory0, norm0, m0 = carry
        q, k, v, o, log_f, i_pre, valid, *rest = inputs
        steps = jnp.arange(valid.shape[0])
        causal = steps[:, None] >= steps[None, :]
        # The last reset at or before each step (-1: none in this block).
        start = jax.lax.cummax(jnp.where(rest[0], steps, -1)) if rest else None
        if start is not None:
            causal = causal & (start[:, None] == start[None, :])
        # A step that writes NaN or inf poisons its segment from there on, as in
        # the recurrence. Kept out of the block's products, it cannot reach the
        # steps before it (where it would meet their zero weights: 0 * NaN).
        bad = ~(jnp.isfinite(k).all(-1) & jnp.isfinite(v).all(-1))
        # (`i_pre` is -inf at padding: a step that writes nothing.)
        bad = bad | ~jnp.isfinite(log_f) | jnp.isnan(i_pre) | (i_pre == jnp.inf)
        poisoned = (causal & bad[:, None, :]).any(axis=2)  # (heads, block)
        k, v = (jnp.where(bad[..., None], 0, a) for a in (k, v))
        log_f = jnp.where(bad, 0, log_f)
        i_pre = jnp.where(bad, -jnp.inf, i_pre)
        cum = jnp.cumsum(log_f, axis=1)
        base_memory, base_norm = memory0[:, None], norm0[:, None]
        if start is not None:
            restarted = start >= 0
            before = (cum - log_f)[:, jnp.maximum(start, 0)]  # F before the reset
            cum_start = jnp.where(restarted, before, 0)
            m_start = jnp.where(restarted, init_m[:, None], m0[:, None])
            base_memory = jnp.where(
                restarted[:, None, None], init_memory[:, None], base_memory
            )
            base_norm = jnp.where(restarted[:, None], init_norm[:, None], base_norm)
        else:
            cum_start, m_start = 0, m0[:, None]
        g = cum - cum_start + m_start
        log_w = cum[:, :, None] - cum[:, None, :] + i_pre[:, None, :]
        log_w = jnp.where(causal, log_w, -jnp.inf)
        m = jnp.maximum(g, jnp.max(log_w, axis=2))
        w = jnp.exp(log_w - m[..., None])
        decay = jnp.exp(g - m)
        scores = jnp.einsum("ktd,ksd->kts", q, k) * w
        # Numerator and denominator in one product: each step's row
        # `[decay_t q_t, scores_t]` times `[C^T n; v 1]`, the starting memory and
        # normaliser stacked on the block's values. Never `einsum(C, q)` alone:
        # under `jit(vmap)` with a single block XLA sees the zero starting state
        # as a `broadcast`, and XLA:CPU's YNNPACK fusion (jaxlib 0.10.2) computes
        # a dot that reads a broadcast wrongly once a reduce shares its fusion
        # (garbage; see benchmarks/NOTES.md). A concatenation that holds the
        # values is never a broadcast, and YNNPACK does not fuse it.
        values = jnp.concatenate([v, jnp.ones_like(v[..., :1])], axis=-1)
        lhs = jnp.concatenate([decay[..., None] * q, scores], axis=-1)
        rhs = _stacked_readout(memory0, norm0, values)
        if start is not None:  # the restarted steps read the starting state
            rhs = jnp.concatenate(
                [rhs, _stacked_readout(init_memory, init_norm, values)], axis=-1
            )
        out = lhs @ rhs
        if start is not None:
            restarted = start >= 0
            carried, restart = jnp.split(out, 2, axis=-1)
            out = jnp.where(restarted[..., None], restart, carried)
        num, den = out[..., :-1], out[..., -1]
        hs = jnp.where(poisoned[..., None], jnp.nan, _normalised(num, den, m, eps))
        hs = jax.nn.sigmoid(o) * hs.swapaxes(0, 1).reshape(-1, hidden_size)

        def memories(rows: slice) -> tuple[Array, Array, Array]:
            """The memory, normaliser and stabiliser after the steps `rows`."""
            bad_rows = poisoned[:, rows]
            memory = decay[:, rows, None, None] * base_memory[:, rows] + jnp.einsum(
                "kts,ksv,ksd->ktvd", w[:, rows], v, k
            )
            norm = decay[:, rows, None] * base_norm[:, rows] + jnp.einsum(
                "kts,ksd->ktd", w[:, rows], k
            )
            return (
                jnp.where(bad_rows[..., None, None], jnp.nan, memory),
                jnp.where(bad_rows[..., None], jnp.nan, norm),
                jnp.where(bad_rows, jnp.nan, m[:, rows]),
            )

        memory, norm, m_last = memories(slice(-1, None))
        last = jnp.max(jnp.where(valid, steps, 0))
        h = jnp.where(valid.any(), hs[last], h0)
        final = (h, memory[:, 0], norm[:, 0], m_last[:, 0])
        if not stack:
            return final, None
        every = memories(slice(None))
        return final, (hs, *(x.swapaxes(0, 1) for x in every))

    return body


def _stacked_readout(memory: Array, norm: Array, values: Array) -> Array:
    """`[C^T n; v 1]` per head, `(heads, head_size + block, head_size + 1)`: what
    `[decay_t q_t, scores_t]` multiplies to give `[C q, n . q]` plus the block's
    own numerator and denominator."""
    state = jnp.concatenate([memory.swapaxes(-1, -2), norm[..., None]], axis=-1)
    return jnp.concatenate([state, values], axis=-2)


def _max_plus(earlier: Any, later: Any) -> Any:
    """Compose m -> max(a1 + m, b1), then m -> max(a2 + m, b2)."""
    (a1, b1), (a2, b2) = earlier, later
    return a1 + a2, jnp.maximum(a2 + b1, b2)
