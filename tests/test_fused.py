"""The fused step of the built-in cells (`eqrnn._fused`) against the generic step.

The scan helpers run a cell's `fused_step()` when it has one (on the GPU's path,
`fused_step(hoisted=True)`, which takes inputs projected before the loop; every
test here runs under both platforms' choices). A cell built with
`generic_step_options` (its default nonlinearity as another function object) has
none, so it runs the generic `step`.
The two must agree, forward, backward (inputs and every parameter), in forward
mode and to second order, with `length`, `reverse`, `resets`, `checkpoint` and
`vmap`.
"""

import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from jaxtyping import Array

import eqrnn

from .helpers import (
    assert_tree_allclose,
    generic_step_options,
    random_params,
    tolerance,
)
from .registry import CASES, FUSED_CELLS, representatives


# Each test runs under the CPU's and the GPU's choices (`each_platform`); the two
# heaviest run under the GPU's in float64 and with a bias only: the platform picks
# the step's form (hoisted or not), not its dtype or bias.


def _takes(cls: type, option: str) -> bool:
    return option in inspect.signature(cls.__init__).parameters


# Every cell with a fused step (the registry's `fused` cells), and again with
# `residual=True` each that takes it (its fused step adds `h` to the pre-activation).
CELLS: dict[str, tuple[type, dict[str, Any]]] = {
    cls.__name__: (cls, {}) for cls in FUSED_CELLS
} | {
    f"{cls.__name__}-residual": (cls, {"residual": True})
    for cls in FUSED_CELLS
    if _takes(cls, "residual")
}


def _pair(kind: str, dtype: Any, key: Any, use_bias: bool = True) -> tuple[Any, Any]:
    """(fused, generic) cells of `kind` with the same random parameters."""
    cls, kind_options = CELLS[kind]
    generic = generic_step_options(cls)
    options: dict[str, Any] = {"use_bias": use_bias, "dtype": dtype, "key": jr.key(0)}
    make = lambda **kw: random_params(  # noqa: E731
        cls(3, 3, **options, **kind_options, **kw), key
    )
    return make(), make(**generic)


@pytest.mark.usefixtures("each_platform")
def test_which_cells_fuse():
    # The registry's `fused` field, both ways: each cell it names fuses, with and
    # without a bias, and every other step cell runs its generic step.
    key = jr.key(0)
    for cls, options in CELLS.values():
        for use_bias in (True, False):
            cell = cls(2, 3, use_bias=use_bias, **options, key=key)
            assert cell.fused_step(hoisted=False) is not None, cell
            assert cell.fused_step(hoisted=True) is not None, cell
    unfused = [
        case.make(2, 3, key=key)
        for case in CASES
        if issubclass(case.cls, eqrnn.AbstractStepCell)
        and case.vector_input
        and not case.fused
    ]
    assert unfused, "no step cell without a fused step left to check"
    # Another nonlinearity, a projection, or a cell without a fused step: the
    # generic step.
    for cell in (
        *unfused,
        *(
            cls(2, 3, **generic_step_options(cls), key=key)
            for cls in dict.fromkeys(cls for cls, _ in CELLS.values())
        ),
        eqrnn.LSTMCell(2, 3, activation_fn=jax.nn.relu, key=key),
        eqrnn.LSTMCell(2, 3, proj_size=2, key=key),
        eqrnn.GRUCell(2, 3, activation_fn=jax.nn.relu, key=key),
        eqrnn.SimpleCell(2, 3, activation_fn=jax.nn.relu, key=key),
        _UserCell(2, 3, key=key),
    ):
        assert cell.fused_step(hoisted=False) is None, cell
        assert cell.fused_step(hoisted=True) is None, cell


class _UserCell(eqrnn.AbstractStepCell):
    """A user's step-by-step cell without a fused step: the scan runs its `step`."""

    weight_ih: Array
    weight_hh: Array
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    initial_hidden: None = None

    def __init__(self, input_size: int, hidden_size: int, *, key: Any):
        ikey, hkey = jr.split(key)
        self.weight_ih = jr.normal(ikey, (hidden_size, input_size))
        self.weight_hh = jr.normal(hkey, (hidden_size, hidden_size)) / hidden_size
        self.input_size, self.hidden_size = input_size, hidden_size

    def project_inputs(self, inputs: Array) -> Array:
        return inputs @ self.weight_ih.T

    def step(self, projected: Array, hidden: Array) -> Array:
        return jnp.tanh(projected + 2 * self.weight_hh @ hidden)

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.hidden_size,),)

    def step_input_shape(self) -> tuple[int, ...]:
        return (self.input_size,)

    def output(self, hidden: Array) -> Array:
        return hidden

    def fused_step(self, hoisted: bool) -> None:
        return None


@pytest.mark.usefixtures("each_platform")
def test_user_step_cell_runs_its_step():
    cell = _UserCell(2, 3, key=jr.key(0))
    x = jr.normal(jr.key(1), (4, 2))
    expected: list[Any] = [cell.init_hidden()]
    for x_t in x:
        expected.append(cell(x_t, expected[-1]))
    hs = eqrnn.scan_all_hidden(cell, x, resets=jnp.array([False, False, True, False]))
    assert_tree_allclose(hs[:2], jnp.stack(expected[1:3]))
    assert_tree_allclose(eqrnn.scan_last(cell, x), expected[-1])


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


@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize(
    "platform, dtype",
    [("cpu", jnp.float64), ("cpu", jnp.float32), ("gpu", jnp.float64)],
    ids=["cpu-float64", "cpu-float32", "gpu-float64"],
)
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


@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize(
    "platform, use_bias",
    [("cpu", True), ("cpu", False), ("gpu", True)],
    ids=["cpu-bias", "cpu-no-bias", "gpu-bias"],
)
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


@pytest.mark.usefixtures("each_platform")
@pytest.mark.parametrize(
    "kind",
    [
        cls.__name__
        for cls in representatives(FUSED_CELLS, by=lambda case: case.tuple_state)
    ],
)
def test_fused_under_vmap_over_cells(kind, getkey):
    """An ensemble: the weights themselves are batched by `vmap` (a cell whose
    state is an array and one whose state is a tuple)."""
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


@pytest.mark.usefixtures("each_platform")
@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("hoisted", [False, True])
def test_fused_step_is_the_step(kind: str, hoisted: bool):
    """One fused step against the cell's generic `step`, directly, in float64."""
    cell, _ = _pair(kind, jnp.float64, jr.key(2))
    x = jr.normal(jr.key(3), (3,), jnp.float64)
    hidden = jax.tree.map(
        lambda h: jr.normal(jr.key(4), h.shape, h.dtype), cell.init_hidden()
    )
    fused = cell.fused_step(hoisted)
    assert fused is not None
    projected = cell.project_inputs(x)
    got = fused(projected if hoisted else x, hidden)
    assert_tree_allclose(got, cell.step(projected, hidden), rtol=1e-12, atol=1e-12)
