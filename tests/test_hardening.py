"""Failure modes made explicit: padding that cannot leak, NaN that propagates (and the
`check_finite` option that finds it), half precision, long sequences, no retracing.

Compilation dominates the run time, so each test traces one program that covers many
configurations at once, per cell.
"""

import re
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import eqrnn

from .helpers import assert_tree_allclose
from .registry import ALL_CELLS, PARALLEL_CELLS, STATE_REPRESENTATIVES


# Each test runs under the CPU's and the GPU's choices (`eqrnn.tuned_for`). The tests
# of every cell run each cell under the CPU's, and under the GPU's (the projection
# hoisted, unroll 8, associative linear scans) one cell per family and kind of state,
# the registry's first of each (`STATE_REPRESENTATIVES`): the platform's choice lives
# in the family's loop, which every cell of it shares (`tests/test_fused.py` runs each
# built-in fast step under both).
GPU_CELLS = STATE_REPRESENTATIVES
CELL_PLATFORMS = [
    pytest.param(platform, cls, id=f"{platform}-{cls.__name__}")
    for platform in ("cpu", "gpu")  # as `each_platform`
    for cls in ALL_CELLS
    if platform == "cpu" or cls in GPU_CELLS
]


TIME, WIDTH = 6, 4
LENGTHS = jnp.array([6, 4, 1, 0])


def _modes(cls: type) -> list[Any]:
    return (
        ["sequential", "associative", "chunked"] if cls in PARALLEL_CELLS else ["auto"]
    )


def _readout(tree: Any) -> Any:
    """A scalar depending non-linearly on every leaf: non-trivial gradients."""
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(tree))


def _models(cls: type, key: Any, dtype: Any) -> dict[str, Any]:
    """Every way eqrnn runs a cell over a sequence, with `cls` cells of `dtype`."""
    keys = iter(jr.split(key, 8))

    def cell(input_size: int = WIDTH) -> Any:
        return cls(input_size, 4, dtype=dtype, key=next(keys))

    def rnn(input_size: int = WIDTH, **kw: Any) -> eqrnn.RNN:
        return eqrnn.RNN(cell(input_size), **kw)

    bi = eqrnn.Bidirectional(rnn(), rnn())
    return {
        "cell": cell(),
        "rnn_reversed": rnn(reverse=True),
        "rnn_checkpointed": rnn(checkpoint=2, mode=_modes(cls)[-1]),
        "bidirectional": bi,
        "stacked": eqrnn.StackedRNN(
            [eqrnn.Bidirectional(rnn(), rnn(), merge="sum"), rnn()], inference=True
        ),
    }


def _run_all(models: dict[str, Any], xs: Any, length: Any, cls: type) -> dict:
    """Every configuration's outputs, for one sequence."""
    cell = models["cell"]
    out: dict[str, Any] = {}
    resets = jnp.arange(xs.shape[0]) % 3 == 1
    for mode in _modes(cls):
        for reverse in (False, True):
            out[f"all_hidden/{mode}/reverse={reverse}"] = eqrnn.scan_all_hidden(
                cell, xs, length=length, reverse=reverse, mode=mode
            )
        out[f"resets/{mode}"] = eqrnn.scan_all_hidden(
            cell, xs, length=length, resets=resets, mode=mode
        )
    for reverse in (False, True):
        out[f"last/reverse={reverse}"] = eqrnn.scan_last(
            cell, xs, length=length, reverse=reverse
        )
    for name in ("rnn_reversed", "rnn_checkpointed", "bidirectional", "stacked"):
        out[name] = models[name](xs, length=length)
    return out


@eqx.filter_jit
def _values_and_grads(models: dict, xs: Any, cls: type) -> tuple[Any, Any]:
    def loss(args: tuple[dict, Any]) -> Any:
        models, xs = args
        outs = jax.vmap(lambda x, n: _run_all(models, x, n, cls))(xs, LENGTHS)
        return _readout(outs), outs

    (_, outs), grads = eqx.filter_value_and_grad(loss, has_aux=True)((models, xs))
    return outs, grads


def _garbage_padding(xs: Any) -> Any:
    """`xs` with NaN, inf, -inf and huge values at every padded step."""
    valid = jnp.arange(TIME)[None, :, None] < LENGTHS[:, None, None]
    junk = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30])
    pattern = jnp.resize(junk, xs.shape).astype(xs.dtype)
    return jnp.where(valid, xs, pattern)


@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("platform, cls", CELL_PLATFORMS)
def test_nan_and_inf_in_padding_reach_no_value_and_no_gradient(cls, getkey):
    models = _models(cls, getkey(), jnp.float64)
    xs = jr.normal(getkey(), (len(LENGTHS), TIME, WIDTH))
    clean = _values_and_grads(models, xs, cls)
    dirty = _values_and_grads(models, _garbage_padding(xs), cls)
    for leaf in jax.tree.leaves(dirty):
        assert jnp.isfinite(leaf).all()
    # Bit-for-bit: padding is replaced by zeros before any arithmetic.
    assert_tree_allclose(dirty, clean, rtol=0, atol=0)
    # The padded steps get zero gradient and the valid ones do not.
    grad_xs = dirty[1][1]
    valid = np.arange(TIME)[None, :] < np.asarray(LENGTHS)[:, None]
    assert not np.asarray(grad_xs)[~valid].any()
    assert np.abs(np.asarray(grad_xs)[valid]).min(axis=-1).max() > 0


# --- NaN in valid steps ------------------------------------------------------------


@eqx.filter_jit
def _scan_with_nan(cell: Any, xs: Any, reverse: bool) -> Any:
    return eqrnn.scan_all_hidden(cell, xs, reverse=reverse)


@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("platform, cls", CELL_PLATFORMS)
def test_nan_in_a_valid_step_propagates_and_is_not_masked(cls, getkey):
    cell = cls(WIDTH, 4, dtype=jnp.float64, key=getkey())
    xs = jr.normal(getkey(), (TIME, WIDTH)).at[2, 0].set(jnp.nan)
    for reverse, poisoned in ((False, slice(2, None)), (True, slice(0, 3))):
        hs = jax.tree.leaves(_scan_with_nan(cell, xs, reverse))
        finite = np.stack(
            [np.isfinite(h).reshape(TIME, -1).all(axis=1) for h in hs]
        ).all(axis=0)
        expected = np.ones(TIME, bool)
        expected[poisoned] = False
        np.testing.assert_array_equal(finite, expected)


def _message(step: int, *, input_bad: bool) -> str:
    cause = "is NaN or inf" if input_bad else "is finite"
    return (
        rf"check_finite=True: the hidden state first becomes NaN or inf at step "
        rf"{step}, counting steps as indices of `inputs`; `inputs\[{step}\]` {cause}"
    )


def _raises_naming(fn: Any, message: str) -> None:
    """`fn()` raises, eagerly a FloatingPointError, under jit an XLA runtime error,
    whose text holds `message`."""
    with pytest.raises((FloatingPointError, jax.errors.JaxRuntimeError)) as info:
        jax.block_until_ready(fn())
    assert re.search(message, str(info.value)), str(info.value)


@pytest.mark.usefixtures("each_platform")
@pytest.mark.parametrize(
    "cls", [eqrnn.LSTMCell, eqrnn.MinGRU], ids=lambda c: c.__name__
)
def test_check_finite_names_the_first_nonfinite_step(cls, getkey):
    cell = cls(WIDTH, 4, dtype=jnp.float64, key=getkey())
    xs = jr.normal(getkey(), (TIME, WIDTH)).at[3, 1].set(jnp.nan)

    def last(x, **kw):
        return eqrnn.scan_last(cell, x, check_finite=True, **kw)

    _raises_naming(lambda: last(xs), _message(3, input_bad=True))
    _raises_naming(lambda: jax.jit(last)(xs), _message(3, input_bad=True))
    # Reversed, the first step to go wrong is the last index of the poisoned ones.
    _raises_naming(lambda: last(xs, reverse=True), _message(3, input_bad=True))
    # Under vmap and grad too; padding after the NaN would hide it.
    both = jnp.stack([jnp.ones_like(xs), xs])
    _raises_naming(
        lambda: jax.jit(jax.vmap(lambda x: jax.tree.leaves(last(x))[0]))(both),
        _message(3, input_bad=True),
    )
    _raises_naming(
        lambda: jax.grad(lambda x: _readout(last(x)))(xs), _message(3, input_bad=True)
    )
    layer = eqrnn.RNN(cell, check_finite=True)
    _raises_naming(lambda: layer(xs), _message(3, input_bad=True))
    # Padding never trips it, and finite runs are unchanged by it.
    assert_tree_allclose(last(xs, length=3), eqrnn.scan_last(cell, xs, length=3))
    # Finite inputs, non-finite parameters: the message says the input is finite.
    broken = jax.tree.map(
        lambda a: jnp.full_like(a, jnp.nan) if eqx.is_inexact_array(a) else a, cell
    )
    clean = jnp.ones_like(xs)
    _raises_naming(
        lambda: eqrnn.scan_all_hidden(broken, clean, check_finite=True),
        _message(0, input_bad=False),
    )


@pytest.mark.usefixtures("each_platform")
def test_check_finite_must_be_a_bool(getkey, no_jaxtyping):
    cell = eqrnn.GRUCell(WIDTH, 4, dtype=jnp.float64, key=getkey())
    with pytest.raises(TypeError, match="`check_finite` must be a bool"):
        eqrnn.scan_last(cell, jnp.ones((2, WIDTH)), check_finite=1)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="RNN: `check_finite` must be a bool"):
        eqrnn.RNN(cell, check_finite="yes")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="RNN: `mode='associative'` needs a cell"):
        eqrnn.RNN(cell, mode="associative")
    with pytest.raises(ValueError, match="RNN: `mode` must be one of"):
        eqrnn.RNN(eqrnn.MinGRU(WIDTH, 4, key=getkey()), mode="fast")  # pyright: ignore[reportArgumentType]


@pytest.mark.usefixtures("each_platform")
def test_rnn_mode_runs_a_linear_cell_with_that_backend(getkey):
    cell = eqrnn.MinGRU(WIDTH, 4, dtype=jnp.float64, key=getkey())
    xs = jr.normal(getkey(), (TIME, WIDTH))
    ref = eqrnn.scan_all_hidden(cell, xs, length=4, mode="sequential")
    for mode in ("associative", "chunked"):
        rnn = eqrnn.RNN(cell, mode=mode)
        assert rnn.mode.name == mode  # the name, kept as its mode object
        assert_tree_allclose(rnn(xs, length=4), ref, rtol=1e-12, atol=1e-12)


# --- Dtypes ------------------------------------------------------------------------

# Max error / max |h| over 64 steps against float64 on the same rounded parameters
# and inputs, measured 2e-3 to 3.5e-3 (bfloat16) and 2e-4 to 4e-4 (float16): the
# final rounding of each state to the cell's dtype (half an ulp: 2e-3 and 2.4e-4),
# not accumulated error, because the scan computes in float32.
HALF_TOLERANCE = {jnp.bfloat16: 8e-3, jnp.float16: 1e-3}


def _to(dtype: Any, tree: Any) -> Any:
    return jax.tree.map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def _relative_error(out: Any, ref: Any) -> float:
    return max(
        float(jnp.max(jnp.abs(a.astype(jnp.float64) - b)) / jnp.max(jnp.abs(b)))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True)
    )


@eqx.filter_jit
def _half_and_reference(cell: Any, xs: Any) -> tuple[Any, Any, Any]:
    out = eqrnn.scan_all_hidden(cell, xs)
    ref = eqrnn.scan_all_hidden(_to(jnp.float64, cell), xs.astype(jnp.float64))
    grads = eqx.filter_grad(lambda c: _readout(eqrnn.scan_last(c, xs)))(cell)
    return out, ref, grads


@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=lambda d: d.__name__)
@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("platform, cls", CELL_PLATFORMS)
def test_half_precision_keeps_its_dtype_and_float32_accuracy(cls, dtype, getkey):
    cell = _to(dtype, cls(WIDTH, WIDTH, dtype=jnp.float64, key=getkey()))
    xs = jr.normal(getkey(), (64, WIDTH), dtype)
    out, ref, grads = _half_and_reference(cell, xs)
    assert {leaf.dtype for leaf in jax.tree.leaves(out)} == {jnp.dtype(dtype)}
    assert _relative_error(out, ref) < HALF_TOLERANCE[dtype]
    for leaf in jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert leaf.dtype == dtype
        assert jnp.isfinite(leaf).all()


@pytest.mark.usefixtures("each_platform")
@pytest.mark.parametrize("dtype", list(HALF_TOLERANCE), ids=lambda d: d.__name__)
def test_half_precision_state_is_accumulated_in_float32(dtype, getkey):
    # An LSTM that forgets slowly sums 2000 small updates into its cell state c
    # (max |c| ~ 70). Rounding c to bfloat16 at every step, as a plain loop over
    # `cell(x, h)` does, loses most of them (measured 74% error; float16: 6.5%);
    # the scan carries c in float32 and is within a rounding of float64.
    cell = eqrnn.LSTMCell(WIDTH, WIDTH, forget_bias=6.0, key=getkey())
    cell, xs = _to(dtype, (cell, jr.normal(getkey(), (2000, WIDTH))))

    @jax.jit
    def run(cell, xs):
        ref = eqrnn.scan_last(_to(jnp.float64, cell), xs.astype(jnp.float64))
        scan = eqrnn.scan_last(cell, xs)
        loop, _ = jax.lax.scan(lambda h, x: (cell(x, h), None), cell.init_hidden(), xs)
        return ref, scan, loop

    ref, scan, loop = run(cell, xs)
    assert _relative_error(scan[1], ref[1]) < HALF_TOLERANCE[dtype]
    assert _relative_error(loop[1], ref[1]) > 4 * _relative_error(scan[1], ref[1])


# --- Long sequences ----------------------------------------------------------------

LONG = 100_000


@pytest.mark.usefixtures("tuned")
@pytest.mark.parametrize("platform, cls", CELL_PLATFORMS)
def test_100k_steps_checkpointed_fit_in_memory_and_stay_finite(cls, getkey):
    params, static = eqx.partition(
        cls(8, 8, dtype=jnp.float32, key=getkey()), eqx.is_inexact_array
    )
    xs = jr.normal(getkey(), (LONG, 8), jnp.float32)

    def loss(params: Any, xs: Any) -> Any:
        cell = eqx.combine(params, static)
        hs = eqrnn.scan_all_hidden(cell, xs, checkpoint=True)
        return _readout(hs) / xs.shape[0]

    grad_fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    compiled = grad_fn.lower(params, xs).compile()
    memory = compiled.memory_analysis()
    assert memory is not None
    planned = (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
    )
    # Far inside the 4 GiB: the states of every step (3.2 MB) and the
    # inputs and their gradient are what grows with T; the measured plans are
    # listed in BENCHMARKS.md (`python benchmarks/bench.py --long-study`).
    assert planned < 256 * 2**20, planned
    value, grads = compiled(params, xs)
    assert jnp.isfinite(value)
    for leaf in jax.tree.leaves(grads):
        assert jnp.isfinite(leaf).all()


def _program_size(
    cls: type, mode: Any, checkpoint: bool, time: int, unroll: Any = 1
) -> int:
    params, static = eqx.partition(
        cls(4, 4, dtype=jnp.float32, key=jr.key(0)), eqx.is_inexact_array
    )
    xs = jax.ShapeDtypeStruct((time, 4), jnp.float32)

    def loss(params: Any, xs: Any) -> Any:
        cell = eqx.combine(params, static)
        hs = eqrnn.scan_all_hidden(
            cell, xs, checkpoint=checkpoint, mode=mode, unroll=unroll
        )
        return _readout(hs)

    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, xs).as_text()
    return len(text.splitlines())


@pytest.mark.usefixtures("each_platform")
@pytest.mark.parametrize(
    ("cls", "mode", "checkpoint"),
    [
        (eqrnn.LSTMCell, "auto", False),
        (eqrnn.LSTMCell, "auto", True),
        (eqrnn.MinGRU, "sequential", False),
        (eqrnn.MinGRU, "sequential", True),
        (eqrnn.MinGRU, "chunked", False),
    ],
)
def test_the_program_does_not_grow_with_the_sequence_length(cls, mode, checkpoint):
    # Time is a loop, never unrolled into the program: the lowered forward+backward
    # program is as long at 100000 steps as at 100 (only shapes differ; with
    # checkpointing, padding to whole chunks adds or drops a few lines), so compile
    # time does not grow with T. (`mode="associative"` is the exception by design:
    # its depth is log2(T), and so is "chunked"'s inside checkpointed chunks shorter
    # than its own, up to log2(64).) With `unroll=u` the loop body holds u steps,
    # and a second loop the T mod u left over: see test_platform.py for "auto".
    sizes = [_program_size(cls, mode, checkpoint, t) for t in (100, 1000, LONG)]
    assert max(sizes) - min(sizes) <= (20 if checkpoint else 0), sizes


# --- No retracing --------------------------------------------------------------------


@pytest.mark.usefixtures("each_platform")
def test_new_lengths_resets_and_inputs_do_not_retrace(getkey):
    traces = []
    cell = eqrnn.GRUCell(WIDTH, 4, dtype=jnp.float32, key=getkey())

    @eqx.filter_jit
    def run(cell, xs, length, resets):
        traces.append(None)
        return eqrnn.scan_all_hidden(cell, xs, length=length, resets=resets)

    @jax.jit
    def run_batch(xs, lengths):
        traces.append(None)
        return jax.vmap(lambda x, n: eqrnn.scan_last(cell, x, length=n))(xs, lengths)

    @jax.jit
    def run_int(xs, length):
        traces.append(None)
        return eqrnn.scan_last(cell, xs, length=length)

    xs = jr.normal(getkey(), (4, TIME, WIDTH), jnp.float32)
    for i in range(4):
        # Under eqx.filter_jit a Python int is static (one trace per value): pass
        # the length as an array. Under jax.jit a Python int is traced.
        run(cell, xs[i], jnp.asarray(i + 1), jnp.arange(TIME) % (i + 2) == 0)
        run_batch(jnp.stack([xs[i], -xs[i]]), jnp.array([i, TIME - i]))
        run_int(xs[i], i)
    # A retrained cell (new parameter values, same shapes) does not retrace either.
    retrained = jax.tree.map(lambda a: 2 * a if eqx.is_inexact_array(a) else a, cell)
    run(retrained, xs[0], jnp.asarray(2), jnp.zeros(TIME, bool))
    assert len(traces) == 3  # one per function
