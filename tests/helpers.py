"""Shared test helpers."""

import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
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


def random_params(module: Any, key: Any, scale: float = 0.5) -> Any:
    """Replace every floating array of `module` with random non-zero values, so that
    comparisons exercise every weight and bias (default biases are zero)."""
    leaves, treedef = jax.tree.flatten(module)
    keys = jr.split(key, len(leaves))
    new = [
        scale * jr.normal(k, x.shape, x.dtype) if eqx.is_inexact_array(x) else x
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, new)


def flax_cell(
    kind: str, input_size: int, hidden_size: int, dtype: Any, seed: int
) -> Any:
    """A Flax NNX cell of `kind` with random non-zero biases (Flax's default bias is
    zero; drawn, a misplaced bias shows). Flax is imported here, for tests only."""
    from flax import nnx

    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "param_dtype": dtype,
        "bias_init": nnx.initializers.normal(0.5),
        "rngs": nnx.Rngs(seed),
    }
    if kind == "simple":
        return nnx.SimpleCell(input_size, hidden_size, **kwargs)
    if kind == "simple_residual":
        return nnx.SimpleCell(input_size, hidden_size, residual=True, **kwargs)
    if kind == "gru":
        return nnx.GRUCell(input_size, hidden_size, **kwargs)
    if kind == "lstm":
        return nnx.LSTMCell(input_size, hidden_size, **kwargs)
    assert kind == "optimized_lstm", kind
    return nnx.OptimizedLSTMCell(input_size, hidden_size, **kwargs)


def _sigmoid(x: Any) -> Any:
    return jax.nn.sigmoid(x)


def _tanh(x: Any) -> Any:
    return jnp.tanh(x)


def generic_step_options(cls: type) -> dict[str, Any]:
    """Constructor options under which a built-in cell runs its generic `step` in
    the scan helpers, with the same numbers: its default nonlinearity as another
    function object (a cell's `fused_step` exists only for `jax.nn.sigmoid` and
    `jnp.tanh` themselves). For comparing the fused step with the generic one."""
    if "gate_fn" in inspect.signature(cls.__init__).parameters:
        return {"gate_fn": _sigmoid}
    return {"activation_fn": _tanh}
