"""`eqrnn.linear_scan`: every backend against the recurrence written out in NumPy."""

from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.test_util import check_grads

import eqrnn

from .helpers import assert_tree_allclose


MODES: list[Any] = ["sequential", "associative", "chunked"]


def numpy_recurrence(a, b, h0, reverse=False):
    """h_t = a_t h_{t-1} + b_t, one step at a time in NumPy (complex for pairs)."""
    a, b, h = (np.asarray(x) for x in (a, b, h0))
    hs = np.zeros_like(b)
    for t in reversed(range(len(a))) if reverse else range(len(a)):
        h = a[t] * h + b[t]
        hs[t] = h
    return hs


def to_complex(pair):
    return np.asarray(pair[0]) + 1j * np.asarray(pair[1])


def as_real(x):
    """Real and imaginary parts side by side, to compare complex results."""
    return np.stack([np.real(x), np.imag(x)])


def pair(x):
    return jnp.real(x), jnp.imag(x)


def random_coefficients(key, shape, *, complex_=False):
    k1, k2, k3, k4 = jr.split(key, 4)
    modulus = jr.uniform(k1, shape, minval=0.3, maxval=1.0)
    if complex_:
        phase = jr.uniform(k2, shape, maxval=2 * np.pi)
        a = jax.lax.complex(modulus * jnp.cos(phase), modulus * jnp.sin(phase))
        b = jax.lax.complex(jr.normal(k3, shape), jr.normal(k4, shape))
        return a, b
    return modulus, jr.normal(k3, shape)


@jax.jit
@jax.vmap
def _all_backends(a, b, h0):
    """Every mode, direction and chunking of one problem: one compilation, vmapped
    over a batch of problems."""
    out = {}
    for mode in MODES:
        for reverse in (False, True):
            out[f"{mode}-{reverse}"] = eqrnn.linear_scan(
                a, b, h0, mode=mode, reverse=reverse, chunk_size=3
            )
    out["unrolled"] = eqrnn.linear_scan(a, b, h0, mode="sequential", unroll=3)
    out["chunk-unrolled"] = eqrnn.linear_scan(
        a, b, h0, mode="chunked", chunk_size=2, unroll=2
    )
    return out


@pytest.mark.parametrize("kind", ["real", "pair"])
def test_every_backend_equals_the_recurrence_in_numpy_under_vmap(kind, getkey):
    # 7 steps in chunks of 3: two full chunks and a padded one; a batch of 2.
    a, b = random_coefficients(getkey(), (2, 7, 2, 3), complex_=kind == "pair")
    h0 = jr.normal(getkey(), (2, 2, 3))
    if kind == "pair":
        h0 = jax.lax.complex(h0, h0)
    if kind == "pair":
        out = _all_backends(pair(a), pair(b), pair(h0))
        out = jax.tree.map(
            to_complex, out, is_leaf=lambda x: isinstance(x, tuple) and len(x) == 2
        )
    else:
        out = _all_backends(a, b, h0)
    for i in range(2):
        for reverse in (False, True):
            expected = as_real(numpy_recurrence(a[i], b[i], h0[i], reverse))
            for mode in MODES:
                assert_tree_allclose(as_real(out[f"{mode}-{reverse}"][i]), expected)
        expected = as_real(numpy_recurrence(a[i], b[i], h0[i]))
        assert_tree_allclose(as_real(out["unrolled"][i]), expected)
        assert_tree_allclose(as_real(out["chunk-unrolled"][i]), expected)


def test_complex_coefficients_work_in_every_backend(getkey):
    a, b = random_coefficients(getkey(), (7, 2), complex_=True)
    h0 = jax.lax.complex(jr.normal(getkey(), (2,)), jnp.ones(2))
    every_mode = jax.jit(
        lambda a, b, h0: [
            eqrnn.linear_scan(a, b, h0, mode=m, reverse=True, chunk_size=3)
            for m in MODES
        ]
    )
    expected = as_real(numpy_recurrence(a, b, h0, reverse=True))
    for hs in every_mode(a, b, h0):
        assert hs.dtype == a.dtype
        assert_tree_allclose(as_real(hs), expected)


def test_default_starting_state_is_zero_and_auto_is_a_backend(getkey):
    a, b = random_coefficients(getkey(), (5, 3))
    hs = eqrnn.linear_scan(a, b)
    assert_tree_allclose(hs, numpy_recurrence(a, b, np.zeros(3)))
    # On this CPU "auto" is the sequential scan: bit for bit the same numbers.
    np.testing.assert_array_equal(hs, eqrnn.linear_scan(a, b, mode="sequential"))
    # The docstring's example.
    hs = eqrnn.linear_scan(jnp.full((5, 3), 0.5), jnp.ones((5, 3)))
    assert_tree_allclose(hs[-1], jnp.full(3, 1.9375))


def test_zero_steps_give_an_empty_result():
    for mode in MODES:
        hs = eqrnn.linear_scan(jnp.zeros((0, 3)), jnp.zeros((0, 3)), mode=mode)
        assert hs.shape == (0, 3)


def _loss(mode, reverse):
    def loss(a, b, h0):
        hs = eqrnn.linear_scan(a, b, h0, mode=mode, reverse=reverse, chunk_size=2)
        weights = jnp.arange(1.0, 1.0 + hs.size).reshape(hs.shape) / hs.size
        return jnp.sum(jnp.sin(hs) * weights)

    return loss


def test_check_grads_in_float64(getkey):
    a, b = random_coefficients(getkey(), (5, 2))
    h0 = jr.normal(getkey(), (2,))

    # One function of every backend and direction: a wrong derivative in any of
    # them shows (test_parallel_cells.py also checks each against the gradients of
    # the step-by-step cell).
    @jax.jit
    def loss(a, b, h0):
        return sum(
            _loss(mode, reverse)(a, b, h0)
            for mode in MODES
            for reverse in (False, True)
        )

    check_grads(loss, (a, b, h0), order=1, modes=["rev", "fwd"])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["associative", "chunked"])
def test_forward_mode_and_hessians_agree_with_the_sequential_backend(
    getkey, mode, reverse
):
    # jax.jvp, and forward-over-reverse (Hessian-vector products), through every
    # backend: the #19 case that raised "can't apply forward-mode autodiff".
    a, b = random_coefficients(getkey(), (7, 2))
    h0 = jr.normal(getkey(), (2,))
    tangents = (b, a, h0)

    def jvp(mode):
        return jax.jvp(_loss(mode, reverse), (a, b, h0), tangents)

    def hvp(mode):
        return jax.jvp(jax.grad(_loss(mode, reverse), (0, 1, 2)), (a, b, h0), tangents)

    np.testing.assert_allclose(
        jax.jit(jvp, static_argnums=0)(mode), jvp("sequential"), rtol=1e-12
    )
    for g, w in zip(
        jax.tree.leaves(jax.jit(hvp, static_argnums=0)(mode)),
        jax.tree.leaves(hvp("sequential")),
        strict=True,
    ):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-12)


def test_long_float32_sequences_keep_float32_accuracy(getkey):
    # Long memories (|a| up to 1 - 1e-5) over 4096 steps: the states grow to ~300
    # and every step adds rounding. Measured: max error / max |h| <= 4e-7 for every
    # backend (a log-space cumulative sum would divide by products as small as
    # 1e-18 here).
    num_steps = 4096
    a = jr.uniform(getkey(), (num_steps, 64), jnp.float64, 0.99, 0.99999)
    b = jr.normal(getkey(), (num_steps, 64), jnp.float64)
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    exact = numpy_recurrence(a.astype(np.float64), b.astype(np.float64), np.zeros(64))
    scale = np.max(np.abs(exact))
    every_mode = jax.jit(
        lambda a, b: {m: eqrnn.linear_scan(a, b, mode=m) for m in MODES}
    )
    for mode, hs in every_mode(a, b).items():
        assert hs.dtype == jnp.float32
        error = np.max(np.abs(np.asarray(hs, np.float64) - exact)) / scale
        assert error < 2e-6, (mode, error)


def test_sixteen_thousand_steps_stay_finite(getkey):
    # Products of up to 16384 factors underflow to zero; nothing may become inf or
    # NaN, in the states or in their gradients.
    num_steps = 16384
    a = jr.uniform(getkey(), (num_steps, 3), jnp.float32, 0.0, 1.0)
    a = a.at[:, 0].set(1.0).at[:, 1].set(0.999999)
    b = jr.normal(getkey(), (num_steps, 3), jnp.float32)

    @jax.jit
    def states_and_grads(a, b):
        # The gradient is itself a linear scan (backwards): one backend suffices.
        out = {m: eqrnn.linear_scan(a, b, mode=m) for m in MODES}
        out["grad"] = jax.grad(lambda a: jnp.sum(eqrnn.linear_scan(a, b)))(a)
        return out

    for mode, leaves in states_and_grads(a, b).items():
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(leaves)), mode


def test_bad_arguments_are_rejected_with_a_message(no_jaxtyping):
    a = b = jnp.ones((4, 3))
    with pytest.raises(ValueError, match=r"`mode` must be one of .* got 'fast'"):
        eqrnn.linear_scan(a, b, mode="fast")  # pyright: ignore
    with pytest.raises(ValueError, match="`a` and `b` must have one and the same"):
        eqrnn.linear_scan(a, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"`h0` must have the state shape \(3,\)"):
        eqrnn.linear_scan(a, b, jnp.ones(4))
    with pytest.raises(TypeError, match="`a` must be a floating-point or complex"):
        eqrnn.linear_scan(jnp.ones((4, 3), int), b)
    with pytest.raises(TypeError, match=r"all be arrays or all be \(re, im\) pairs"):
        eqrnn.linear_scan((a, a), b)  # pyright: ignore
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        eqrnn.linear_scan(a, b, mode="chunked", chunk_size=0)
    with pytest.raises(
        ValueError, match="`unroll` must be 'auto', a positive int or a bool"
    ):
        eqrnn.linear_scan(a, b, unroll=0)
    with pytest.raises(TypeError, match="`reverse` must be a bool"):
        eqrnn.linear_scan(a, b, reverse=1)  # pyright: ignore
