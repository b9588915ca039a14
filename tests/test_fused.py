"""The fused backward pass of `GRUCell`/`LSTMCell` (`eqrnn/_fused.py`) gives the
generic scan's numbers: values, reverse- and forward-mode derivatives, with every
option of the scan helpers, under vmap and jit."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from jax.test_util import check_grads

import eqrnn
import eqrnn._scan as scan_module

from .helpers import assert_tree_allclose, random_params, tolerance


TIME, WIDTH, HIDDEN = 7, 3, 4
LENGTHS = jnp.array([7, 4, 0])


def _cells(key: Any, dtype: Any) -> dict[str, Any]:
    k = jr.split(key, 8)
    normal = jax.nn.initializers.normal()
    cells = {
        "gru": eqrnn.GRUCell(WIDTH, HIDDEN, dtype=dtype, key=k[0]),
        "gru_no_bias": eqrnn.GRUCell(
            WIDTH, HIDDEN, use_bias=False, dtype=dtype, key=k[1]
        ),
        "lstm": eqrnn.LSTMCell(WIDTH, HIDDEN, dtype=dtype, key=k[2]),
        "lstm_carry_init": eqrnn.LSTMCell(
            WIDTH, HIDDEN, carry_init=normal, dtype=dtype, key=k[3]
        ),
    }
    return {
        name: random_params(cell, jr.fold_in(key, i))
        for i, (name, cell) in enumerate(cells.items())
    }


def _loss(cells: dict, xs: Any, starts: dict, resets: Any) -> Any:
    """Every option at once: lengths, resets, both directions, both helpers,
    checkpointing, a given starting state; a non-linear read-out."""
    total = jnp.zeros((), xs.dtype)
    for name, cell in cells.items():
        for reverse in (False, True):
            for checkpoint in (False, 3):

                def one(x, n, r, h0, cell=cell, reverse=reverse, ck=checkpoint):
                    hs = eqrnn.scan_all_hidden(
                        cell, x, length=n, resets=r, reverse=reverse, checkpoint=ck
                    )
                    last = eqrnn.scan_last(cell, x, h0, length=n, reverse=reverse)
                    return hs, last

                out = jax.vmap(one)(xs, LENGTHS, resets, starts[name])
                total = total + sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(out))
    return total


def _both_paths(fn: Any, *args: Any) -> tuple[Any, Any]:
    """`fn(*args)` traced with the fused path and with the generic one."""
    fused = jax.jit(fn)(*args)
    scan_module.FUSED_BACKWARD = False
    try:
        generic = jax.jit(fn)(*args)
    finally:
        scan_module.FUSED_BACKWARD = True
    return fused, generic


def _inputs(getkey: Any, dtype: Any) -> tuple[dict, Any, dict, Any]:
    cells = _cells(getkey(), dtype)
    xs = jr.normal(getkey(), (len(LENGTHS), TIME, WIDTH), dtype)
    starts = {
        name: jax.tree.map(
            lambda h: jr.normal(getkey(), (len(LENGTHS), *h.shape), dtype),
            cell.init_hidden(),
        )
        for name, cell in cells.items()
    }
    resets = jr.bernoulli(getkey(), 0.3, (len(LENGTHS), TIME))
    return cells, xs, starts, resets


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_fused_gradients_equal_the_generic_scan(dtype, getkey):
    cells, xs, starts, resets = _inputs(getkey, dtype)
    assert all(scan_module.use_fused_backward(c) for c in cells.values())

    def value_and_grads(cells, xs, starts):
        return jax.value_and_grad(_loss, argnums=(0, 1, 2))(cells, xs, starts, resets)

    fused, generic = _both_paths(value_and_grads, cells, xs, starts)
    rtol = tolerance(dtype)
    assert_tree_allclose(fused, generic, rtol=rtol, atol=rtol)


def test_fused_forward_mode_equals_the_generic_scan(getkey):
    cells, xs, starts, resets = _inputs(getkey, jnp.float64)
    tangents = jax.tree.map(lambda a: jr.normal(getkey(), a.shape), (cells, xs))

    def jvp(cells, xs, d_cells, d_xs):
        return jax.jvp(
            lambda c, x: _loss(c, x, starts, resets), (cells, xs), (d_cells, d_xs)
        )

    fused, generic = _both_paths(jvp, cells, xs, *tangents)
    assert_tree_allclose(fused, generic, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [eqrnn.GRUCell, eqrnn.LSTMCell])
def test_fused_second_order_gradients_are_correct(cls, getkey):
    cell = random_params(cls(2, 3, dtype=jnp.float64, key=getkey()), getkey())
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    xs = jr.normal(getkey(), (4, 2))

    def f(params, xs):
        params = jax.tree.map(jnp.asarray, params)  # check_grads passes NumPy arrays
        hs = eqrnn.scan_all_hidden(eqx.combine(params, static), xs, length=3)
        return sum(jnp.sum(jnp.sin(h)) for h in jax.tree.leaves(hs))

    check_grads(jax.jit(f), (params, xs), order=2, modes=("fwd", "rev"))


def test_other_cells_and_options_keep_the_generic_path(getkey):
    fused = scan_module.use_fused_backward
    assert fused(eqrnn.LSTMCell(2, 3, key=getkey()))
    assert fused(eqrnn.GRUCell(2, 3, key=getkey()))
    assert not fused(eqrnn.LSTMCell(2, 3, proj_size=2, key=getkey()))
    assert not fused(eqrnn.LSTMCell(2, 3, gate_fn=jax.nn.hard_sigmoid, key=getkey()))
    assert not fused(eqrnn.GRUCell(2, 3, activation_fn=jax.nn.relu, key=getkey()))
    for cls in (eqrnn.SimpleCell, eqrnn.MGUCell, eqrnn.MinGRU):
        assert not fused(cls(2, 2, key=getkey()))
