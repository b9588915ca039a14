"""The engine for linear recurrences, $h_t = a_t \\odot h_{t-1} + b_t$.

Three backends evaluate the same recurrence over a whole sequence:

- `"sequential"`: one `jax.lax.scan` step per time step, the recurrence exactly as
  written (the same arithmetic as a cell's own step);
- `"associative"`: `jax.lax.associative_scan` over the pairs `(a_t, b_t)` with
  `(a, b) ∘ (a', b') = (a' a, a' b + b')`: depth `log2(time)`, for accelerators;
- `"chunked"`: the associative scan inside chunks of `chunk_size` steps, all chunks at
  once, and a sequential scan across chunks to carry the state from one chunk to the
  next.

All three multiply and add the coefficients themselves, never their logarithms: the
log-space form divides by products that leave float32's range after a few hundred
steps, while products of factors with `|a_t| <= 1` only underflow, harmlessly
(`tests/test_linear_scan.py` holds the accuracy over long sequences).

Coefficients are real or complex arrays of shape `(time, *state)`, or a pair
`(re, im)` of real arrays standing for a complex diagonal recurrence (what `eqrnn.LRU`
uses: faster than complex64 on CPU, and bfloat16 stays possible; benchmarks/NOTES.md).
"""

import functools
from typing import Any, Literal, TypeAlias, overload

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Inexact

from ._coefficients import Coefficients as Coefficients, is_pair, mul, mul_add
from ._loop import from_chunks, previous
from ._modes import (
    PARALLEL_MODES,
    AbstractMode,
    Associative,
    Auto,
    Chunked,
    Sequential,
    as_mode,
    linear_engine,
)
from ._platform import Unroll, check_unroll, resolve_unroll


# `linear_scan`'s `mode`: a mode object or its name.
Mode: TypeAlias = (
    Literal["auto", "sequential", "associative", "chunked"]
    | Auto
    | Sequential
    | Associative
    | Chunked
)
DEFAULT_CHUNK_SIZE = 64

# (A variable, not a literal: linters would read "time *state" as a product.)
_TIME_STATE = "time *state"
Steps: TypeAlias = (
    Inexact[Array, _TIME_STATE]
    | tuple[Float[Array, _TIME_STATE], Float[Array, _TIME_STATE]]
)
StepsLike: TypeAlias = (
    Inexact[ArrayLike, _TIME_STATE]
    | tuple[Float[ArrayLike, _TIME_STATE], Float[ArrayLike, _TIME_STATE]]
)
StateLike: TypeAlias = (
    Inexact[ArrayLike, "*state"]
    | tuple[Float[ArrayLike, "*state"], Float[ArrayLike, "*state"]]
)


def identity_coefficients(a: Any, b: Any) -> tuple[Any, Any]:
    """`(1, 0)` shaped like `(a, b)`: a step that leaves the state unchanged."""
    if is_pair(a):
        return (jnp.ones_like(a[0]), jnp.zeros_like(a[1])), jax.tree.map(
            jnp.zeros_like, b
        )
    return jnp.ones_like(a), jnp.zeros_like(b)


def _tree_where_time(mask: Array, on_true: Any, on_false: Any) -> Any:
    """`where(mask[t], on_true[t], on_false[t])` for leaves of shape `(time, ...)`."""

    def where(x: Array, y: Array) -> Array:
        m = mask.reshape(mask.shape + (1,) * (jnp.ndim(x) - 1))
        return jnp.where(m, x, y)

    return jax.tree.map(where, on_true, on_false)


def mask_coefficients(
    a: Any, b: Any, valid: Array | None, resets: Array | None, reset_state: Any
) -> tuple[Any, Any]:
    """Fold `resets` and padding into the coefficients.

    A reset step starts from `reset_state`: `h_t = a_t reset_state + b_t`, i.e.
    `b_t := a_t reset_state + b_t` and `a_t := 0`. A padded step (`valid` false) is the
    identity, `a_t := 1`, `b_t := 0`, so the state is carried through it unchanged (and
    a reset inside the padding is ignored, as the step-by-step scan ignores it).
    """
    if resets is not None:
        zeros = jax.tree.map(jnp.zeros_like, a)
        b = _tree_where_time(resets, mul_add(a, reset_state, b), b)
        a = _tree_where_time(resets, zeros, a)
    if valid is not None:
        one, zero = identity_coefficients(a, b)
        a = _tree_where_time(valid, a, one)
        b = _tree_where_time(valid, b, zero)
    return a, b


def _leading(x: Any) -> int:
    return jax.tree.leaves(x)[0].shape[0]


def _sequential(
    a: Any, b: Any, h0: Any, reverse: bool, unroll: int | bool, stack: bool
) -> tuple[Any, Any]:
    def body(h: Any, ab: Any) -> tuple[Any, Any]:
        h = mul_add(ab[0], h, ab[1])
        return h, (h if stack else None)

    return jax.lax.scan(body, h0, (a, b), reverse=reverse, unroll=unroll)


def _combine(earlier: Any, later: Any) -> Any:
    # Two steps in a row: later ∘ earlier, h -> a2 (a1 h + b1) + b2.
    a1, b1 = earlier
    a2, b2 = later
    return mul(a2, a1), mul_add(a2, b1, b2)


def _with_start(a: Any, b: Any, h0: Any, reverse: bool) -> Any:
    """`b` with the starting state moved into the first step's offset:
    `b_first := a_first h0 + b_first`, so that the recurrence can start from zero."""
    first = -1 if reverse else 0
    start = mul_add(
        jax.tree.map(lambda x: x[first], a), h0, jax.tree.map(lambda x: x[first], b)
    )
    return jax.tree.map(lambda x, s: x.at[first].set(s), b, start)


def _associative(
    a: Any, b: Any, h0: Any | None, reverse: bool, stack: bool
) -> tuple[Any, Any]:
    """The associative backend; `h0=None` starts from zero."""
    if h0 is not None:
        b = _with_start(a, b, h0, reverse)
    _, hs = jax.lax.associative_scan(_combine, (a, b), reverse=reverse)
    final = jax.tree.map(lambda x: x[0 if reverse else -1], hs)
    return final, (hs if stack else None)


def _chunked(
    a: Any,
    b: Any,
    h0: Any,
    reverse: bool,
    unroll: int | bool,
    stack: bool,
    chunk_size: int,
) -> tuple[Any, Any]:
    if reverse:

        def flip(t: Any) -> Any:
            return jax.tree.map(lambda x: jnp.flip(x, axis=0), t)

        final, hs = _chunked(flip(a), flip(b), h0, False, unroll, stack, chunk_size)
        return final, (flip(hs) if stack else None)
    num_steps = _leading(a)
    size = min(chunk_size, num_steps)
    num_chunks = -(-num_steps // size)
    pad = num_chunks * size - num_steps
    if pad:
        # Identity steps at the end leave the final state as it was.
        one, zero = identity_coefficients(
            jax.tree.map(lambda x: x[:pad], a), jax.tree.map(lambda x: x[:pad], b)
        )
        a = jax.tree.map(lambda x, p: jnp.concatenate([x, p]), a, one)
        b = jax.tree.map(lambda x, p: jnp.concatenate([x, p]), b, zero)

    def to_chunks(x: Array) -> Array:
        return x.reshape(num_chunks, size, *x.shape[1:])

    a, b = jax.tree.map(to_chunks, (a, b))
    # Within every chunk at once: step t of a chunk is A_t h_in + B_t, h_in the state
    # the chunk starts from.
    prefix_a, prefix_b = jax.lax.associative_scan(_combine, (a, b), axis=1)
    last = jax.tree.map(lambda x: x[:, -1], (prefix_a, prefix_b))

    def across(h: Any, ab: Any) -> tuple[Any, Any]:
        return mul_add(ab[0], h, ab[1]), h

    final, starts = jax.lax.scan(across, h0, last, unroll=unroll)
    if not stack:
        return final, None
    starts = jax.tree.map(lambda s: s[:, None], starts)
    hs = mul_add(prefix_a, starts, prefix_b)
    return final, jax.tree.map(lambda x: from_chunks(x, num_steps), hs)


def _run(
    a: Any,
    b: Any,
    h0: Any | None,
    mode: AbstractMode,
    reverse: bool,
    unroll: int | bool,
    chunk_size: int,
    stack: bool,
) -> tuple[Any, Any]:
    """`(final, hs)` by the backend `mode`; `h0=None` starts from zero (which the
    associative backend needs no offset for)."""
    if isinstance(mode, Associative):
        return _associative(a, b, h0, reverse, stack)
    if h0 is None:
        h0 = jax.tree.map(lambda x: jnp.zeros_like(x[0]), b)
    if isinstance(mode, Sequential):
        return _sequential(a, b, h0, reverse, unroll, stack)
    assert isinstance(mode, Chunked), mode
    return _chunked(a, b, h0, reverse, unroll, stack, chunk_size)


def _tangent(
    primals: tuple[Any, Any, Any], tangents: tuple[Any, Any, Any], hs: Any, options: Any
) -> tuple[Any, Any]:
    """The tangent of the recurrence, itself a linear recurrence with the same `a`:
    dh_t = a_t dh_{t-1} + (da_t h_{t-1} + db_t)."""
    a, _, h0 = primals
    da, db, dh0 = tangents
    mode, reverse, unroll, chunk_size = options
    h_prev = _h_prev(hs, h0, reverse)
    u = mul_add(da, h_prev, db)
    return _run(a, u, dh0, mode, reverse, unroll, chunk_size, stack=True)


# The derivative of a linear recurrence is a linear recurrence with the same `a`
# (JAX transposes it into one more scan, backwards in time, for reverse mode). Said
# explicitly, differentiation neither stores every intermediate of the backend (the
# levels of the associative scan, the per-step residuals of `jax.lax.scan`) nor
# replays it: only the states are kept, and forward mode keeps working.
@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _scan_stacked(a: Any, b: Any, h0: Any, options: Any) -> tuple[Any, Any]:
    mode, reverse, unroll, chunk_size = options
    return _run(a, b, h0, mode, reverse, unroll, chunk_size, stack=True)


@_scan_stacked.defjvp
def _scan_stacked_jvp(options: Any, primals: Any, tangents: Any) -> tuple[Any, Any]:
    a, b, h0 = primals
    final, hs = _scan_stacked(a, b, h0, options)
    dfinal, dhs = _tangent(primals, tangents, hs, options)
    return (final, hs), (dfinal, dhs)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def _scan_final(a: Any, b: Any, h0: Any, options: Any) -> Any:
    mode, reverse, unroll, chunk_size = options
    return _run(a, b, h0, mode, reverse, unroll, chunk_size, stack=False)[0]


@_scan_final.defjvp
def _scan_final_jvp(options: Any, primals: Any, tangents: Any) -> tuple[Any, Any]:
    a, b, h0 = primals
    final, hs = _scan_stacked(a, b, h0, options)
    dfinal, _ = _tangent(primals, tangents, hs, options)
    return final, dfinal


def _h_prev(hs: Any, h0: Any, reverse: bool) -> Any:
    """The state each step starts from: h_{t-1} (h_{t+1} when `reverse`)."""
    return jax.tree.map(lambda h, start: previous(h, start, reverse), hs, h0)


def _shifted_transpose(a: Any, reverse: bool) -> Any:
    """The coefficients of the transposed recurrence: `a` moved one step on
    (`a_{t+1}`, zero after the last step) and, for pairs, the transpose of the
    complex product."""
    shifted = jax.tree.map(lambda x: previous(x, jnp.zeros_like(x[0]), not reverse), a)
    return (shifted[0], -shifted[1]) if is_pair(shifted) else shifted


def _parallel_stacked(a: Any, b: Any, h0: Any, options: Any) -> tuple[Any, Any]:
    """`(final, hs)` by the associative or chunked backend, as the solution of the
    linear system `h_t - a_t h_{t-1} = b_t` (with `a_first h0` moved into `b`).

    `jax.lax.custom_linear_solve` differentiates it in both modes without looking
    inside the backend: the tangent is the same system with another right-hand
    side, `db_t + da_t h_{t-1}`, solved by the same backend; reverse mode solves
    the transposed system, `lam_t = g_t + a_{t+1} lam_{t+1}`, backwards in time.
    Only `a` and the states are kept for it."""
    mode, reverse, unroll, chunk_size = options
    zeros = jax.tree.map(jnp.zeros_like, h0)
    b = _with_start(a, b, h0, reverse)

    def matvec(h: Any) -> Any:
        return jax.tree.map(jnp.subtract, h, mul(a, _h_prev(h, zeros, reverse)))

    def run(a: Any, rhs: Any, reverse: bool) -> Any:
        return _run(a, rhs, None, mode, reverse, unroll, chunk_size, True)[1]

    def solve(_: Any, rhs: Any) -> Any:
        return run(a, rhs, reverse)

    def transpose_solve(_: Any, rhs: Any) -> Any:
        return run(_shifted_transpose(a, reverse), rhs, not reverse)

    hs = jax.lax.custom_linear_solve(matvec, b, solve, transpose_solve)
    return jax.tree.map(lambda x: x[0 if reverse else -1], hs), hs


def linear_scan_final(
    a: Any,
    b: Any,
    h0: Any,
    *,
    mode: AbstractMode,
    reverse: bool,
    unroll: int | bool = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    stack: bool = True,
) -> tuple[Any, Any]:
    """`(final, hs)` of the recurrence, `hs` only if `stack`; `mode` a concrete
    engine (`Sequential`, `Associative` or `Chunked`), not `Auto`.
    `final` is the state after the last step (after step 0 when `reverse`)."""
    if _leading(a) == 0:
        return h0, (jax.tree.map(jnp.asarray, b) if stack else None)
    options = (mode, reverse, unroll, chunk_size)
    if not isinstance(mode, Sequential):
        final, hs = _parallel_stacked(a, b, h0, options)
        return final, (hs if stack else None)
    if stack:
        return _scan_stacked(a, b, h0, options)
    return _scan_final(a, b, h0, options), None


def _as_coefficients(x: Any, name: str) -> Any:
    leaves = [jnp.asarray(x[0]), jnp.asarray(x[1])] if is_pair(x) else [jnp.asarray(x)]
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.inexact):
            raise TypeError(
                f"linear_scan: `{name}` must be a floating-point or complex array, got "
                f"dtype {leaf.dtype}."
            )
    return tuple(leaves) if is_pair(x) else leaves[0]


@overload
def linear_scan(
    a: Inexact[ArrayLike, _TIME_STATE],
    b: Inexact[ArrayLike, _TIME_STATE],
    h0: Inexact[ArrayLike, "*state"] | None = None,
    *,
    mode: Mode = "auto",
    reverse: bool = False,
    unroll: Unroll = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Inexact[Array, _TIME_STATE]: ...


@overload
def linear_scan(
    a: tuple[Float[ArrayLike, _TIME_STATE], Float[ArrayLike, _TIME_STATE]],
    b: tuple[Float[ArrayLike, _TIME_STATE], Float[ArrayLike, _TIME_STATE]],
    h0: tuple[Float[ArrayLike, "*state"], Float[ArrayLike, "*state"]] | None = None,
    *,
    mode: Mode = "auto",
    reverse: bool = False,
    unroll: Unroll = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Float[Array, _TIME_STATE], Float[Array, _TIME_STATE]]: ...


def linear_scan(
    a: StepsLike,
    b: StepsLike,
    h0: StateLike | None = None,
    *,
    mode: Mode = "auto",
    reverse: bool = False,
    unroll: Unroll = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Steps:
    r"""Evaluate the linear recurrence $h_t = a_t \odot h_{t-1} + b_t$ over a sequence.

    $$h_t = a_t \odot h_{t-1} + b_t, \qquad h_{-1} = h_0,$$

    elementwise over the state axes, for every step `t` of axis 0 (from the last step
    to the first when `reverse=True`, with $h_{t+1}$ in place of $h_{t-1}$). The
    coefficients may be real or complex arrays, or `(re, im)` pairs of real arrays
    standing for complex ones (then $a_t \odot h$ is the complex product). This is
    the engine behind the parallel-in-time cells (`MinGRU`, `MinLSTM`, `LRU`,
    `RGLRU`); `scan_last` and `scan_all_hidden` call it for them.

    !!! example

        ```python
        a = jnp.full((5, 3), 0.5)
        b = jnp.ones((5, 3))
        hs = eqrnn.linear_scan(a, b, mode="associative")  # hs[-1] = 1.9375
        ```

    **Arguments:**

    - `a`: the multiplicative coefficients, shape `(time, *state)`, or an `(re, im)`
        pair of such real arrays.
    - `b`: the additive terms, with the structure and shape of `a`.
    - `h0`: the state before the first step, shape `state` (or an `(re, im)` pair);
        default zeros.
    - `mode`: the backend: `eqrnn.Sequential()` (a `jax.lax.scan`, one step at a
        time), `eqrnn.Associative()` (`jax.lax.associative_scan`, depth
        `log2(time)`), `eqrnn.Chunked()` (associative within chunks of `chunk_size`
        steps, sequential across them), or `eqrnn.Auto()`: sequential on CPU,
        associative elsewhere; or their names, `"sequential"`, `"associative"`,
        `"chunked"`, `"auto"`.
    - `reverse`: run from the last step to the first.
    - `unroll`: steps unrolled per iteration of the sequential scans (the whole
        `"sequential"` backend, the scan across chunks of `"chunked"`): a positive
        int, a bool (`True`: all of them) or `"auto"`, the platform's choice (see
        `eqrnn.scan_all_hidden`).
    - `chunk_size`: the number of steps per chunk for `mode="chunked"`.

    The result can be differentiated with respect to `a`, `b` and `h0` in both
    modes (`jax.grad`, `jax.vjp`, `jax.jvp`, `jax.jacfwd`, Hessian-vector
    products): the tangent is the same recurrence with another `b`, and the
    gradient one more linear recurrence run backwards in time, both by the same
    backend.

    **Returns:**

    The state after every step, stacked on axis 0: the structure and shape of `b`.
    `hs[-1]` is the final state (`hs[0]` when `reverse=True`).
    """
    engine = as_mode(mode, "linear_scan", PARALLEL_MODES)
    if not isinstance(reverse, bool):
        raise TypeError(f"linear_scan: `reverse` must be a bool, got {reverse!r}.")
    check_unroll(unroll, "linear_scan")
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise ValueError(
            f"linear_scan: `chunk_size` must be a positive int, got {chunk_size!r}."
        )
    if is_pair(a) != is_pair(b) or (h0 is not None and is_pair(h0) != is_pair(a)):
        raise TypeError(
            "linear_scan: `a`, `b` and `h0` must all be arrays or all be (re, im) "
            "pairs of arrays."
        )
    a = _as_coefficients(a, "a")
    b = _as_coefficients(b, "b")
    shapes = {jnp.shape(x) for x in jax.tree.leaves((a, b))}
    if len(shapes) != 1 or not jnp.ndim(jax.tree.leaves(a)[0]):
        raise ValueError(
            "linear_scan: `a` and `b` must have one and the same shape (time, "
            f"*state), got {jax.tree.map(jnp.shape, (a, b))}."
        )
    state_shape = jax.tree.leaves(a)[0].shape[1:]
    dtype = jnp.result_type(*jax.tree.leaves((a, b)))
    if h0 is None:
        zeros = jnp.zeros(state_shape, dtype)
        h0 = (zeros, zeros) if is_pair(a) else zeros
    else:
        h0 = _as_coefficients(h0, "h0")
        if any(jnp.shape(x) != state_shape for x in jax.tree.leaves(h0)):
            raise ValueError(
                f"linear_scan: `h0` must have the state shape {state_shape} (the shape "
                f"of `a` without its time axis), got {jax.tree.map(jnp.shape, h0)}."
            )
    a, b, h0 = jax.tree.map(lambda x: x.astype(dtype), (a, b, h0))
    _, hs = linear_scan_final(
        a,
        b,
        h0,
        mode=linear_engine() if isinstance(engine, Auto) else engine,
        reverse=reverse,
        unroll=resolve_unroll(unroll, _leading(a)),
        chunk_size=chunk_size,
    )
    return hs
