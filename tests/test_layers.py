"""Layers: RNN, Bidirectional, StackedRNN and flip_sequence.

Comparisons against PyTorch and Flax NNX modules live in `test_interop.py`.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import eqrnn

from .helpers import assert_tree_allclose, random_params


def _gru(key, input_size=3, hidden_size=4):
    k1, k2 = jr.split(key)
    return random_params(eqrnn.GRUCell(input_size, hidden_size, key=k1), k2)


def _lstm(key, input_size=3, hidden_size=4, **kwargs):
    k1, k2 = jr.split(key)
    return random_params(eqrnn.LSTMCell(input_size, hidden_size, key=k1, **kwargs), k2)


# --- flip_sequence -----------------------------------------------------------


def test_flip_sequence_reproduces_the_flax_documentation_example():
    inputs = jnp.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]])
    lengths = jnp.array([1, 2, 3])
    flipped = jax.jit(jax.vmap(eqrnn.flip_sequence))(inputs, lengths)
    np.testing.assert_array_equal(flipped, [[1, 0, 0], [3, 2, 0], [6, 5, 4]])


def test_flip_sequence_keeps_trailing_axes_and_padding():
    inputs = jnp.arange(12.0).reshape(4, 3)
    out = eqrnn.flip_sequence(inputs, 3)
    np.testing.assert_array_equal(out, inputs[jnp.array([2, 1, 0, 3])])
    np.testing.assert_array_equal(eqrnn.flip_sequence(inputs), inputs[::-1])
    np.testing.assert_array_equal(eqrnn.flip_sequence(inputs, 0), inputs)


def test_flip_sequence_twice_is_the_identity():
    inputs = jr.normal(jr.key(0), (5, 2))
    for n in range(6):
        flipped = eqrnn.flip_sequence(eqrnn.flip_sequence(inputs, n), n)
        np.testing.assert_array_equal(flipped, inputs)


def test_flip_sequence_rejects_length_outside_range(no_jaxtyping):
    with pytest.raises(
        ValueError, match=r"flip_sequence: `length` must be in \[0, 3\]"
    ):
        eqrnn.flip_sequence(jnp.ones((3, 2)), 4)


# --- RNN ---------------------------------------------------------------------


def test_rnn_outputs_are_cell_outputs_of_every_step(getkey):
    cell = _lstm(getkey())
    xs = jr.normal(getkey(), (6, 3))
    rnn = eqrnn.RNN(cell, return_hidden=True)
    outputs, final = eqx.filter_jit(lambda r, x: r(x, length=4))(rnn, xs)
    hs, _ = eqrnn.scan_all_hidden(cell, xs, length=4)
    assert_tree_allclose(outputs, hs)
    assert_tree_allclose(final, eqrnn.scan_last(cell, xs, length=4))


def test_reverse_rnn_equals_forward_rnn_on_the_flipped_valid_part(getkey):
    cell = _gru(getkey())
    xs = jr.normal(getkey(), (6, 3))
    n = 4
    forward = eqrnn.RNN(cell, return_hidden=True)
    on_flipped, final_f = forward(eqrnn.flip_sequence(xs, n), length=n)
    # Flax's default keep_order=False: outputs in the order they were computed.
    reverse = eqrnn.RNN(cell, reverse=True, return_hidden=True)
    out, final = reverse(xs, length=n)
    assert_tree_allclose(out, on_flipped)
    assert_tree_allclose(final, final_f)
    # keep_order=True: outputs aligned with the inputs.
    aligned = eqrnn.RNN(cell, reverse=True, keep_order=True)(xs, length=n)
    assert_tree_allclose(aligned, eqrnn.flip_sequence(on_flipped, n))
    assert_tree_allclose(
        aligned, eqrnn.scan_all_hidden(cell, xs, length=n, reverse=True)
    )


def test_rnn_accepts_equinox_cells(getkey):
    cell = eqx.nn.LSTMCell(3, 4, key=getkey())
    xs = jr.normal(getkey(), (5, 3))
    outputs = eqrnn.RNN(cell)(xs)
    hs, _ = eqrnn.scan_all_hidden(cell, xs)
    assert_tree_allclose(outputs, hs)


def test_rnn_rejects_bad_settings(getkey, no_jaxtyping):
    cell = _gru(getkey())
    with pytest.raises(TypeError, match="`cell` must be callable"):
        eqrnn.RNN(3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match="`reverse` must be a bool"):
        eqrnn.RNN(cell, reverse="yes")  # pyright: ignore[reportArgumentType]
    with pytest.raises(
        ValueError, match="`unroll` must be 'auto', a positive int or a bool"
    ):
        eqrnn.RNN(cell, unroll=0)
    with pytest.raises(
        ValueError, match="`checkpoint` must be a bool or a positive int"
    ):
        eqrnn.RNN(cell, checkpoint=-2)


# --- Bidirectional -----------------------------------------------------------


def _bidirectional(getkey, merge: Any = "concat"):
    return eqrnn.Bidirectional(
        eqrnn.RNN(_lstm(getkey())),
        eqrnn.RNN(_lstm(getkey())),
        merge=merge,
        return_hidden=True,
    )


def test_bidirectional_merges_forward_and_aligned_backward_outputs(getkey):
    bi = _bidirectional(getkey)
    xs = jr.normal(getkey(), (6, 3))
    outputs, (final_f, final_b) = eqx.filter_jit(lambda m, x: m(x, length=4))(bi, xs)
    fwd_cell, bwd_cell = bi.forward.cell, bi.backward.cell
    hs_f, _ = eqrnn.scan_all_hidden(fwd_cell, xs, length=4)
    hs_b, _ = eqrnn.scan_all_hidden(bwd_cell, xs, length=4, reverse=True)
    assert_tree_allclose(outputs, jnp.concatenate([hs_f, hs_b], axis=-1))
    assert_tree_allclose(final_f, eqrnn.scan_last(fwd_cell, xs, length=4))
    # The backward direction starts at the last *valid* step: padding is not read.
    assert_tree_allclose(final_b, eqrnn.scan_last(bwd_cell, xs[:4][::-1]))
    assert not jnp.any(outputs[4:])


@pytest.mark.parametrize(
    "merge, combine",
    [
        ("sum", lambda a, b: a + b),
        ("mean", lambda a, b: (a + b) / 2),
        ("product", lambda a, b: a * b),
        (jnp.maximum, jnp.maximum),
    ],
    ids=["sum", "mean", "product", "callable"],
)
def test_bidirectional_merge_options(merge, combine, getkey):
    bi = _bidirectional(getkey, merge)
    xs = jr.normal(getkey(), (5, 3))
    outputs, _ = bi(xs, length=5)
    hs_f, _ = eqrnn.scan_all_hidden(bi.forward.cell, xs)
    hs_b, _ = eqrnn.scan_all_hidden(bi.backward.cell, xs, reverse=True)
    assert_tree_allclose(outputs, combine(hs_f, hs_b))


def test_bidirectional_ignores_the_backward_rnns_own_direction(getkey):
    bi = _bidirectional(getkey)
    flipped = eqrnn.Bidirectional(
        bi.forward,
        eqrnn.RNN(bi.backward.cell, reverse=True, keep_order=False),
        return_hidden=True,
    )
    xs = jr.normal(getkey(), (5, 3))
    assert_tree_allclose(flipped(xs, length=3), bi(xs, length=3))


def test_bidirectional_rejects_bad_arguments(getkey, no_jaxtyping):
    rnn = eqrnn.RNN(_gru(getkey()))
    with pytest.raises(TypeError, match=r"`backward` must be an eqrnn\.RNN"):
        eqrnn.Bidirectional(rnn, _gru(getkey()))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`forward` has `reverse=True`"):
        eqrnn.Bidirectional(eqrnn.RNN(_gru(getkey()), reverse=True), rnn)
    with pytest.raises(TypeError, match="`merge` must be a str or a callable, got int"):
        eqrnn.Bidirectional(rnn, rnn, merge=3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`merge` must be one of"):
        eqrnn.Bidirectional(rnn, rnn, merge="max")  # pyright: ignore[reportArgumentType]
    bi = eqrnn.Bidirectional(rnn, rnn)
    with pytest.raises(ValueError, match=r"`hidden` must be a pair"):
        bi(jnp.ones((4, 3)), hidden=jnp.zeros(4))  # pyright: ignore[reportArgumentType]


# --- StackedRNN --------------------------------------------------------------


def _stack(getkey, **kwargs):
    return eqrnn.StackedRNN(
        [
            eqrnn.Bidirectional(eqrnn.RNN(_gru(getkey())), eqrnn.RNN(_gru(getkey()))),
            eqrnn.RNN(_lstm(getkey(), 8, 8)),
            eqrnn.RNN(_gru(getkey(), 8, 8)),
        ],
        **kwargs,
    )


def test_stacked_rnn_equals_its_layers_composed(getkey):
    stack = _stack(getkey)
    xs = jr.normal(getkey(), (6, 3))
    outputs, finals = eqx.filter_jit(lambda s, x: s(x, length=5))(stack, xs)
    x = xs
    expected_finals = []
    for layer in stack.layers:
        x, final = layer.run(x, length=5)
        expected_finals.append(final)
    assert_tree_allclose(outputs, x)
    assert_tree_allclose(finals, tuple(expected_finals))
    assert outputs.shape == (6, 8) and not jnp.any(outputs[5:])


def test_stacked_rnn_residual_adds_each_upper_layers_input(getkey):
    plain = _stack(getkey)
    residual = eqrnn.StackedRNN(
        [eqrnn.RNN(_gru(getkey(), 3, 8)), *plain.layers[1:]], residual=True
    )
    xs = jr.normal(getkey(), (6, 3))
    outputs, _ = residual(xs)
    x0, _ = residual.layers[0].run(xs)
    x1 = residual.layers[1].run(x0)[0] + x0
    x2 = residual.layers[2].run(x1)[0] + x1
    assert_tree_allclose(outputs, x2)


def test_stacked_rnn_residual_needs_matching_widths(getkey, no_jaxtyping):
    stack = eqrnn.StackedRNN(
        [eqrnn.RNN(_gru(getkey(), 3, 4)), eqrnn.RNN(_gru(getkey(), 4, 5))],
        residual=True,
    )
    with pytest.raises(ValueError, match=r"`residual=True` needs layer 1's outputs"):
        stack(jnp.ones((4, 3)))


def test_dropout_differs_between_keys_and_is_off_in_inference(getkey):
    stack = _stack(getkey, dropout=0.5)
    xs = jr.normal(getkey(), (6, 3))
    run = eqx.filter_jit(lambda s, x, k: s(x, key=k)[0])
    a, b = run(stack, xs, jr.key(1)), run(stack, xs, jr.key(2))
    assert not jnp.allclose(a, b)
    assert_tree_allclose(run(stack, xs, jr.key(1)), a)  # same key, same mask
    no_dropout = eqrnn.StackedRNN(stack.layers)(xs)[0]
    assert_tree_allclose(eqx.nn.inference_mode(stack)(xs)[0], no_dropout)
    assert_tree_allclose(stack(xs, inference=True)[0], no_dropout)


def test_dropout_without_a_key_is_an_error(getkey):
    with pytest.raises(ValueError, match="dropout needs a `key`"):
        _stack(getkey, dropout=0.5)(jnp.ones((4, 3)))


def test_stacked_rnn_rejects_bad_arguments(getkey, no_jaxtyping):
    rnn = eqrnn.RNN(_gru(getkey()))
    with pytest.raises(ValueError, match="at least one layer"):
        eqrnn.StackedRNN([])
    with pytest.raises(TypeError, match=r"`layers\[1\]` must be an eqrnn.RNN"):
        eqrnn.StackedRNN([rnn, _gru(getkey())])  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\)"):
        eqrnn.StackedRNN([rnn], dropout=1.0)
    with pytest.raises(
        ValueError, match=r"`hidden` must hold one state per layer \(1\)"
    ):
        eqrnn.StackedRNN([rnn])(jnp.ones((4, 3)), hidden=[None, None])


# --- jit, vmap, grad, serialisation ------------------------------------------


def test_layers_under_vmap_equal_the_per_example_loop(getkey):
    stack = _stack(getkey)
    xs = jr.normal(getkey(), (3, 6, 3))
    lengths = jnp.array([6, 2, 0])
    batched = eqx.filter_jit(
        lambda s, x, n: jax.vmap(lambda xi, ni: s(xi, length=ni))(x, n)
    )
    outputs, finals = batched(stack, xs, lengths)
    for b in range(3):
        expected = stack(xs[b], length=lengths[b])
        row = jax.tree.map(lambda f, b=b: f[b], finals)
        assert_tree_allclose((outputs[b], row), expected)


def test_gradients_flow_to_every_layer_and_match_finite_differences(getkey):
    stack = _stack(getkey)
    xs = jr.normal(getkey(), (5, 3))

    @eqx.filter_jit
    @eqx.filter_value_and_grad
    def loss(stack, xs):
        outputs, _ = stack(xs, length=4)
        return jnp.sum(jnp.sin(outputs))

    value, grads = loss(stack, xs)
    for leaf in jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)):
        assert jnp.all(jnp.isfinite(leaf)) and jnp.any(leaf != 0)
    # One weight, checked by central differences in float64.
    eps = 1e-6

    def where(s):
        return s.layers[1].cell.weight_hh  # pyright: ignore[reportAttributeAccessIssue]

    w = where(stack)

    def bumped(delta):
        new = eqx.tree_at(where, stack, w.at[2, 1].add(delta))
        return loss(new, xs)[0]

    numeric = (bumped(eps) - bumped(-eps)) / (2 * eps)
    analytic = where(grads)[2, 1]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    del value


def test_serialisation_round_trips_every_layer_bit_exactly(getkey, tmp_path):
    stack = _stack(getkey, dropout=0.25)
    modules = {
        "stack": stack,
        "bidirectional": stack.layers[0],
        "rnn": stack.layers[1],
        "lstm_proj": eqrnn.RNN(_lstm(getkey(), proj_size=2)),
    }
    for name, module in modules.items():
        path = tmp_path / f"{name}.eqx"
        eqx.tree_serialise_leaves(path, module)
        skeleton = jax.tree.map(
            lambda x: jnp.zeros_like(x) if eqx.is_array(x) else x, module
        )
        loaded = eqx.tree_deserialise_leaves(path, skeleton)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(module), strict=True):
            if eqx.is_array(a):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            else:
                assert a == b


def test_bidirectional_and_stacked_resets_equal_their_pieces_and_step(getkey):
    k1, k2, k3 = (getkey() for _ in range(3))
    bi = eqrnn.Bidirectional(
        eqrnn.RNN(eqrnn.GRUCell(3, 4, key=k1)), eqrnn.RNN(eqrnn.LSTMCell(3, 4, key=k2))
    )
    x = jr.normal(getkey(), (7, 3))
    resets = jnp.array([False, False, True, False, False, True, False])
    outputs, finals = bi.run(x, resets=resets, length=6)
    out_f, final_f = bi.forward.run(x, resets=resets, length=6)
    out_b, final_b = bi.backward.run(
        x, resets=resets, length=6, reverse=True, keep_order=True
    )
    assert_tree_allclose(
        (outputs, finals), (jnp.concatenate([out_f, out_b], -1), (final_f, final_b))
    )
    upper = eqrnn.RNN(eqrnn.GRUCell(4, 5, key=k3))
    stack = eqrnn.StackedRNN([bi.forward, upper])
    out, (h0, h1) = stack(x, resets=resets)
    lower_out, lower_final = bi.forward.run(x, resets=resets)
    upper_out, upper_final = upper.run(lower_out, resets=resets)
    assert_tree_allclose((out, h0, h1), (upper_out, lower_final, upper_final))
    # Streaming with `reset=` gives the same outputs.
    hidden = stack.init_hidden()
    for t in range(x.shape[0]):
        y, hidden = stack.step(x[t], hidden, reset=resets[t])
        assert_tree_allclose(y, out[t])


def test_generate_equals_a_python_loop_over_step_and_jits(getkey):
    k1, k2 = getkey(), getkey()
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 3, key=k1))
    stack = eqrnn.StackedRNN([rnn, eqrnn.RNN(eqrnn.LSTMCell(3, 3, key=k2))])
    readout = jr.normal(getkey(), (3, 3))

    def next_input(out, key):
        noise = jnp.zeros(3) if key is None else 0.1 * jr.normal(key, (3,))
        return jnp.tanh(readout @ out) + noise

    first = jr.normal(getkey(), (3,))
    for layer in (rnn, stack):
        inputs, outputs, hidden = jax.jit(
            lambda layer, first: eqrnn.generate(layer, first, next_input, 6)
        )(layer, first)
        x, h = first, layer.init_hidden()
        for t in range(6):
            assert_tree_allclose(inputs[t], x)
            out, h = layer.step(x, h)
            assert_tree_allclose(outputs[t], out)
            x = next_input(out, None)
        assert_tree_allclose(hidden, h)
        key = getkey()
        a = eqrnn.generate(layer, first, next_input, 4, key=key)
        b = eqrnn.generate(layer, first, next_input, 4, key=key)
        assert_tree_allclose(a, b)
        assert not jnp.allclose(a[0][1:], inputs[1:4])


def test_generate_checks_what_next_input_returns(getkey, no_jaxtyping):
    rnn = eqrnn.RNN(eqrnn.GRUCell(3, 4, key=getkey()))
    with pytest.raises(ValueError, match=r"`next_input` must return the next input"):
        eqrnn.generate(rnn, jnp.ones(3), lambda out, key: out, 3)
    with pytest.raises(TypeError, match=r"must be an eqrnn\.RNN or StackedRNN"):
        eqrnn.generate(rnn.cell, jnp.ones(3), lambda out, key: out, 3)  # pyright: ignore[reportArgumentType]
