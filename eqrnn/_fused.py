"""A faster backward pass through time for `AbstractFusedCell`s (eqrnn's `GRUCell` and
`LSTMCell` with their default activations), whose step is

    recurrent = weight_hh @ recurrent_input(hidden)
    hidden', saved = fused_step(projected, recurrent, hidden)

Autodiff of a `lax.scan` whose body uses a weight accumulates that weight's gradient
inside the reverse scan, one small `(gates, batch) @ (batch, hidden)` product per
step, and likewise for the input projection. Here the scan has a custom JVP in which
every term linear in a weight's tangent is computed for all steps at once, outside
the tangent scan: `dW_ih`/`db` through the input projection of all steps, and
`dW_hh @ recurrent_input(start_t)` from the stacked states. The tangent scan carries
only the state's tangent, and the cell's hand-written `fused_tangent` reads only what
`fused_step` saved (gate activations). Transposing it, which is what `jax.grad` does,
gives a reverse scan that carries only the state's cotangent and leaves the weight
and input gradients to one large matmul each after it, as the hand-written backward
passes of cuDNN and PyTorch do. Being a JVP rule, `jax.jvp`, `jax.vmap` (which turns
the hoisted products into single batched matmuls) and higher derivatives keep working.

The semantics (valid mask, resets, reverse, zeros at padded steps) are exactly those
of the generic scan body in `_scan.py`, which the tests compare this path with.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._cell import AbstractFusedCell


def _where(pred: Any, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def fused_scan(
    cell: AbstractFusedCell,
    xs: Array,
    hidden: Any,
    reset_state: Any,
    valid: Array | None,
    resets: Array | None,
    *,
    reverse: bool,
    unroll: int | bool,
    stack: bool,
) -> tuple[Any, Any]:
    """`(final, hiddens)` of `cell` over one sequence, as the generic scan body gives
    them (`hiddens` is `None` unless `stack`; padded steps are zero in it)."""
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def forward(
        params: Any, xs: Array, h0: Any, reset_state: Any, valid: Any, resets: Any
    ) -> tuple[Any, Any, Any]:
        """The scan; also returns, per step, what the tangent needs: the state the
        step started from and what `fused_step` saved."""
        cell = eqx.combine(params, static)

        def body(carry: Any, step: Any) -> tuple[Any, Any]:
            x, ok, reset = step
            start = carry if reset is None else _where(reset, reset_state, carry)
            recurrent = cell.weight_hh @ cell.recurrent_input(start)
            new, saved = cell.fused_step(cell.project_inputs(x), recurrent, start)
            if ok is None:
                return new, (new, (start, saved))
            out = jax.tree.map(lambda n: jnp.where(ok, n, jnp.zeros_like(n)), new)
            return _where(ok, new, carry), (out, (start, saved))

        final, (outs, per_step) = jax.lax.scan(
            body, h0, (xs, valid, resets), reverse=reverse, unroll=unroll
        )
        return final, outs, per_step

    @jax.custom_jvp
    def run(
        params: Any, xs: Array, h0: Any, reset_state: Any, valid: Any, resets: Any
    ) -> tuple[Any, Any]:
        final, outs, _ = forward(params, xs, h0, reset_state, valid, resets)
        return final, (outs if stack else None)

    @run.defjvp
    def run_jvp(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        params, xs, _, _, valid, resets = primals
        d_params, d_xs, d_h0, d_reset_state, _, _ = tangents
        final, outs, (starts, saved) = forward(*primals)
        cell = eqx.combine(params, static)
        d_cell = eqx.combine(d_params, static)

        # Every term linear in a weight's (or the inputs') tangent, for all steps at
        # once: under `jax.grad` each becomes one large matmul.
        def project(p: Any, x: Array) -> Array:
            return eqx.combine(p, static).project_inputs(x)

        _, d_projected = jax.jvp(project, (params, xs), (d_params, d_xs))
        d_recurrent_weight = jax.vmap(cell.recurrent_input)(starts) @ d_cell.weight_hh.T

        def body(d_carry: Any, step: Any) -> tuple[Any, Any]:
            d_proj, d_rec_weight, start, saved, ok, reset = step
            d_start = (
                d_carry if reset is None else _where(reset, d_reset_state, d_carry)
            )
            d_rec = d_rec_weight + cell.weight_hh @ cell.recurrent_input(d_start)
            d_new = cell.fused_tangent(saved, start, d_proj, d_rec, d_start, d_cell)
            if ok is None:
                return d_new, (d_new if stack else None)
            d_out = jax.tree.map(lambda n: jnp.where(ok, n, jnp.zeros_like(n)), d_new)
            return _where(ok, d_new, d_carry), (d_out if stack else None)

        steps = (d_projected, d_recurrent_weight, starts, saved, valid, resets)
        d_final, d_outs = jax.lax.scan(
            body, d_h0, steps, reverse=reverse, unroll=unroll
        )
        return (final, outs if stack else None), (d_final, d_outs)

    return run(params, xs, hidden, reset_state, valid, resets)
