"""`eqrnn.tuned_for`, `unroll="auto"` and the matmul precision: what each platform's
choices compile to, that they give the same numbers, and the errors for bad values.

The numbers of every path against PyTorch, Flax and the Python loop are held by the
reference, differential, interop and hardening suites, which run under each
platform's choices (the `each_platform` fixture)."""

from typing import Any

import equinox as eqx
import jax
import jax.extend
import jax.numpy as jnp
import jax.random as jr
import pytest

import eqrnn

from .helpers import assert_tree_allclose
from .registry import FUSED_CELLS
from .test_hardening import LONG, _program_size


TIME, INPUT, HIDDEN = 20, 3, 4


def _equations(jaxpr: Any) -> list[Any]:
    """Every equation of `jaxpr` and of the jaxprs nested in it."""
    found = []
    for eqn in jaxpr.eqns:
        found.append(eqn)
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    found.extend(_equations(inner))
    return found


def _scans(fn: Any, *args: Any) -> list[Any]:
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [e for e in _equations(jaxpr) if e.primitive.name == "scan"]


def _loss(cell: Any, xs: Any) -> Any:
    outputs: Any = jax.vmap(eqrnn.RNN(cell))(xs)
    return jnp.sum(outputs)


_value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(_loss))


# The cells with a fused step: each platform runs its own form of it (hoisted or
# not), where another step cell runs its one `step` under both (only where its
# input is projected moves; `test_hardening.py` runs one cell per family and kind of
# state under both).
@pytest.mark.parametrize("cls", FUSED_CELLS, ids=lambda c: c.__name__)
def test_gpu_path_equals_cpu_path_in_values_and_gradients(cls, getkey):
    cell = cls(INPUT, HIDDEN, key=getkey())
    xs = jr.normal(getkey(), (2, TIME, INPUT))
    with eqrnn.tuned_for("cpu"):
        expected = _value_and_grad(cell, xs)
    with eqrnn.tuned_for("gpu"):
        got = _value_and_grad(cell, xs)
    assert_tree_allclose(got, expected)


def test_tuned_for_is_part_of_the_jit_cache_key(getkey):
    traces = []
    cell = eqrnn.GRUCell(INPUT, HIDDEN, key=getkey())

    @jax.jit
    def run(xs):
        traces.append(eqrnn._platform.platform())
        return eqrnn.scan_last(cell, xs)

    xs = jnp.ones((TIME, INPUT))
    run(xs)
    with eqrnn.tuned_for("gpu"):
        run(xs)
        run(xs)
    with eqrnn.tuned_for("tpu"):
        run(xs)
    run(xs)
    assert traces == [jax.default_backend(), "gpu", "tpu"]


def test_gpu_path_projects_every_input_before_the_loop(getkey):
    cell = eqrnn.LSTMCell(INPUT, HIDDEN, key=getkey())
    xs = jnp.ones((TIME, INPUT))

    def matmuls_outside_the_loop() -> int:
        jaxpr = jax.make_jaxpr(lambda x: eqrnn.scan_all_hidden(cell, x))(xs).jaxpr
        everywhere = _equations(jaxpr)
        (scan,) = [e for e in everywhere if e.primitive.name == "scan"]
        in_loop = _equations(scan.params["jaxpr"].jaxpr)
        return sum(e.primitive.name == "dot_general" for e in everywhere) - sum(
            e.primitive.name == "dot_general" for e in in_loop
        )

    with eqrnn.tuned_for("cpu"):
        assert matmuls_outside_the_loop() == 0  # each step projects its own input
    with eqrnn.tuned_for("gpu"):
        assert matmuls_outside_the_loop() == 1  # inputs @ W_ih.T, all steps at once


@pytest.mark.parametrize(
    ("platform", "num_steps", "expected"),
    [
        ("cpu", TIME, 1),
        ("cpu", 2048, 1),
        ("gpu", TIME, 8),
        ("tpu", TIME, 8),
        ("gpu", 5, 5),
        ("gpu", 1023, 8),
        ("gpu", 1024, 16),
    ],
)
def test_auto_unroll_is_the_platforms_choice(platform, num_steps, expected, getkey):
    cell = eqrnn.GRUCell(INPUT, HIDDEN, key=getkey())
    xs = jnp.ones((num_steps, INPUT))
    with eqrnn.tuned_for(platform):
        for fn in (
            lambda x: eqrnn.scan_all_hidden(cell, x),
            lambda x: eqrnn.scan_last(cell, x),
            eqrnn.RNN(cell),
        ):
            (scan,) = _scans(fn, xs)
            assert scan.params["unroll"] == expected
        # An explicit int wins.
        (scan,) = _scans(lambda x: eqrnn.scan_all_hidden(cell, x, unroll=3), xs)
        assert scan.params["unroll"] == 3


def test_auto_unroll_with_checkpointing_unrolls_within_a_chunk(getkey):
    cell = eqrnn.GRUCell(INPUT, HIDDEN, key=getkey())
    xs = jnp.ones((TIME, INPUT))
    with eqrnn.tuned_for("gpu"):
        scans = _scans(lambda x: eqrnn.scan_last(cell, x, checkpoint=4), xs)
    assert sorted(s.params["unroll"] for s in scans) == [1, 4]


def test_linear_scan_auto_unroll_and_mode_follow_the_platform():
    a = jnp.full((TIME, 2), 0.5)
    b = jnp.ones((TIME, 2))
    with eqrnn.tuned_for("gpu"):
        scans = _scans(lambda a, b: eqrnn.linear_scan(a, b, mode="sequential"), a, b)
        assert [s.params["unroll"] for s in scans] == [8]
        # "auto" is the associative scan there: no sequential loop at all.
        assert not _scans(lambda a, b: eqrnn.linear_scan(a, b), a, b)
    with eqrnn.tuned_for("cpu"):
        scans = _scans(lambda a, b: eqrnn.linear_scan(a, b), a, b)
        assert [s.params["unroll"] for s in scans] == [1]


@pytest.mark.parametrize("remainder", [0, 3])
def test_auto_unroll_program_depends_on_time_modulo_the_unroll_only(remainder):
    # Compile time does not grow with the sequence: under the GPU's unroll of 16
    # (from 1024 steps) the program for 100 000 steps is the one for 1040, up to the
    # leftover T mod 16.
    with eqrnn.tuned_for("gpu"):
        sizes = [
            _program_size(eqrnn.LSTMCell, "auto", False, time + remainder, "auto")
            for time in (1040, LONG - LONG % 16)
        ]
    assert sizes[0] == sizes[1], sizes


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_default_matmul_precision_reaches_every_matmul(platform, getkey):
    # The documented way to compare float32 with PyTorch on a GPU (whose default is
    # TF32): every matmul of the scan, inside the loop and out, forward and
    # backward, carries the precision asked for.
    cell = eqrnn.LSTMCell(INPUT, HIDDEN, dtype=jnp.float32, key=getkey())
    xs = jnp.ones((2, TIME, INPUT), jnp.float32)
    grad = eqx.filter_grad(_loss)
    for precision, name in (("highest", "HIGHEST"), ("tensorfloat32", "HIGH")):
        with eqrnn.tuned_for(platform), jax.default_matmul_precision(precision):
            jaxpr = jax.make_jaxpr(grad)(cell, xs).jaxpr
        dots = [e for e in _equations(jaxpr) if e.primitive.name == "dot_general"]
        assert dots
        for dot in dots:
            assert str(dot.params["precision"]).count(name) == 2, dot.params


def test_tuned_for_rejects_an_unknown_platform(no_jaxtyping):
    with pytest.raises(ValueError, match="`platform` must be one of 'cpu', 'gpu'"):
        with eqrnn.tuned_for("cuda"):  # pyright: ignore[reportArgumentType]
            pass


@pytest.mark.parametrize("bad", [0, -2, 1.5, "fast", None, "AUTO"])
def test_bad_unroll_is_rejected_everywhere_with_the_fix(bad, getkey, no_jaxtyping):
    cell = eqrnn.GRUCell(INPUT, HIDDEN, key=getkey())
    xs = jnp.ones((TIME, INPUT))
    message = r"`unroll` must be 'auto', a positive int or a bool, got .*unroll='auto'"
    for call in (
        lambda: eqrnn.scan_last(cell, xs, unroll=bad),
        lambda: eqrnn.scan_all_hidden(cell, xs, unroll=bad),
        lambda: eqrnn.RNN(cell, unroll=bad),
        lambda: eqrnn.linear_scan(xs, xs, unroll=bad),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    # The suggested fix runs.
    eqrnn.scan_last(cell, xs, unroll="auto")
    eqrnn.RNN(cell, unroll=8)(xs)
