"""MinGRU, MinLSTM, LRU and RGLRU: the equations in NumPy, and every sequence backend
of the scan helpers against the step-by-step cell."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.test_util import check_grads

import eqrnn

from . import registry
from .helpers import assert_tree_allclose, random_params
from .registry import sigmoid as _sigmoid


MODES: list[Any] = ["sequential", "associative", "chunked"]
CASES = {
    case.name: case for case in registry.CASES if case.parallel and case.vector_input
}
NAMES = list(CASES)


@eqx.filter_jit
def make_cell(name, key, **kwargs):
    """A cell with random non-zero parameters and starting state, so that every
    weight, bias and the reset target show in comparisons. (Under `jit`: one
    compilation instead of one per eager operation.)"""
    k1, k2 = jr.split(key)
    cell = CASES[name].make(
        3, 4, carry_init=jax.nn.initializers.normal(1.0), key=k1, **kwargs
    )
    return random_params(cell, k2)


class Stepwise(eqx.Module):
    """The cell behind a plain callable: the scan helpers then take their generic
    path, one `cell(x, h)` per `jax.lax.scan` step. This is the reference."""

    cell: Any

    def __call__(self, x, h, *, key=None):
        return self.cell(x, h)

    def init_hidden(self):
        return self.cell.init_hidden()


@eqx.filter_jit
def _call(cell, x, h):
    return cell(x, h)


def python_loop(cell, xs, hidden, length, reverse, resets):
    """The documented semantics, one Python step at a time."""
    h = hidden
    num_steps = xs.shape[0]
    outs = [jax.tree.map(jnp.zeros_like, hidden) for _ in range(num_steps)]
    steps = range(int(length))
    for t in reversed(steps) if reverse else steps:
        if bool(resets[t]):
            h = cell.init_hidden()
        h = _call(cell, xs[t], h)
        outs[t] = h
    return h, jax.tree.map(lambda *a: jnp.stack(a), *outs)


def _run(cell, xs, hidden, length, resets, weights, *, reverse, **opts):
    """`(final, hiddens)` of one sequence, and the gradients of a loss of `hiddens`
    (the gradients through `scan_last` are checked by `check_grads` below)."""
    kwargs = dict(length=length, reverse=reverse, resets=resets, **opts)

    def loss(cell, xs):
        hiddens = jax.tree.leaves(eqrnn.scan_all_hidden(cell, xs, hidden, **kwargs))
        total = sum(jnp.sum(jnp.sin(h) * weights[: h.shape[-1]]) for h in hiddens)
        return total, hiddens

    (_, hiddens), grads = eqx.filter_value_and_grad(loss, has_aux=True)(cell, xs)
    if isinstance(cell, Stepwise):
        grads = grads.cell
    return (eqrnn.scan_last(cell, xs, hidden, **kwargs), hiddens), grads


@eqx.filter_jit
def _every_backend(cell, xs, hidden, lengths, resets, weights):
    """For both directions: the step-by-step reference and every mode, vmapped over
    a batch of sequences, lengths, resets and starting states; one compilation."""
    out = {}
    for reverse in (False, True):
        for mode in ["step", *MODES]:
            runner = Stepwise(cell) if mode == "step" else cell
            opts = {} if mode == "step" else {"mode": mode}
            out[f"{mode}-{reverse}"] = jax.vmap(
                lambda x, h, n, r, c=runner, o=opts, rev=reverse: _run(
                    c, x, h, n, r, weights, reverse=rev, **o
                ),
                in_axes=(0, 0, 0, 0),
            )(xs, hidden, lengths, resets)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_mode_equals_the_step_by_step_cell_with_gradients(name, getkey):
    cell = make_cell(name, getkey())
    batch, num_steps = 4, 6
    xs = jr.normal(getkey(), (batch, num_steps, cell.input_size))
    hidden = jax.tree.map(
        lambda h: jr.normal(getkey(), (batch, *h.shape)), cell.init_hidden()
    )
    lengths = jnp.array([6, 4, 0, 5])
    resets = jnp.array(
        [
            [False, True, False, False, True, False],
            [True, False, False, True, False, True],  # the last one is padding
            [False, True, False, False, False, False],
            [False, False, False, False, False, False],
        ]
    )
    weights = jr.normal(getkey(), (2 * cell.hidden_size,))
    out = _every_backend(cell, xs, hidden, lengths, resets, weights)
    for reverse in (False, True):
        reference = out[f"step-{reverse}"]
        for mode in MODES:
            values, grads = out[f"{mode}-{reverse}"]
            assert_tree_allclose(values, reference[0])
            assert_tree_allclose(grads, reference[1])
        # ... and the reference is the Python loop, example by example.
        for i in range(batch):
            h0 = jax.tree.map(lambda h, i=i: h[i], hidden)
            expected = python_loop(cell, xs[i], h0, lengths[i], reverse, resets[i])
            final, hiddens = jax.tree.map(lambda h, i=i: h[i], reference[0])
            assert_tree_allclose(
                (final, hiddens), (expected[0], jax.tree.leaves(expected[1]))
            )


@eqx.filter_jit
def _checkpointed(cell, xs, resets, weights):
    # Both directions; reversed, the padding is met first. Each chunk projects its
    # own inputs and forms its own hidden states (LRU's output included). Chunks of
    # 3 steps: their compiled gradient for LRU (associative or chunked, reversed,
    # with resets) crashed XLA's CPU backend (a segfault at run time; fine with
    # XLA_FLAGS=--xla_backend_optimization_level=0 and with JAX_DISABLE_JIT=1, so an
    # XLA miscompilation); the scan now runs those modes in chunks of 4 instead, and
    # this is the regression test. See CHANGELOG, known issues.
    out = {}
    for reverse in (False, True):
        out[reverse, "step"] = _run(
            Stepwise(cell), xs, None, 8, resets, weights, reverse=reverse
        )
        for mode in MODES:
            out[reverse, mode] = _run(
                cell, xs, None, 8, resets, weights, reverse=reverse, mode=mode,
                checkpoint=3,
            )  # fmt: skip
    return out


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_keeps_results_and_gradients(name, getkey):
    cell = make_cell(name, getkey())
    xs = jr.normal(getkey(), (10, cell.input_size))
    resets = jnp.zeros(10, bool).at[2].set(True).at[6].set(True)
    out = _checkpointed(cell, xs, resets, jr.normal(getkey(), (8,)))
    for reverse in (False, True):
        for mode in MODES:
            assert_tree_allclose(out[reverse, mode], out[reverse, "step"])


@pytest.mark.parametrize(
    "name, mode", [("LRU", "sequential"), ("RGLRU", "associative")]
)
def test_gradients_pass_check_grads_in_float64(name, mode, getkey):
    cell = make_cell(name, getkey())
    xs = jr.normal(getkey(), (5, cell.input_size))
    resets = jnp.array([False, False, True, False, False])
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    @jax.jit
    def loss(params, xs):
        # check_grads feeds NumPy arrays; the cell's fields are JAX arrays.
        c = eqx.combine(jax.tree.map(jnp.asarray, params), static)
        opts: dict[str, Any] = dict(length=4, resets=resets, mode=mode)
        hiddens = eqrnn.scan_all_hidden(c, xs, reverse=True, **opts)
        final = eqrnn.scan_last(c, xs, **opts)
        # The final state that a layer returns along with every output.
        _, layer_final = eqrnn.RNN(c, return_hidden=True)(xs, length=3)
        results = jax.tree.leaves((hiddens, final, layer_final))
        return sum(jnp.sum(jnp.sin(h)) for h in results)

    check_grads(loss, (params, xs), order=1, modes=["rev"])


# --- the equations -----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_one_step_follows_the_papers_equations(name, getkey):
    cell = make_cell(name, getkey())
    x = jr.normal(getkey(), (cell.input_size,))
    h = jax.tree.map(lambda z: jr.normal(getkey(), z.shape), cell.init_hidden())
    expected = CASES[name].numpy_step(cell, np.asarray(x), jax.tree.map(np.asarray, h))
    assert_tree_allclose(_call(cell, x, h), expected)


def test_identity_activation_gives_the_plain_min_gru(getkey):
    cell = random_params(
        eqrnn.MinGRU(3, 4, activation_fn=lambda x: x, key=getkey()), getkey()
    )
    x, h = jr.normal(getkey(), (3,)), jr.normal(getkey(), (4,))
    pre = np.asarray(cell.weight_ih @ x + cell.bias)
    z = _sigmoid(pre[:4])
    assert_tree_allclose(cell(x, h), (1 - z) * np.asarray(h) + z * pre[4:])


def test_lru_initialisation_follows_the_paper(getkey):
    cell = eqx.filter_jit(
        lambda key: eqrnn.LRU(
            3, 5, state_size=1000, r_min=0.4, r_max=0.9, max_phase=1.0, key=key
        )
    )(getkey())
    modulus = np.exp(-np.exp(np.asarray(cell.nu_log)))
    phase = np.exp(np.asarray(cell.theta_log))
    assert np.all((modulus >= 0.4) & (modulus <= 0.9))
    assert np.all((phase >= 0) & (phase <= 1.0))
    # Uniform on the ring: |λ|² is uniform in [r_min², r_max²].
    assert abs(np.mean(modulus**2) - (0.4**2 + 0.9**2) / 2) < 0.02
    assert_tree_allclose(np.exp(np.asarray(cell.gamma_log)), np.sqrt(1 - modulus**2))
    assert_tree_allclose(
        np.stack(cell.eigenvalues()),
        np.stack([modulus * np.cos(phase), modulus * np.sin(phase)]),
    )
    assert cell.D.shape == (5, 3) and cell.C_re.shape == (5, 1000)
    assert abs(np.std(np.asarray(cell.B_re)) - 1 / np.sqrt(6)) < 0.02


def test_rglru_initialisation_puts_a_in_the_ring(getkey):
    cell = eqx.filter_jit(
        lambda key: eqrnn.RGLRU(1000, 1000, min_rad=0.5, max_rad=0.8, key=key)
    )(getkey())
    a = _sigmoid(np.asarray(cell.a_logit))
    assert np.all((a >= 0.5 - 1e-6) & (a <= 0.8 + 1e-6))
    assert abs(np.mean(a**2) - (0.5**2 + 0.8**2) / 2) < 0.02


def test_min_lstm_forget_bias_is_stored_in_the_bias(getkey):
    cell = eqrnn.MinLSTM(3, 4, forget_bias=1.5, key=getkey())
    assert_tree_allclose(cell.bias, jnp.concatenate([jnp.full(4, 1.5), jnp.zeros(8)]))


# --- dtypes, long sequences, layers -------------------------------------------


def _to(dtype, tree):
    return jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


# Cells are built inside `jit` below: one compilation instead of one per eager
# operation of their initialisation.


def _one_step_and_scan(key, dtype):
    out = {}
    for name in NAMES:
        cell = CASES[name].make(3, 4, dtype=dtype, key=key)
        xs = jnp.ones((5, cell.input_size), dtype)
        out[name] = (
            cell(xs[0], cell.init_hidden()),
            eqrnn.scan_all_hidden(cell, xs),
            eqrnn.scan_last(cell, xs, mode="associative"),
        )
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_is_kept(dtype, getkey):
    # Dtypes are fixed when tracing: no need to compile and run.
    out = eqx.filter_eval_shape(_one_step_and_scan, getkey(), dtype)
    for name, leaves in out.items():
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(leaves)), name


def test_long_float32_sequences_match_float64(getkey):
    # 4096 steps with long memories: the LRU's |λ| up to 0.9999, the other cells'
    # forget rates near 1 (gate biases of ±4). The float64 reference runs on the
    # float32-rounded parameters and inputs. Measured max error / max |h|: 1e-7 to
    # 3e-7 for MinGRU, MinLSTM and RGLRU; 1e-5 to 4e-5 for the LRU: rounding its λ
    # to float32 (an ulp, 6e-8) changes 1 - |λ| = 1e-4 by 6e-4 of itself, and its
    # long memory adds that up. The step-by-step float32 cell has the same error:
    # it is not the scan's.
    @eqx.filter_jit
    def run(key, xs):
        keys = jr.split(key, 4)
        cells = {
            "LRU": eqrnn.LRU(8, 8, r_min=0.99, r_max=0.9999, key=keys[0]),
            "MinGRU": eqx.tree_at(
                lambda c: c.bias, eqrnn.MinGRU(8, 8, key=keys[1]), jnp.full(16, -4.0)
            ),
            "MinLSTM": eqrnn.MinLSTM(8, 8, forget_bias=4.0, key=keys[2]),
            "RGLRU": eqrnn.RGLRU(8, 8, key=keys[3]),
        }
        cells, xs = _to(jnp.float32, (cells, xs))
        out = {}
        for name, cell in cells.items():
            exact = eqrnn.scan_all_hidden(_to(jnp.float64, cell), xs.astype(float))
            fast = eqrnn.scan_all_hidden(cell, xs)
            out[name] = [jax.tree.leaves(h)[0] for h in (exact, fast)]
        lru = cells["LRU"]
        step = eqrnn.scan_all_hidden(Stepwise(lru), xs, lru.init_hidden())
        return out, jax.tree.leaves(step)[0]

    tolerance = {"LRU": 2e-4, "MinGRU": 2e-6, "MinLSTM": 2e-6, "RGLRU": 2e-6}
    out, lru_step = run(getkey(), jr.normal(getkey(), (4096, 8)))
    for name, (h64, h32) in out.items():
        assert h64.dtype == jnp.float64 and h32.dtype == jnp.float32
        scale = np.max(np.abs(h64))
        error = np.max(np.abs(np.asarray(h32, np.float64) - h64)) / scale
        assert error < tolerance[name], (name, error)
        if name == "LRU":
            assert np.max(np.abs(h32 - lru_step)) / scale < 2e-6


def test_sixteen_thousand_steps_stay_finite(getkey):
    @eqx.filter_jit
    def run(cells, xs):
        def loss(cell):
            hs = eqrnn.scan_all_hidden(cell, xs[:, : cell.input_size])
            return sum(jnp.sum(h) for h in jax.tree.leaves(hs))

        return {
            k: eqx.filter_value_and_grad(loss)(_to(jnp.float32, c))
            for k, c in cells.items()
        }

    cells = {name: make_cell(name, getkey()) for name in NAMES}
    xs = jr.normal(getkey(), (16384, 4), jnp.float32)
    for name, out in run(cells, xs).items():
        leaves = jax.tree.leaves(out)
        assert all(np.all(np.isfinite(x)) for x in leaves), name


def test_layers_run_linear_cells_and_see_the_lru_output(getkey):
    @eqx.filter_jit
    def run(lru, gru, xs):
        ys, _ = eqrnn.scan_all_hidden(lru, xs, length=4)
        rnn = eqrnn.RNN(gru, reverse=True, keep_order=True)
        expected = eqrnn.scan_all_hidden(gru, xs, length=5, reverse=True)
        return (eqrnn.RNN(lru)(xs, length=4), ys), (rnn(xs, length=5), expected)

    lru, gru = make_cell("LRU", getkey()), make_cell("MinGRU", getkey())
    for got, expected in run(lru, gru, jr.normal(getkey(), (6, 3))):
        assert_tree_allclose(got, expected)


# --- bad input ---------------------------------------------------------------

SCANS = [eqrnn.scan_last, eqrnn.scan_all_hidden]


@pytest.mark.parametrize("scan", SCANS)
def test_unknown_mode_is_rejected(scan, getkey, no_jaxtyping):
    cell = make_cell("MinGRU", getkey())
    with pytest.raises(
        ValueError, match=r"`mode` must be one of 'auto', .* got 'parallel'"
    ):
        scan(cell, jnp.ones((6, 3)), mode="parallel")


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("mode", ["associative", "chunked"])
def test_a_cell_that_is_not_linear_rejects_parallel_modes(
    scan, mode, getkey, no_jaxtyping
):
    for cell in [eqrnn.GRUCell(3, 4, key=getkey()), eqx.nn.GRUCell(3, 4, key=getkey())]:
        with pytest.raises(
            ValueError, match=rf"`mode='{mode}'` needs a cell whose .* linear"
        ):
            scan(cell, jnp.ones((6, 3)), jnp.zeros(4), mode=mode)


def test_a_cell_that_is_not_linear_accepts_sequential(getkey):
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    xs = jr.normal(getkey(), (6, 3))
    assert_tree_allclose(
        eqrnn.scan_all_hidden(cell, xs, mode="sequential"),
        eqrnn.scan_all_hidden(cell, xs),
    )


def test_batched_inputs_and_wrong_hidden_are_rejected(getkey, no_jaxtyping):
    cell = make_cell("LRU", getkey())
    with pytest.raises(
        ValueError, match=r"`inputs` must have shape \(time, input_size=3\)"
    ):
        eqrnn.scan_last(cell, jnp.ones((2, 6, 3)), mode="associative")
    with pytest.raises(ValueError, match="`hidden` must match"):
        eqrnn.scan_last(cell, jnp.ones((6, 3)), jnp.zeros(4), mode="associative")


BAD_CONSTRUCTORS = [
    (
        lambda k: eqrnn.MinGRU(0, 4, key=k),
        ValueError,
        "`input_size` must be a positive",
    ),
    (
        lambda k: eqrnn.MinLSTM(3, -1, key=k),
        ValueError,
        "`hidden_size` must be a positive",
    ),
    (
        lambda k: eqrnn.MinGRU(3, 4, use_bias=1, key=k),  # pyright: ignore[reportArgumentType]
        TypeError,
        "`use_bias` must be a bool",
    ),
    (
        lambda k: eqrnn.MinGRU(3, 4, activation_fn="tanh", key=k),  # pyright: ignore[reportArgumentType]
        TypeError,
        "`activation_fn` must be callable",
    ),
    (
        lambda k: eqrnn.MinLSTM(3, 4, use_bias=False, forget_bias=1.0, key=k),
        ValueError,
        "`forget_bias=1.0` needs `use_bias=True`",
    ),
    (
        lambda k: eqrnn.LRU(3, 4, state_size=0, key=k),
        ValueError,
        "`state_size` must be a positive",
    ),
    (
        lambda k: eqrnn.LRU(3, 4, r_min=0.9, r_max=0.5, key=k),
        ValueError,
        "`r_min` and `r_max` must satisfy",
    ),
    (
        lambda k: eqrnn.LRU(3, 4, r_max=1.5, key=k),
        ValueError,
        "`r_min` and `r_max` must satisfy",
    ),
    (
        lambda k: eqrnn.LRU(3, 4, max_phase=0.0, key=k),
        ValueError,
        "`max_phase` must be positive",
    ),
    (
        lambda k: eqrnn.LRU(3, 4, r_min="0", key=k),  # pyright: ignore[reportArgumentType]
        TypeError,
        "`r_min` must be a number",
    ),
    (
        lambda k: eqrnn.RGLRU(3, 4, key=k),
        ValueError,
        "`input_size` must equal `hidden_size`",
    ),
    (lambda k: eqrnn.RGLRU(4, 4, c=0.0, key=k), ValueError, "`c` must be positive"),
    (
        lambda k: eqrnn.RGLRU(4, 4, min_rad=0.0, key=k),
        ValueError,
        "`min_rad` and `max_rad` must satisfy",
    ),
    (
        lambda k: eqrnn.RGLRU(4, 4, min_rad=0.9, max_rad=1.0, key=k),
        ValueError,
        "`min_rad` and `max_rad` must satisfy",
    ),
]


@pytest.mark.parametrize("factory, error, message", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments_are_rejected_with_a_message(
    factory, error, message, getkey, no_jaxtyping
):
    with pytest.raises(error, match=message):
        factory(getkey())
