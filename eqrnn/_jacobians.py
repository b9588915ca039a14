"""Per-unit Jacobians of a step, for the cells that give Newton's method theirs
(`eqrnn.AbstractNewtonCell`): helpers the cells import, no algorithm."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array


def pointwise_jacobians(
    pointwise: Callable[..., Any],
    recurrent: Array,
    weight_hh: Array,
    hidden: Any,
) -> Array:
    """`unit_jacobians` of a cell whose step is `pointwise(weight_hh @ h, state)`,
    unit `j` of the result reading only unit `j` of its arguments (the gated cells
    are: every gate of unit `j` reads row `j` of its block of `weight_hh @ h`), and
    `recurrent = weight_hh @ h` read from the first array of the state only.

    One JVP per array of the state gives every unit's block column at once: moving
    `h` by ones moves the pre-activations by the diagonals of `weight_hh`'s gate
    blocks, and by units of other arrays moves nothing else."""
    is_tuple = isinstance(hidden, tuple)
    leaves = hidden if is_tuple else (hidden,)
    units = leaves[0].shape[0]
    blocks = weight_hh.reshape(-1, units, weight_hh.shape[-1])
    diagonals = jnp.diagonal(blocks, axis1=1, axis2=2).reshape(-1)
    columns = []
    for b in range(len(leaves)):
        d_recurrent = diagonals if b == 0 else jnp.zeros_like(recurrent)
        d_leaves = tuple(
            jnp.ones_like(x) if a == b else jnp.zeros_like(x)
            for a, x in enumerate(leaves)
        )
        _, out = jax.jvp(
            pointwise,
            (recurrent, hidden),
            (d_recurrent, d_leaves if is_tuple else d_leaves[0]),
        )
        columns.append(jnp.stack(out if is_tuple else (out,), -1))
    return jnp.stack(columns, -1)


def derivative(fn: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """`(fn(x), fn'(x))` of an elementwise `fn`."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))
