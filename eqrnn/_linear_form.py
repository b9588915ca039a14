"""How the modes run a cell whose recurrence is linear in its state (an
`AbstractLinearCell`): the coefficients of every step at once, handed to the
linear-scan engine that the mode names (`Sequential`, `Associative`, `Chunked`)."""

import dataclasses
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._linear_cell import AbstractLinearCell
from ._linear_scan import linear_scan_final, mask_coefficients
from ._loop import Plan, in_chunks, tree_where, zero_where_padded
from ._modes import Sequential


def run_linear(
    cell: AbstractLinearCell,
    inputs: Float[Array, "time input_size"],
    hidden: Any,
    plan: Plan,
) -> tuple[Any, Any]:
    """`(final, stacked)` of a linear cell over one sequence. Padding and resets
    become coefficients, and the engine carries the linear state rather than the
    hidden state (they differ for `LRU`, whose hidden state holds its output)."""
    reset_linear = cell.linear_state(cell.init_hidden())
    mode = plan.mode
    if plan.chunk == 3 and not isinstance(mode, Sequential):
        # XLA's CPU backend (jax 0.10.2) crashes at run time on chunks of 3 in
        # the gradient of `LRU`, reversed, with resets; 4 gives the same numbers.
        plan = dataclasses.replace(plan, chunk=4)
    # Checkpointed, each chunk projects its own inputs and returns hidden states,
    # so that nothing of size (time, projected) is kept for the backward pass.
    chunked = plan.chunk is not None
    xs = inputs if chunked else cell.project_inputs(inputs)

    def run(carry: Any, seq_in: Any) -> tuple[Any, Any]:
        x, ok, reset, _ = seq_in
        projected = cell.project_inputs(x) if chunked else x
        a, b = cell.linear_coefficients(projected)
        a, b = mask_coefficients(a, b, ok, reset, reset_linear)
        final, states = linear_scan_final(
            a,
            b,
            carry,
            mode=mode,
            reverse=plan.reverse,
            unroll=plan.unroll,
            stack=plan.stack,
        )
        if chunked and states is not None:
            states = cell.hidden_from_state(states, projected)
        return final, states

    final, states = in_chunks(run, cell.linear_state(hidden), xs, plan)
    return _hiddens(cell, xs, chunked, hidden, final, states, plan)


def _hiddens(
    cell: AbstractLinearCell,
    xs: Array,
    raw_inputs: bool,
    hidden: Any,
    final: Any,
    states: Any,
    plan: Plan,
) -> tuple[Any, Any]:
    """The final hidden state and the stacked ones (zero at padded steps), from
    what the engine returned: linear states, or, when `raw_inputs` (checkpointed:
    `xs` are the inputs, not their projections), hidden states already."""
    num_steps, length = xs.shape[0], plan.length
    if num_steps == 0:
        final = hidden
    else:
        # The last step that was run: its input completes the hidden state
        # (`LRU`'s output needs it); with no valid step the state is the start.
        if plan.reverse:
            last = 0
        else:
            last = num_steps - 1 if length is None else length - 1
        last_in = xs[jnp.maximum(last, 0)]
        if raw_inputs:
            last_in = cell.project_inputs(last_in)
        final = cell.hidden_from_state(final, last_in)
        if length is not None:
            final = tree_where(length > 0, final, hidden)
    if states is None:
        return final, None
    hiddens = states if raw_inputs else cell.hidden_from_state(states, xs)
    return final, zero_where_padded(plan.valid, hiddens)
