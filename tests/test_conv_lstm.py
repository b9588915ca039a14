"""`ConvLSTMCell`: Keras 3's ConvLSTM as the reference (values, gradients, weight
conversion both ways), and every scan option and layer with inputs of shape
`(time, *spatial, channels)`, which the shared cell tests (vector inputs) do not
build."""

import re
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import keras
import numpy as np
import pytest
from jax.test_util import check_grads

import eqrnn
from eqrnn.interop import from_keras, to_keras

from .helpers import assert_tree_allclose, random_params
from .registry import BY_CLASS


SHAPE = (5, 4, 2)  # one step: 5 x 4 pixels, 2 channels


def _keras_layer(rank: int, padding: str, kernel: Any, spatial: tuple, rng: Any):
    cls = {1: keras.layers.ConvLSTM1D, 2: keras.layers.ConvLSTM2D}[rank]
    layer = cls(
        3,
        kernel,
        padding=padding,
        return_sequences=True,
        return_state=True,
        dtype="float32",
    )
    layer.build((None, None, *spatial, 2))
    for w in layer.trainable_variables:
        w.assign(0.4 * rng.standard_normal(w.shape))
    return layer


# Keras 3 computes `tanh` in float32 even in a float64 layer (its result type of
# float64 and a Python float is float32), so the comparison is in float32; the
# float64 equations are checked against NumPy below.
@pytest.mark.standard_promotion  # Keras' ops promote Python scalars loosely
@pytest.mark.parametrize(
    "rank, padding, kernel",
    [(1, "valid", 3), (2, "same", (3, 2)), (2, "valid", 2)],
)
def test_values_gradients_and_weights_equal_keras(rank, padding, kernel):
    rng = np.random.default_rng(rank)
    spatial = (6,) if rank == 1 else (5, 4)
    layer = _keras_layer(rank, padding, kernel, spatial, rng)
    x = rng.standard_normal((2, 4, *spatial, 2)).astype(np.float32)
    rnn = from_keras(layer, input_shape=(*spatial, 2))
    cell = rnn.cell
    assert isinstance(cell, eqrnn.ConvLSTMCell)
    assert rnn.return_hidden and cell.padding == padding

    def keras_loss(weights, x):
        (outputs, h, c), _ = layer.stateless_call(weights, others, x)
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(h * c), (outputs, h, c)

    def eqrnn_loss(rnn, x):
        outputs, (h, c) = jax.vmap(rnn)(x)
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(h * c), (outputs, h, c)

    weights = [jnp.asarray(w) for w in layer.trainable_variables]
    others = [jnp.asarray(w) for w in layer.non_trainable_variables]
    (_, expected), (grad_w, grad_x) = jax.value_and_grad(
        keras_loss, argnums=(0, 1), has_aux=True
    )(weights, x)
    (_, got), (grads, grad_x_eq) = jax.value_and_grad(
        eqrnn_loss, argnums=(0, 1), has_aux=True
    )(rnn, x)
    assert cell.dtype == jnp.float32
    assert_tree_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert_tree_allclose(grad_x_eq, grad_x, rtol=1e-5, atol=1e-5)
    assert_tree_allclose(
        (grads.cell.weight_ih, grads.cell.weight_hh, grads.cell.bias),
        tuple(grad_w),
        rtol=1e-5,
        atol=1e-5,
    )
    # ... and back: the same weights, bit for bit, in a layer that computes the same.
    back = to_keras(rnn)
    assert type(back) is type(layer)
    for a, b in zip(back.trainable_variables, layer.trainable_variables, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.standard_promotion
def test_keras_layers_eqrnn_cannot_express_are_refused():
    layer = keras.layers.ConvLSTM1D(3, 2, strides=2, dtype="float32")
    layer.build((None, None, 8, 2))
    with pytest.raises(ValueError, match="strides"):
        from_keras(layer, input_shape=(8, 2))
    layer = keras.layers.ConvLSTM1D(3, 2, dtype="float32")
    with pytest.raises(ValueError, match="not built"):
        from_keras(layer, input_shape=(8, 2))
    layer.build((None, None, 8, 2))
    with pytest.raises(ValueError, match="2 channels"):
        from_keras(layer, input_shape=(8, 5))
    cell = eqrnn.ConvLSTMCell((8, 2), 3, 2, activation_fn=jax.nn.relu, key=jr.key(0))
    with pytest.raises(ValueError, match="named activations"):
        to_keras(cell)


@pytest.mark.parametrize(
    "shape, padding, kernel",
    [((7, 3), "same", 3), ((6, 5, 2), "valid", (3, 2)), ((4, 5, 3, 2), "same", 2)],
)
def test_one_step_equals_the_equations_in_numpy_float64(shape, padding, kernel, getkey):
    cell = eqrnn.ConvLSTMCell(shape, 4, kernel, padding=padding, key=getkey())
    cell = random_params(cell, getkey())
    x = jr.normal(getkey(), shape)
    hidden = jax.tree.map(lambda z: jr.normal(getkey(), z.shape), cell.init_hidden())
    expected = BY_CLASS[eqrnn.ConvLSTMCell].numpy_step(
        cell, np.asarray(x), jax.tree.map(np.asarray, hidden)
    )
    assert_tree_allclose(
        eqx.filter_jit(lambda c, x, h: c(x, h))(cell, x, hidden), expected
    )


def _cell(key: Any, **kwargs: Any) -> eqrnn.ConvLSTMCell:
    return random_params(eqrnn.ConvLSTMCell(SHAPE, 3, (3, 2), key=key, **kwargs), key)


def _python_loop(cell, xs, length, reverse, resets):
    h = cell.init_hidden()
    outs = [jax.tree.map(jnp.zeros_like, h) for _ in range(xs.shape[0])]
    steps = range(int(length))
    for t in reversed(steps) if reverse else steps:
        if bool(resets[t]):
            h = cell.init_hidden()
        h = cell(xs[t], h)
        outs[t] = h
    return h, jax.tree.map(lambda *a: jnp.stack(a), *outs)


@eqx.filter_jit
def _batched(cell, xs, lengths, resets, reverse):
    def one(x, n, r):
        return eqrnn.scan_last(
            cell, x, length=n, resets=r, reverse=reverse
        ), eqrnn.scan_all_hidden(cell, x, length=n, resets=r, reverse=reverse)

    return jax.vmap(one)(xs, lengths, resets)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_with_lengths_resets_and_vmap_equals_the_python_loop(reverse, getkey):
    cell = _cell(getkey(), carry_init=jax.nn.initializers.normal(1.0))
    xs = jr.normal(getkey(), (3, 5, *SHAPE))
    lengths = jnp.array([5, 3, 0])
    resets = jnp.zeros((3, 5), bool).at[0, 2].set(True).at[1, 1].set(True)
    finals, stacked = _batched(cell, xs, lengths, resets, reverse)
    for i in range(3):
        expected = _python_loop(cell, xs[i], lengths[i], reverse, resets[i])
        got = jax.tree.map(lambda a, i=i: a[i], (finals, stacked))
        assert_tree_allclose(got, expected)


def test_gradients_pass_check_grads_and_checkpoint_keeps_them(getkey):
    cell = _cell(getkey())
    xs = jr.normal(getkey(), (4, *SHAPE))
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def loss(params, xs, checkpoint: bool | int = False):
        c = eqx.combine(jax.tree.map(jnp.asarray, params), static)
        hs, cs = eqrnn.scan_all_hidden(c, xs, length=3, checkpoint=checkpoint)
        return jnp.sum(jnp.sin(hs)) + jnp.sum(cs**2)

    check_grads(jax.jit(loss), (params, xs), order=1, modes=["rev"])
    plain = jax.jit(jax.value_and_grad(loss))(params, xs)
    checkpointed = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, 2)))(params, xs)
    assert_tree_allclose(checkpointed, plain)


def test_layers_take_spatial_inputs(getkey):
    first = eqrnn.RNN(_cell(getkey()))
    bi = eqrnn.Bidirectional(first, eqrnn.RNN(_cell(getkey())))
    xs = jr.normal(getkey(), (6, *SHAPE))
    out = cast(jax.Array, bi(xs, length=4))
    assert out.shape == (6, 5, 4, 6)  # the two directions' channels, concatenated
    forward = cast(jax.Array, first(xs, length=4))
    backward, _ = eqrnn.scan_all_hidden(bi.backward.cell, xs, length=4, reverse=True)
    assert_tree_allclose(out, jnp.concatenate([forward, backward], axis=-1))
    second = eqrnn.RNN(eqrnn.ConvLSTMCell((5, 4, 6), 2, 3, key=getkey()))
    stack = eqrnn.StackedRNN([bi, second])
    assert_tree_allclose(stack(xs, length=4)[0], second(out, length=4))
    # Streaming one step at a time gives the whole-sequence outputs.
    step = jax.jit(lambda x, h: first.step(x, h))
    hidden, outs = first.init_hidden(), []
    for x in xs:
        y, hidden = step(x, hidden)
        outs.append(y)
    assert_tree_allclose(jnp.stack(outs), first(xs))


def test_half_precision_runs_in_float32_and_keeps_its_dtype(getkey):
    cell = _cell(getkey())
    xs = jr.normal(getkey(), (6, *SHAPE))
    wide = eqrnn.scan_all_hidden(
        jax.tree.map(
            lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, cell
        ),
        xs.astype(jnp.float32),
    )
    half = jax.tree.map(
        lambda a: a.astype(jnp.bfloat16) if eqx.is_inexact_array(a) else a, cell
    )
    hs, cs = eqrnn.scan_all_hidden(half, xs.astype(jnp.bfloat16))
    assert hs.dtype == cs.dtype == jnp.bfloat16
    np.testing.assert_allclose(hs.astype(jnp.float32), wide[0], atol=0.05)


@pytest.mark.usefixtures("no_jaxtyping")
def test_wrong_shapes_get_messages_whose_fixes_run(getkey):
    cell = _cell(getkey())
    with pytest.raises(ValueError, match=r"input_shape = \(5, 4, 2\)"):
        cell(jnp.ones((5, 5, 2)), cell.init_hidden())
    batch = jnp.ones((3, 6, *SHAPE))
    with pytest.raises(ValueError, match=r"\(time, 5, 4, 2\)") as e:
        eqrnn.scan_all_hidden(cell, batch)
    fix = re.search(r"`(jax\.vmap\(.*?\)\(batch\))`", str(e.value))
    assert fix is not None, e.value
    out = eval(fix.group(1), {"jax": jax, "eqrnn": eqrnn, "cell": cell, "batch": batch})
    assert out[0].shape == (3, 6, 5, 4, 3)
    layer = eqrnn.RNN(eqrnn.ConvLSTMCell((5, 4, 7), 2, 3, key=getkey()))
    with pytest.raises(ValueError, match=r"input_shape=\(5, 4, 3\)"):
        eqrnn.StackedRNN([eqrnn.RNN(cell), layer])(jnp.ones((2, *SHAPE)))


@pytest.mark.usefixtures("no_jaxtyping")
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (4,)}, "1, 2 or 3 spatial axes"),
        ({"kernel_size": (3, 3, 3)}, "one entry per spatial axis"),
        ({"padding": "causal"}, "'same' or 'valid'"),
        ({"padding": "valid", "kernel_size": 6}, "must fit"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, match):
    args: dict[str, Any] = {
        "input_shape": SHAPE,
        "hidden_channels": 3,
        "kernel_size": 3,
    }
    with pytest.raises(ValueError, match=match):
        eqrnn.ConvLSTMCell(**{**args, **kwargs}, key=jr.key(0))


def test_nan_in_the_padding_reaches_no_value_and_no_gradient(getkey):
    cell = _cell(getkey())
    xs = jr.normal(getkey(), (5, *SHAPE))
    dirty = xs.at[3:].set(jnp.nan)

    @jax.jit
    def run(cell, xs):
        def loss(cell, xs):
            return jnp.sum(cast(jax.Array, eqrnn.RNN(cell)(xs, length=3)) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(cell, xs)

    clean, got = run(cell, xs), run(cell, dirty)
    assert all(jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(got))
    assert_tree_allclose(got, clean, rtol=0, atol=0)
