"""`scan_last` / `scan_all_hidden`: the per-step Python loop is the reference."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.test_util import check_grads

import eqrnn

from .helpers import assert_tree_allclose, random_params
from .registry import STEP_CELLS


CELLS = STEP_CELLS


def python_loop(cell, xs, hidden=None, length=None, reverse=False, resets=None):
    """The documented semantics, one Python step at a time with `cell(x, h)`."""
    start = cell.init_hidden()
    h = start if hidden is None else hidden
    num_steps = xs.shape[0]
    n = num_steps if length is None else int(length)
    order = reversed(range(n)) if reverse else range(n)
    outs = [jax.tree.map(jnp.zeros_like, start) for _ in range(num_steps)]
    for t in order:
        if resets is not None and bool(resets[t]):
            h = start
        h = cell(xs[t], h)
        outs[t] = h
    return h, jax.tree.map(lambda *a: jnp.stack(a), *outs)


@eqx.filter_jit
def _scan_both(cell, xs, hidden, length, resets, *, reverse, checkpoint, unroll):
    opts: dict[str, Any] = dict(
        length=length,
        reverse=reverse,
        resets=resets,
        checkpoint=checkpoint,
        unroll=unroll,
    )
    return (
        eqrnn.scan_last(cell, xs, hidden, **opts),
        eqrnn.scan_all_hidden(cell, xs, hidden, **opts),
    )


OPTIONS = [
    dict(),
    dict(length=4, reverse=True),
    dict(length=3, resets=[False, True, False, True, False, False]),
    dict(reverse=True, resets=[True, False, False, True, False, True]),
]


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize(
    "opts", OPTIONS, ids=["plain", "len-rev", "len-resets", "rev-resets"]
)
def test_scan_equals_python_loop_under_jit(cls, opts, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (6, 3))
    resets = opts.get("resets")
    resets = None if resets is None else jnp.array(resets)
    length, reverse = opts.get("length"), opts.get("reverse", False)
    final, hiddens = _scan_both(
        cell, xs, None, length, resets, reverse=reverse, checkpoint=False, unroll=1
    )
    ref_final, ref_hiddens = python_loop(cell, xs, None, length, reverse, resets)
    assert_tree_allclose(final, ref_final)
    assert_tree_allclose(hiddens, ref_hiddens)


@pytest.mark.parametrize("cls", [eqrnn.GRUCell, eqrnn.LSTMCell])
def test_scan_from_a_given_hidden_state_with_unroll(cls, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (6, 3))
    h0 = jax.tree.map(lambda z: jr.normal(getkey(), z.shape), cell.init_hidden())
    final, hiddens = _scan_both(
        cell, xs, h0, 5, None, reverse=False, checkpoint=False, unroll=4
    )
    ref_final, ref_hiddens = python_loop(cell, xs, h0, 5)
    assert_tree_allclose(final, ref_final)
    assert_tree_allclose(hiddens, ref_hiddens)


def test_an_empty_sequence_returns_the_starting_state(getkey):
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    h0 = jnp.ones(4)
    assert_tree_allclose(eqrnn.scan_last(cell, jnp.ones((0, 3)), h0), h0)
    assert eqrnn.scan_all_hidden(cell, jnp.ones((0, 3))).shape == (0, 4)


def test_length_zero_returns_the_starting_state_and_zero_states(getkey):
    cell = eqrnn.LSTMCell(3, 4, key=getkey())
    h0 = (jnp.ones(4), 2 * jnp.ones(4))
    final, hiddens = _scan_both(
        cell, jnp.ones((6, 3)), h0, 0, None, reverse=False, checkpoint=False, unroll=1
    )
    assert_tree_allclose(final, h0)
    assert_tree_allclose(hiddens, (jnp.zeros((6, 4)), jnp.zeros((6, 4))))


@pytest.mark.parametrize("cls", CELLS)
def test_vmap_over_sequences_and_lengths_equals_per_example_loop(cls, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (4, 6, 3))
    lengths = jnp.array([6, 0, 3, 1])

    @jax.jit
    def batched(xs, lengths):
        return jax.vmap(lambda x, n: eqrnn.scan_all_hidden(cell, x, length=n))(
            xs, lengths
        )

    out = batched(xs, lengths)
    for leaf in jax.tree.leaves(out):
        assert leaf.shape == (4, 6, 4)
    for b in range(4):
        row = jax.tree.map(lambda a, b=b: a[b], out)
        assert_tree_allclose(row, python_loop(cell, xs[b], length=lengths[b])[1])


@pytest.mark.parametrize("cls", CELLS)
def test_resets_equal_running_the_pieces_separately(cls, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (7, 3))
    resets = jnp.zeros(7, bool).at[3].set(True)
    whole = eqrnn.scan_all_hidden(cell, xs, resets=resets)
    first = eqrnn.scan_all_hidden(cell, xs[:3])
    second = eqrnn.scan_all_hidden(cell, xs[3:])
    pieces = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
    assert_tree_allclose(whole, pieces)


def test_a_reset_in_the_padding_is_ignored(getkey):
    cell = random_params(eqrnn.GRUCell(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (6, 3))
    resets = jnp.zeros(6, bool).at[4].set(True)
    assert_tree_allclose(
        eqrnn.scan_last(cell, xs, length=4, resets=resets),
        eqrnn.scan_last(cell, xs, length=4),
    )


@pytest.mark.parametrize("cls", CELLS)
def test_gradients_through_the_scan_pass_check_grads_in_float64(cls, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (5, 3))
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    weights = jr.normal(getkey(), (5, 4))

    def loss(params, xs):
        # check_grads feeds NumPy arrays; the cell's fields are JAX arrays.
        c = eqx.combine(jax.tree.map(jnp.asarray, params), static)
        hiddens = eqrnn.scan_all_hidden(c, xs, length=4, reverse=True)
        out = jax.vmap(c.output)(hiddens)
        return jnp.sum(jnp.sin(out) * weights)

    check_grads(loss, (params, xs), order=1, modes=["rev"])


@pytest.mark.parametrize("cls", [eqrnn.GRUCell, eqrnn.LSTMCell])
@pytest.mark.parametrize("checkpoint", [True, 3])
def test_checkpoint_gives_the_same_values_and_gradients(cls, checkpoint, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (10, 3))
    resets = jnp.zeros(10, bool).at[2].set(True)

    @eqx.filter_jit
    def value_and_grad(cell, xs, checkpoint):
        def loss(cell, xs):
            hs = eqrnn.scan_all_hidden(
                cell, xs, length=8, reverse=True, resets=resets, checkpoint=checkpoint
            )
            last = eqrnn.scan_last(cell, xs, length=7, checkpoint=checkpoint)
            return sum(jnp.sum(jnp.cos(a)) for a in jax.tree.leaves((hs, last)))

        return eqx.filter_value_and_grad(loss)(cell, xs)

    assert_tree_allclose(
        value_and_grad(cell, xs, checkpoint), value_and_grad(cell, xs, False)
    )


def test_checkpoint_recomputes_instead_of_storing_every_step(getkey):
    cell = eqrnn.LSTMCell(3, 4, key=getkey())
    xs = jnp.ones((64, 3))

    def residual_count(checkpoint):
        def loss(xs):
            return jnp.sum(eqrnn.scan_last(cell, xs, checkpoint=checkpoint)[0])

        _, vjp = jax.vjp(loss, xs)
        # The arrays the backward pass keeps alive: their total size in elements.
        return sum(x.size for x in jax.tree.leaves(vjp) if eqx.is_array(x))

    # Without checkpointing every step keeps its gates; with it only chunk-boundary
    # states (8 chunks of 8 steps) and the inputs are kept.
    assert residual_count(True) < residual_count(False) / 2


# --- other callables ---------------------------------------------------------


@pytest.mark.parametrize("cls", [eqx.nn.GRUCell, eqx.nn.LSTMCell])
def test_equinox_cells_are_accepted_unchanged(cls, getkey):
    cell = cls(3, 4, key=getkey())
    xs = jr.normal(getkey(), (6, 3))
    zeros = jnp.zeros(4)
    h0 = (zeros, zeros) if cls is eqx.nn.LSTMCell else zeros

    def manual(xs):
        def body(h, x):
            h = cell(x, h)
            return h, h

        return jax.lax.scan(body, h0, xs)

    ref_final, ref_hiddens = manual(xs)
    assert_tree_allclose(jax.jit(lambda x: eqrnn.scan_last(cell, x))(xs), ref_final)
    assert_tree_allclose(
        jax.jit(lambda x: eqrnn.scan_all_hidden(cell, x))(xs), ref_hiddens
    )


def test_generic_callable_path_equals_the_fast_path(getkey):
    cell = random_params(eqrnn.LSTMCell(3, 4, key=getkey()), getkey())
    xs = jr.normal(getkey(), (6, 3))

    def wrapped(x, h, *, key=None):
        return cell(x, h, key=key)

    opts: dict[str, Any] = dict(length=5, reverse=True, resets=jnp.arange(6) == 2)
    generic = eqrnn.scan_all_hidden(wrapped, xs, cell.init_hidden(), **opts)
    assert_tree_allclose(generic, eqrnn.scan_all_hidden(cell, xs, **opts))


def test_key_is_split_into_one_key_per_step(getkey):
    def noisy(x, h, *, key=None):
        assert key is not None
        return h + x[:1] + jr.normal(key, h.shape)

    xs = jnp.zeros((5, 1))
    key = getkey()
    hs = eqrnn.scan_all_hidden(noisy, xs, jnp.zeros(2), key=key)
    steps = jnp.diff(jnp.concatenate([jnp.zeros((1, 2)), hs]), axis=0)
    expected = jnp.stack([jr.normal(k, (2,)) for k in jr.split(key, 5)])
    assert_tree_allclose(steps, expected)
    other = eqrnn.scan_all_hidden(noisy, xs, jnp.zeros(2), key=getkey())
    assert not jnp.allclose(hs, other)


# --- bad input ---------------------------------------------------------------

SCANS = [eqrnn.scan_last, eqrnn.scan_all_hidden]


@pytest.fixture
def gru(getkey):
    return eqrnn.GRUCell(3, 4, key=getkey())


@pytest.mark.parametrize("scan", SCANS)
def test_batched_inputs_are_rejected_with_a_vmap_hint(scan, gru, no_jaxtyping):
    with pytest.raises(
        ValueError, match=r"`inputs` must have shape \(time, input_size=3\).*jax.vmap"
    ):
        scan(gru, jnp.ones((2, 6, 3)))


@pytest.mark.parametrize("scan", SCANS)
def test_wrong_input_width_is_rejected(scan, gru, no_jaxtyping):
    with pytest.raises(ValueError, match=r"got shape \(6, 5\)"):
        scan(gru, jnp.ones((6, 5)))


@pytest.mark.parametrize("scan", SCANS)
def test_integer_inputs_are_rejected(scan, gru, no_jaxtyping):
    with pytest.raises(TypeError, match="`inputs` must be a floating-point array"):
        scan(gru, jnp.ones((6, 3), jnp.int32))


@pytest.mark.parametrize("scan", SCANS)
def test_hidden_of_wrong_shape_or_structure_is_rejected(
    scan, gru, getkey, no_jaxtyping
):
    with pytest.raises(ValueError, match=r"`hidden` must match .*\(4,\), got \(2, 4\)"):
        scan(gru, jnp.ones((6, 3)), jnp.zeros((2, 4)))
    lstm = eqrnn.LSTMCell(3, 4, key=getkey())
    with pytest.raises(ValueError, match="`hidden` must match"):
        scan(lstm, jnp.ones((6, 3)), jnp.zeros(4))


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("length", [-1, 7])
def test_static_length_outside_range_is_rejected(scan, gru, length, no_jaxtyping):
    with pytest.raises(
        ValueError, match=rf"`length` must be in \[0, 6\].*got {length}"
    ):
        scan(gru, jnp.ones((6, 3)), length=length)


@pytest.mark.parametrize("length", [-1, 7])
def test_traced_length_outside_range_fails_at_run_time(gru, length):
    run = jax.jit(lambda n: eqrnn.scan_last(gru, jnp.ones((6, 3)), length=n))
    run(jnp.array(6))  # in range: fine
    with pytest.raises(Exception, match=r"`length` must be in \[0, 6\]"):
        jax.block_until_ready(run(jnp.array(length)))


def test_length_of_wrong_type_or_shape_is_rejected(gru, no_jaxtyping):
    with pytest.raises(TypeError, match="`length` must be an integer"):
        eqrnn.scan_last(gru, jnp.ones((6, 3)), length=jnp.array(2.0))
    with pytest.raises(ValueError, match=r"`length` must be a scalar .* `jax\.vmap`"):
        eqrnn.scan_last(gru, jnp.ones((6, 3)), length=jnp.array([2, 3]))


def test_resets_of_wrong_shape_or_dtype_are_rejected(gru, no_jaxtyping):
    with pytest.raises(
        ValueError, match=r"`resets` must have shape \(time,\) = \(6,\)"
    ):
        eqrnn.scan_all_hidden(gru, jnp.ones((6, 3)), resets=jnp.zeros(5, bool))
    with pytest.raises(
        TypeError, match="`resets` must be a boolean array, got dtype int"
    ):
        eqrnn.scan_all_hidden(gru, jnp.ones((6, 3)), resets=jnp.zeros(6, jnp.int32))


def test_bad_static_options_are_rejected(gru, no_jaxtyping):
    xs = jnp.ones((6, 3))
    with pytest.raises(
        ValueError, match="`checkpoint` must be a bool or a positive int"
    ):
        eqrnn.scan_last(gru, xs, checkpoint=0)
    with pytest.raises(
        ValueError, match="`unroll` must be 'auto', a positive int or a bool"
    ):
        eqrnn.scan_last(gru, xs, unroll=0)
    with pytest.raises(TypeError, match="`reverse` must be a bool"):
        eqrnn.scan_last(gru, xs, reverse=1)  # pyright: ignore[reportArgumentType]


def test_callable_without_init_hidden_needs_hidden(no_jaxtyping):
    def cell(x, h, *, key=None):
        return h + x

    with pytest.raises(
        TypeError, match=r"has no `init_hidden\(\)` method.*pass `hidden`"
    ):
        eqrnn.scan_last(cell, jnp.ones((6, 3)))


def test_mixed_dtypes_are_an_error_not_a_silent_cast(getkey, no_jaxtyping):
    cell = eqrnn.LSTMCell(3, 4, dtype=jnp.bfloat16, key=getkey())
    with pytest.raises(TypeError, match="`inputs` has dtype float32 but the cell's"):
        eqrnn.scan_all_hidden(cell, jnp.ones((5, 3), jnp.float32))
    h0 = (jnp.zeros(4, jnp.float32), jnp.zeros(4, jnp.float32))
    with pytest.raises(TypeError, match="`hidden` has dtype float32 but the cell's"):
        eqrnn.scan_last(cell, jnp.ones((5, 3), jnp.bfloat16), h0)


def test_the_jaxtyping_annotations_check_shapes_across_arguments(gru):
    # `resets` of length 5 against 6 steps: the annotations bind `time` across
    # `inputs` and `resets` and reject it before the library's own check runs.
    with pytest.raises(jaxtyping.TypeCheckError):
        eqrnn.scan_all_hidden(gru, jnp.ones((6, 3)), resets=jnp.zeros(5, bool))


# --- properties --------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    cls=st.sampled_from(CELLS),
    num_steps=st.integers(1, 6),
    hidden_size=st.integers(1, 3),
    data=st.data(),
)
def test_property_scan_equals_python_loop(cls, num_steps, hidden_size, data):
    seed = data.draw(st.integers(0, 2**16))
    length = data.draw(st.none() | st.integers(0, num_steps))
    reverse = data.draw(st.booleans())
    resets = data.draw(
        st.none() | st.lists(st.booleans(), min_size=num_steps, max_size=num_steps)
    )
    checkpoint = data.draw(st.sampled_from([False, True, 2]))
    k1, k2, k3 = jr.split(jr.key(seed), 3)
    cell = random_params(cls(2, hidden_size, key=k1), k2)
    xs = jr.normal(k3, (num_steps, 2))
    resets = None if resets is None else jnp.array(resets)
    opts: dict[str, Any] = dict(
        length=length, reverse=reverse, resets=resets, checkpoint=checkpoint
    )
    ref_final, ref_hiddens = python_loop(cell, xs, None, length, reverse, resets)
    assert_tree_allclose(eqrnn.scan_last(cell, xs, **opts), ref_final)
    hiddens = eqrnn.scan_all_hidden(cell, xs, **opts)
    assert_tree_allclose(hiddens, ref_hiddens)
    if length is not None:
        for leaf in jax.tree.leaves(hiddens):
            assert not np.any(np.asarray(leaf[length:]))
