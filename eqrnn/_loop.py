"""What every strategy's loop over one sequence shares: the checked options of one
call (`Plan`), and the idioms of a time axis (masking padded steps, the previous
step's state, cutting a sequence into chunks, checkpointing by chunks). The
strategies import this; it imports no cell and no strategy."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, Shaped


class Plan(eqx.Module):
    """One call of a scan helper, its arguments checked: what a strategy reads. The
    inputs it comes with are already zero at padding.

    - `valid`: `(time,)` booleans, false at padding; `None` when every step is valid.
    - `length`: the number of valid steps, or `None`.
    - `resets`: `(time,)` booleans, or `None`.
    - `keys`: one `jax.random` key per step, or `None`.
    - `reverse`, `stack`: run backwards; return every step's state too.
    - `unroll`: steps per `jax.lax.scan` iteration (resolved for the platform).
    - `chunk`: steps per checkpointed chunk, or `None`.
    - `mode`: the concrete mode object that runs the loop (`eqrnn.Auto` already
      resolved for the cell and platform).
    - `hoist`: whether a step-by-step cell projects every input before the loop.
    - `where`: the public function, for error messages.
    """

    valid: Bool[Array, " time"] | None
    length: Int[Array, ""] | None
    resets: Bool[Array, " time"] | None
    keys: Shaped[Array, "time ..."] | None
    reverse: bool = eqx.field(static=True)
    stack: bool = eqx.field(static=True)
    unroll: int | bool = eqx.field(static=True)
    chunk: int | None = eqx.field(static=True)
    mode: Any = eqx.field(static=True)
    hoist: bool = eqx.field(static=True)
    where: str = eqx.field(static=True)


def tree_where(pred: Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def over_time(mask: Array, x: Array) -> Array:
    """`mask`, of shape `(time,)`, broadcast against `x`, of shape `(time, ...)`."""
    return mask.reshape(-1, *(1,) * (x.ndim - 1))


def zero_where_padded(valid: Array | None, tree: Any) -> Any:
    """Every array of `tree` (time-major) with zeros at the steps where `valid` is
    false; `tree` itself when `valid` is `None`."""
    if valid is None:
        return tree
    return jax.tree.map(
        lambda a: jnp.where(over_time(valid, a), a, jnp.zeros((), a.dtype)), tree
    )


def previous(hs: Array, start: Array, reverse: bool) -> Array:
    """The state each step starts from: `hs` (time-major) shifted one step along
    the direction of the run, `start` at the first step that runs."""
    if reverse:
        return jnp.concatenate([hs[1:], start[None]])
    return jnp.concatenate([start[None], hs[:-1]])


def to_chunks(a: Array, size: int) -> Array:
    """`a`, time-major, zero-padded to a multiple of `size` steps and cut into
    chunks: shape `(num_chunks, size, ...)`."""
    num_chunks = -(-a.shape[0] // size)
    pad = num_chunks * size - a.shape[0]
    a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
    return a.reshape(num_chunks, size, *a.shape[1:])


def from_chunks(a: Array, num_steps: int) -> Array:
    """The inverse of `to_chunks`: `(num_chunks, size, ...)` back to the first
    `num_steps` steps."""
    return a.reshape(-1, *a.shape[2:])[:num_steps]


def in_chunks(
    run: Callable[[Any, Any], tuple[Any, Any]], hidden: Any, xs: Array, plan: Plan
) -> tuple[Any, Any]:
    """`run(hidden, (xs, valid, resets, keys))`, or with `plan.chunk` the same
    through an outer scan over chunks whose forward pass is recomputed in the
    backward pass: only the state at chunk boundaries is stored, so with chunks of
    ~sqrt(time) steps memory grows as sqrt(time)."""
    seq_in = (xs, plan.valid, plan.resets, plan.keys)
    chunk = plan.chunk
    if chunk is None:
        return run(hidden, seq_in)
    num_steps = xs.shape[0]
    valid = jnp.ones(num_steps, bool) if plan.valid is None else plan.valid
    chunked = jax.tree.map(
        lambda a: to_chunks(a, chunk), (xs, valid, plan.resets, plan.keys)
    )
    final, outs = jax.lax.scan(
        jax.checkpoint(run), hidden, chunked, reverse=plan.reverse
    )
    return final, jax.tree.map(lambda a: from_chunks(a, num_steps), outs)
