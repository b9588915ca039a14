"""What every cell family's loop over one sequence shares: the checked options of
one call (`Plan`), the step-by-step loop with padding, resets and per-step keys, and
checkpointing by chunks. The cells import this; it imports no cell."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, Shaped


class Plan(eqx.Module):
    """One call of a scan helper, its arguments checked: what a cell family's
    `run_sequence` reads. The inputs it comes with are already zero at padding.

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


def step_loop(
    call: Callable[[Array, Any, Any], Any],
    xs: Array,
    hidden: Any,
    reset_state: Any,
    plan: Plan,
) -> tuple[Any, Any]:
    """`(final, stacked)`: `call(x, hidden, key) -> hidden` run over `xs` with
    `lax.scan`; a padded step keeps the state (and is zero in `stacked`), a reset step
    starts from `reset_state`."""
    stack = plan.stack

    def body(carry: Any, step_in: Any) -> tuple[Any, Any]:
        x, ok, reset, k = step_in
        start = carry if reset is None else tree_where(reset, reset_state, carry)
        new = call(x, start, k)
        if ok is None:
            return new, (new if stack else None)
        out = jax.tree.map(lambda n: jnp.where(ok, n, jnp.zeros_like(n)), new)
        return tree_where(ok, new, carry), (out if stack else None)

    def run_steps(carry: Any, seq_in: Any) -> tuple[Any, Any]:
        return jax.lax.scan(
            body, carry, seq_in, reverse=plan.reverse, unroll=plan.unroll
        )

    return in_chunks(run_steps, hidden, xs, plan)


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
    num_chunks = -(-num_steps // chunk)
    pad = num_chunks * chunk - num_steps
    valid = jnp.ones(num_steps, bool) if plan.valid is None else plan.valid

    def to_chunks(a: Array) -> Array:
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
        return a.reshape(num_chunks, chunk, *a.shape[1:])

    chunked = jax.tree.map(to_chunks, (xs, valid, plan.resets, plan.keys))
    final, outs = jax.lax.scan(
        jax.checkpoint(run), hidden, chunked, reverse=plan.reverse
    )
    outs = jax.tree.map(
        lambda a: a.reshape(num_chunks * chunk, *a.shape[2:])[:num_steps], outs
    )
    return final, outs
