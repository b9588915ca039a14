"""The fused step of the built-in cells (`eqrnn._fused`) against the generic step.

The scan helpers run a cell's `_fused_step()` when it has one (on the GPU's path,
`_fused_step(hoisted=True)`, which takes inputs projected before the loop; every
test here runs under both platforms' choices). A cell built with
`generic_step_options` (its default nonlinearity as another function object) has
none, so it runs the generic `step`.
The two must agree, forward, backward (inputs and every parameter), in forward
mode and to second order, with `length`, `reverse`, `resets`, `checkpoint` and
`vmap`.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import eqrnn
from eqrnn._fused import generic_step_options

from .helpers import assert_tree_allclose, random_params, tolerance


pytestmark = pytest.mark.usefixtures("each_platform")


CELLS = {
    "lstm": eqrnn.LSTMCell,
    "gru": eqrnn.GRUCell,
    "mgu": eqrnn.MGUCell,
    "simple": eqrnn.SimpleCell,
    "simple-residual": eqrnn.SimpleCell,
}


def _pair(kind: str, dtype: Any, key: Any, use_bias: bool = True) -> tuple[Any, Any]:
    """(fused, generic) cells of `kind` with the same random parameters."""
    cls = CELLS[kind]
    generic = generic_step_options(cls)
    options: dict[str, Any] = {"use_bias": use_bias, "dtype": dtype, "key": jr.key(0)}
    if kind == "simple-residual":
        options["residual"] = True
    make = lambda **kw: random_params(cls(3, 3, **options, **kw), key)  # noqa: E731
    return make(), make(**generic)


def test_which_cells_fuse():
    key = jr.key(0)
    for cell in (
        eqrnn.LSTMCell(2, 3, key=key),
        eqrnn.GRUCell(2, 3, key=key),
        eqrnn.GRUCell(2, 3, use_bias=False, key=key),
        eqrnn.MGUCell(2, 3, key=key),
        eqrnn.SimpleCell(2, 3, key=key),
        eqrnn.SimpleCell(2, 3, residual=True, key=key),
    ):
        assert cell._fused_step() is not None, cell
        assert cell._fused_step(hoisted=True) is not None, cell
    # Another nonlinearity, a projection, or a linear cell (which has its own
    # engine): the generic step.
    for cell in (
        *(
            cls(2, 3, **generic_step_options(cls), key=key)
            for cls in dict.fromkeys(CELLS.values())
        ),
        eqrnn.LSTMCell(2, 3, activation_fn=jax.nn.relu, key=key),
        eqrnn.LSTMCell(2, 3, proj_size=2, key=key),
        eqrnn.GRUCell(2, 3, activation_fn=jax.nn.relu, key=key),
        eqrnn.SimpleCell(2, 3, activation_fn=jax.nn.relu, key=key),
        eqrnn.MinGRU(2, 3, key=key),
        _OwnStep(2, 3, key=key),
    ):
        assert cell._fused_step() is None, cell
        assert cell._fused_step(hoisted=True) is None, cell


class _OwnStep(eqrnn.LSTMCell):
    """A subclass with its own step: the scan must run it, not the fused LSTM step."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)

    def step(self, projected: Any, hidden: Any) -> Any:
        h, c = super().step(projected, hidden)
        return 2 * h, c


def test_subclass_with_its_own_step_runs_it():
    cell = _OwnStep(2, 3, key=jr.key(0))
    x = jr.normal(jr.key(1), (4, 2))
    h, c = eqrnn.scan_last(cell, x)
    expected = cell.init_hidden()
    for x_t in x:
        expected = cell(x_t, expected)
    assert_tree_allclose((h, c), expected)


def _loss(cell: Any, xs: Any, lengths: Any, resets: Any) -> Any:
    """Sum of squares of every hidden state and final state, over both directions,
    with and without checkpointing, for a vmapped batch of padded sequences."""

    def one(x: Any, length: Any, reset: Any) -> Any:
        total = jnp.zeros((), x.dtype)
        for reverse in (False, True):
            for checkpoint in (False, 3):
                hs = eqrnn.scan_all_hidden(
                    cell,
                    x,
                    length=length,
                    resets=reset,
                    reverse=reverse,
                    checkpoint=checkpoint,
                )
                last = eqrnn.scan_last(cell, x, length=length, reverse=reverse)
                for leaf in jax.tree.leaves((hs, last)):
                    total = total + (leaf**2).sum()
        return total

    return jax.vmap(one)(xs, lengths, resets).sum()


# Gradients w.r.t. the cell's parameters and the inputs, in one compiled call.
_loss_and_grads = eqx.filter_jit(
    eqx.filter_value_and_grad(lambda cell_and_xs, *rest: _loss(*cell_and_xs, *rest))
)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_fused_matches_generic(kind, dtype, getkey):
    fused, generic = _pair(kind, dtype, getkey())
    xs = jr.normal(getkey(), (3, 7, 3), dtype)
    lengths = jnp.array([7, 2, 0])
    resets = jr.bernoulli(getkey(), 0.3, (3, 7))
    tol = tolerance(dtype)
    loss, grads = _loss_and_grads((fused, xs), lengths, resets)
    loss_ref, grads_ref = _loss_and_grads((generic, xs), lengths, resets)
    assert jnp.isfinite(loss) and loss > 0
    scale = float(loss_ref)
    assert_tree_allclose(loss, loss_ref, rtol=tol, atol=tol * scale)
    # The leaves of the gradients w.r.t. every parameter and the inputs (the two
    # cells' static `gate_fn` differ, so their tree structures do).
    leaves = jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array))
    leaves_ref = jax.tree.leaves(eqx.filter(grads_ref, eqx.is_inexact_array))
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(fused, eqx.is_array))) + 1
    assert_tree_allclose(leaves, leaves_ref, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("use_bias", [True, False])
def test_fused_forward_mode_and_second_order(kind, use_bias, getkey):
    fused, generic = _pair(kind, jnp.float64, getkey(), use_bias=use_bias)
    x = jr.normal(getkey(), (5, 3), jnp.float64)
    tangent = jr.normal(getkey(), (5, 3), jnp.float64)

    def last(cell: Any, x: Any) -> Any:
        return eqrnn.scan_last(cell, x, reverse=True)

    def energy(cell: Any, x: Any) -> Any:
        return sum((leaf**2).sum() for leaf in jax.tree.leaves(last(cell, x)))

    def hvp(cell: Any) -> Any:
        return jax.jvp(jax.grad(lambda x: energy(cell, x)), (x,), (tangent,))

    def hvp_params(cell: Any) -> Any:
        """Hessian-vector product w.r.t. the parameters (ones as the vector)."""
        params, static = eqx.partition(cell, eqx.is_inexact_array)
        ones = jax.tree.map(jnp.ones_like, params)
        grad = jax.grad(lambda p: energy(eqx.combine(p, static), x))
        return jax.tree.leaves(jax.jvp(grad, (params,), (ones,)))

    assert_tree_allclose(
        jax.jvp(lambda x: last(fused, x), (x,), (tangent,)),
        jax.jvp(lambda x: last(generic, x), (x,), (tangent,)),
    )
    assert_tree_allclose(hvp(fused), hvp(generic))
    assert_tree_allclose(hvp_params(fused), hvp_params(generic))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_under_vmap_over_cells(kind, getkey):
    """An ensemble: the weights themselves are batched by `vmap`."""
    keys = jr.split(getkey(), 2)
    fused, generic = eqx.filter_vmap(lambda k: _pair(kind, jnp.float64, k))(keys)
    xs = jr.normal(getkey(), (2, 5, 3), jnp.float64)

    def loss(cells: Any) -> Any:
        def one(cell: Any, x: Any) -> Any:
            hiddens = eqrnn.scan_all_hidden(cell, x, length=4, reverse=True)
            return sum((leaf**2).sum() for leaf in jax.tree.leaves(hiddens))

        return eqx.filter_vmap(one)(cells, xs).sum()

    value, grads = eqx.filter_value_and_grad(loss)(fused)
    value_ref, grads_ref = eqx.filter_value_and_grad(loss)(generic)
    assert_tree_allclose(value, value_ref)
    assert_tree_allclose(
        jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)),
        jax.tree.leaves(eqx.filter(grads_ref, eqx.is_inexact_array)),
    )
