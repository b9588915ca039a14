"""Shared test helpers."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def assert_tree_allclose(
    actual: Any, expected: Any, *, rtol: float = 1e-10, atol: float = 1e-10
) -> None:
    """Assert two pytrees have the same structure, shapes, dtypes and values."""
    a_leaves, a_def = jax.tree.flatten(actual)
    e_leaves, e_def = jax.tree.flatten(expected)
    assert a_def == e_def, f"tree structures differ:\n  {a_def}\n  {e_def}"
    for i, (a, e) in enumerate(zip(a_leaves, e_leaves, strict=True)):
        a = np.asarray(a)
        e = np.asarray(e)
        assert a.shape == e.shape, f"leaf {i}: shape {a.shape} != {e.shape}"
        np.testing.assert_allclose(
            a.astype(np.float64),
            e.astype(np.float64),
            rtol=rtol,
            atol=atol,
            err_msg=f"leaf {i} of {a_def} (dtype {a.dtype} vs {e.dtype})",
        )


def tolerance(dtype: Any) -> float:
    """The comparison tolerance the tests use for a dtype."""
    return {
        jnp.dtype(jnp.float64): 1e-10,
        jnp.dtype(jnp.float32): 1e-5,
        jnp.dtype(jnp.bfloat16): 2e-2,
    }[jnp.dtype(dtype)]
