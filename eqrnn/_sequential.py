"""The sequential strategy (`eqrnn.Sequential`) for a cell run one step after
another: one `jax.lax.scan` over the sequence, with padding, resets, per-step keys
and checkpointing. Whether the inputs are projected before the loop is decided here,
for the platform (`Plan.hoist`), not by the cell."""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._cell import AbstractCell, AbstractStepCell, AbstractStochasticCell
from ._loop import Plan, in_chunks, tree_where


def run_steps(
    cell: AbstractCell,
    inputs: Float[Array, " time *input_shape"],
    hidden: Any,
    plan: Plan,
) -> tuple[Any, Any]:
    """`(final, stacked)`: `cell`'s step run over `inputs` by `lax.scan`; a padded
    step keeps the state (and is zero in `stacked`), a reset step starts from the
    cell's `init_hidden()`."""
    stack = plan.stack
    keyed = plan.keys is not None and isinstance(cell, AbstractStochasticCell)
    reset_state = cell.init_hidden()
    # A step-by-step cell reads its inputs projected before the loop where the
    # platform gains by it, and may give a faster form of its step (`fused_step`);
    # any other cell's projection leaves the loop.
    step_cell = isinstance(cell, AbstractStepCell)
    hoist = plan.hoist or not step_cell
    xs = cell.project_inputs(inputs) if hoist else inputs
    fused = cell.fused_step(hoist) if step_cell else None

    def body(carry: Any, step_in: Any) -> tuple[Any, Any]:
        x, ok, reset, key = step_in
        start = carry if reset is None else tree_where(reset, reset_state, carry)
        if fused is not None:
            new = fused(x, start)
        else:
            projected = x if hoist else cell.project_inputs(x)
            if keyed:
                assert isinstance(cell, AbstractStochasticCell)
                new = cell.keyed_step(projected, start, key)
            else:
                new = cell.step(projected, start)
        if ok is None:
            return new, (new if stack else None)
        out = jax.tree.map(lambda n: jnp.where(ok, n, jnp.zeros_like(n)), new)
        return tree_where(ok, new, carry), (out if stack else None)

    if plan.chunk is None:
        seq_in = (xs, plan.valid, plan.resets, plan.keys)
        return jax.lax.scan(
            body, hidden, seq_in, reverse=plan.reverse, unroll=plan.unroll
        )

    def run_chunk(carry: Any, seq_in: Any) -> tuple[Any, Any]:
        return jax.lax.scan(
            body, carry, seq_in, reverse=plan.reverse, unroll=plan.unroll
        )

    return in_chunks(run_chunk, hidden, xs, plan)
