"""`mode="newton"`: Newton's method over time equals the step-by-step scan, values
and derivatives, for every linearisation, with every option of the scan."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.test_util import check_grads

import eqrnn

from .helpers import assert_tree_allclose
from .registry import NEWTON_UNIT_CELLS, representatives


LINEARISATIONS = ["full", "blocks", "diagonal"]
# Compiled once per cell, shape and mode (eager calls compile each piece apart).
_scan = eqx.filter_jit(eqrnn.scan_all_hidden)
_last = eqx.filter_jit(eqrnn.scan_last)
_iterations = eqx.filter_jit(eqrnn.newton_iterations)


def _readout(tree: Any) -> Any:
    """A scalar depending non-linearly on every leaf: non-trivial gradients."""
    return sum(
        jnp.sum(
            jnp.sin(leaf)
            * jnp.arange(1, leaf.size + 1, dtype=leaf.dtype).reshape(leaf.shape)
        )
        for leaf in jax.tree.leaves(tree)
    )


@eqx.filter_jit
def _everything(cell, xs, hidden, length, resets, mode, reverse):
    """Stacked and final states and their gradients (cell, inputs, starting
    state) under `mode`, and a JVP in the inputs."""

    def loss(cell, xs, hidden):
        kw = dict(length=length, resets=resets, reverse=reverse, mode=mode)
        return _readout(eqrnn.scan_all_hidden(cell, xs, hidden, **kw)) + _readout(
            eqrnn.scan_last(cell, xs, hidden, **kw)
        )

    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(cell, xs, hidden)
    _, tangent = jax.jvp(lambda x: loss(cell, x, hidden), (xs,), (jnp.cos(xs),))
    kw = dict(length=length, resets=resets, reverse=reverse, mode=mode)
    return eqrnn.scan_all_hidden(cell, xs, hidden, **kw), value, grads, tangent


def _random_case(cls, key, num_steps, hidden_size):
    ckey, xkey, hkey, rkey, lkey = jr.split(key, 5)
    cell = cls(3, hidden_size, key=ckey, carry_init=jax.nn.initializers.normal(0.5))
    xs = jr.normal(xkey, (num_steps, 3))
    hidden = jax.tree.map(lambda h: h + jr.normal(hkey, h.shape), cell.init_hidden())
    resets = jr.bernoulli(rkey, 0.15, (num_steps,))
    length = jr.randint(lkey, (), num_steps // 2, num_steps + 1)
    return cell, xs, hidden, length, resets


@pytest.mark.parametrize("linearisation", LINEARISATIONS)
@pytest.mark.parametrize("cls", NEWTON_UNIT_CELLS)
def test_values_and_derivatives_equal_the_sequential_scan(cls, linearisation, getkey):
    # float64, to 1e-10: the states, the final state, gradients with respect to
    # the parameters, the inputs and the starting state, and a forward-mode
    # derivative; with a random length and resets, reversed for "blocks".
    case = _random_case(cls, getkey(), 17, 4)
    reverse = linearisation == "blocks"
    want = _everything(*case, "sequential", reverse)
    got = _everything(*case, eqrnn.Newton(linearisation), reverse)
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", NEWTON_UNIT_CELLS)
def test_unit_jacobians_are_the_blocks_of_the_full_jacobian(cls, getkey):
    kw = (
        {"residual": True, "activation_fn": jax.nn.softplus}
        if cls is eqrnn.SimpleCell
        else {}
    )
    cell = cls(3, 6, key=getkey(), **kw)
    cell = eqx.tree_at(lambda c: c.weight_hh, cell, 2 * cell.weight_hh)
    projected = cell.project_inputs(jr.normal(getkey(), (3,)))
    hidden = jax.tree.map(lambda h: jr.normal(getkey(), h.shape), cell.init_hidden())
    blocks = cell.unit_jacobians(projected, hidden)
    full = jax.jacfwd(cell.step, argnums=1)(projected, hidden)
    leaves = hidden if isinstance(hidden, tuple) else (hidden,)
    rows = full if isinstance(hidden, tuple) else (full,)
    assert blocks.shape == (6, len(leaves), len(leaves))
    for a in range(len(leaves)):
        for b in range(len(leaves)):
            block = rows[a][b] if isinstance(hidden, tuple) else rows[a]
            np.testing.assert_allclose(blocks[:, a, b], jnp.diagonal(block), rtol=1e-12)


def test_check_grads_in_both_modes(getkey):
    cell = eqrnn.GRUCell(2, 3, key=getkey())
    xs = jr.normal(getkey(), (9, 2))

    @jax.jit
    def loss(params, xs):
        model = eqx.combine(params, static)
        return _readout(_scan(model, xs, mode=eqrnn.Newton("diagonal")))

    params, static = eqx.partition(cell, eqx.is_array)
    check_grads(loss, (params, xs), order=1, modes=["rev", "fwd"])


@eqx.filter_jit
def _hessian_vector_products(cell, xs, hidden, length, resets, mode):
    """The Hessian of a readout in (cell, inputs, starting state) applied to a
    direction, forward-over-reverse and reverse-over-reverse."""
    kw = dict(length=length, resets=resets, mode=mode)

    def grad(args):
        loss = lambda args: _readout(eqrnn.scan_all_hidden(*args, **kw))  # noqa: E731
        return eqx.filter_grad(loss)(args)

    args = (cell, xs, hidden)
    direction = jax.tree.map(jnp.cos, eqx.filter(args, eqx.is_inexact_array))
    forward = eqx.filter_jvp(grad, (args,), (direction,))[1]

    def along(args):
        flat = jax.tree.leaves(eqx.filter(grad(args), eqx.is_inexact_array))
        pairs = zip(flat, jax.tree.leaves(direction), strict=True)
        return sum(jnp.vdot(a, b) for a, b in pairs)

    return forward, eqx.filter_grad(along)(args)


@pytest.mark.parametrize(
    "cls", representatives(NEWTON_UNIT_CELLS, by=lambda case: case.tuple_state)
)
def test_second_derivatives_equal_the_sequential_scan(cls, getkey):
    # The derivative rule is itself differentiable (the implicit function theorem
    # at `_solution`'s output), so Hessian-vector products are exact too. The rule
    # is the same for every cell: one cell whose state is an array and one whose
    # state is a tuple are checked (the registry's first of each).
    cell, xs, hidden, length, resets = _random_case(cls, getkey(), 13, 3)
    mode = eqrnn.Newton("diagonal")
    got = _hessian_vector_products(cell, xs, hidden, length, resets, mode)
    want = _hessian_vector_products(cell, xs, hidden, length, resets, "sequential")
    assert_tree_allclose(got, want, rtol=1e-9, atol=1e-10)


def test_a_chaotic_cell_still_ends_exact(getkey):
    # Recurrent weights scaled by 3: the diagonal linearisation needs many
    # iterations (issue #20: neither blocks nor diagonal reach 1e-10 in 80 at
    # T=256), the full Jacobian few; both end equal to the sequential scan.
    cell = eqrnn.LSTMCell(4, 6, key=getkey())
    cell = eqx.tree_at(lambda c: c.weight_hh, cell, 3 * cell.weight_hh)
    xs = jr.normal(getkey(), (60, 4))
    want = _scan(cell, xs)
    counts = {}
    for linearisation in LINEARISATIONS:
        mode = eqrnn.Newton(linearisation)
        counts[linearisation] = int(_iterations(cell, xs, mode=mode))
        got = _scan(cell, xs, mode=mode)
        assert_tree_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert counts["full"] < counts["blocks"] <= counts["diagonal"] <= 60, counts


def test_iterations_are_few_for_a_cell_that_forgets(getkey):
    cell = eqrnn.GRUCell(4, 8, key=getkey())
    xs = jr.normal(getkey(), (500, 4))
    full = _iterations(cell, xs, mode=eqrnn.Newton("full"))
    diagonal = _iterations(cell, xs, mode=eqrnn.Newton("diagonal"))
    assert full <= 8 and diagonal <= 40, (full, diagonal)


def test_float32_matches_the_sequential_scan(getkey):
    cell = eqrnn.LSTMCell(4, 16, dtype=jnp.float32, key=getkey())
    xs = jr.normal(getkey(), (300, 4), jnp.float32)
    want = _scan(cell, xs)
    for linearisation in LINEARISATIONS:
        got = _scan(cell, xs, mode=eqrnn.Newton(linearisation))
        assert got[0].dtype == jnp.float32
        assert_tree_allclose(got, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_vmap_checkpoint_and_layers(platform, tuned, getkey):
    # Under the GPU's choices the linear solves are associative scans (CPU:
    # sequential).
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    xs = jr.normal(getkey(), (2, 12, 3))
    lengths = jnp.array([12, 5])

    @eqx.filter_jit
    def run(cell, xs, lengths, mode, checkpoint):
        rnn = eqrnn.RNN(cell, mode=mode, checkpoint=checkpoint)
        bi = eqrnn.Bidirectional(rnn, eqrnn.RNN(cell, mode=mode))

        def loss(cell):
            out = jax.vmap(lambda x, n: bi(x, length=n))(xs, lengths)
            return _readout(out), out

        return jax.grad(loss, has_aux=True)(cell)

    want = run(cell, xs, lengths, "sequential", False)
    # "newton" is the full Jacobian here (4 state entries); under the GPU's choices
    # the blocks and the diagonal run their associative solves too.
    cases = [("newton", False), ("newton", 4)]
    if platform == "gpu":
        cases = [(eqrnn.Newton(k), False) for k in LINEARISATIONS]
    for mode, checkpoint in cases:
        got = run(cell, xs, lengths, mode, checkpoint)
        assert_tree_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_equinox_cells_and_functions_take_the_full_jacobian(getkey, no_jaxtyping):
    cell = eqx.nn.LSTMCell(3, 4, key=getkey())
    xs = jr.normal(getkey(), (15, 3))
    want = _scan(cell, xs)
    assert_tree_allclose(_scan(cell, xs, mode="newton"), want)
    with pytest.raises(ValueError) as e:
        _scan(cell, xs, mode=eqrnn.Newton("diagonal"))
    message = str(e.value)
    assert "CallableCell" in message and "AbstractNewtonCell" in message, message
    assert "`mode=eqrnn.Newton('full')`" in message
    fix = _scan(cell, xs, mode=eqrnn.Newton("full"))  # as it says
    assert_tree_allclose(fix, want)


def test_lstm_with_a_projection_takes_the_full_jacobian(getkey, no_jaxtyping):
    cell = eqrnn.LSTMCell(3, 5, proj_size=2, key=getkey())
    xs = jr.normal(getkey(), (15, 3))
    want = _scan(cell, xs)
    assert_tree_allclose(_scan(cell, xs, mode="newton"), want)
    with pytest.raises(ValueError, match=r"arrays differ in shape.*Newton\('full'\)"):
        _scan(cell, xs, mode=eqrnn.Newton("blocks"))


def test_other_step_cells_run_with_the_full_jacobian(getkey):
    cell = eqrnn.SLSTMCell(3, 4, num_heads=2, key=getkey())
    xs = jr.normal(getkey(), (8, 3))
    assert_tree_allclose(_scan(cell, xs, mode="newton"), _scan(cell, xs))


def test_a_cap_reached_before_the_tolerance_raises(getkey):
    cell = eqrnn.GRUCell(3, 8, key=getkey())
    xs = jr.normal(getkey(), (200, 3))
    mode = eqrnn.Newton("diagonal", max_iterations=2)
    with pytest.raises(Exception, match=r"`max_iterations=2` was reached"):
        jax.block_until_ready(
            jax.jit(eqrnn.scan_last, static_argnames="mode")(cell, xs, mode=mode)
        )
    # A cap that suffices gives the exact result.
    enough = eqrnn.Newton("diagonal", max_iterations=100)
    assert_tree_allclose(_last(cell, xs, mode=enough), _last(cell, xs))


def test_damping_keeps_the_result(getkey):
    cell = eqrnn.MGUCell(3, 4, key=getkey())
    xs = jr.normal(getkey(), (30, 3))
    got = _scan(cell, xs, mode=eqrnn.Newton("diagonal", damping=1.0))
    assert_tree_allclose(got, _scan(cell, xs))


def test_zero_steps(getkey):
    cell = eqrnn.LSTMCell(3, 4, key=getkey())
    xs = jnp.zeros((0, 3))
    assert_tree_allclose(_scan(cell, xs, mode="newton"), _scan(cell, xs))
    assert _iterations(cell, xs) == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"linearisation": "dense"}, "`linearisation` must be one of"),
        ({"max_iterations": 0}, "`max_iterations` must be a positive int"),
        ({"tol": -1.0}, "`tol` must be a positive float"),
        ({"damping": -1.0}, "`damping` must be a float >= 0"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        eqrnn.Newton(**options)


def test_a_linear_cell_is_pointed_to_its_parallel_modes(getkey, no_jaxtyping):
    cell = eqrnn.MinGRU(3, 4, key=getkey())
    with pytest.raises(ValueError, match=r"`mode='newton'`.* 'associative'"):
        _scan(cell, jnp.ones((5, 3)), mode="newton")
    with pytest.raises(ValueError, match=r"`mode` must be one of .*'newton'"):
        _scan(cell, jnp.ones((5, 3)), mode="neuton")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"newton_iterations: `mode` must be 'newton'"):
        _iterations(
            eqrnn.GRUCell(3, 4, key=getkey()), jnp.ones((5, 3)), mode="sequential"
        )


def test_nan_in_the_padding_reaches_neither_states_nor_gradients(getkey):
    cell, xs, hidden, _, resets = _random_case(eqrnn.GRUCell, getkey(), 17, 4)
    length = jnp.array(11)
    poisoned = xs.at[11:].set(jnp.nan)
    mode = eqrnn.Newton("diagonal")
    got = _everything(cell, poisoned, hidden, length, resets, mode, False)
    want = _everything(cell, xs, hidden, length, resets, "sequential", False)
    assert_tree_allclose(got[:3], want[:3], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("linearisation", ["full", "diagonal"])
def test_nan_in_a_valid_step_stops_at_the_next_reset(getkey, linearisation):
    # The sequential scan's states are NaN from the poisoned step until the reset,
    # and finite after it; so are its input gradients before the reset (0 * nan in
    # the steps after the poison). Newton's method gives the same, and stops once
    # the NaN stretch is reached, not at its cap of 60 iterations.
    cell, xs, hidden, _, _ = _random_case(eqrnn.GRUCell, getkey(), 60, 4)
    xs = xs.at[8, 1].set(jnp.nan)
    resets = jnp.zeros(60, bool).at[15].set(True)
    length = jnp.array(60)
    mode = eqrnn.Newton(linearisation)
    got = _everything(cell, xs, hidden, length, resets, mode, False)
    want = _everything(cell, xs, hidden, length, resets, "sequential", False)
    assert bool(jnp.isnan(want[0][8:15]).all()) and bool(
        jnp.isfinite(want[0][15:]).all()
    )
    assert_tree_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert int(_iterations(cell, xs, hidden, resets=resets, mode=mode)) < 30


def test_a_diverged_model_stops_at_once(getkey):
    # A NaN weight (a training run that diverged): the states are NaN from the
    # first step on, as in the sequential scan, after two iterations rather than the
    # cap of 200.
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    cell = eqx.tree_at(
        lambda c: c.weight_hh, cell, cell.weight_hh.at[0, 0].set(jnp.nan)
    )
    xs = jr.normal(getkey(), (200, 3))
    want = _scan(cell, xs)
    assert bool(jnp.isnan(want[1:]).all())
    assert_tree_allclose(_scan(cell, xs, mode="newton"), want)
    assert int(_iterations(cell, xs, mode="newton")) <= 2


def test_a_stochastic_function_sees_the_same_keys(getkey):
    # A user's callable with a key: each step gets the key the sequential scan gives
    # it, so the noise, and the result, are the same.
    w, u = jr.normal(getkey(), (4, 3)), 0.5 * jr.normal(getkey(), (4, 4))

    def noisy(x, h, *, key=None):
        assert key is not None
        return jnp.tanh(w @ x + u @ h + 0.1 * jr.normal(key, h.shape))

    xs, key, h0 = jr.normal(getkey(), (12, 3)), getkey(), jnp.zeros(4)
    want = eqrnn.scan_all_hidden(noisy, xs, h0, key=key)
    assert_tree_allclose(
        eqrnn.scan_all_hidden(noisy, xs, h0, key=key, mode="newton"), want
    )
