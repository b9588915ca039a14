"""Cells: construction, known answers from the equations, dtypes and bad input.

The comparisons against PyTorch and Flax NNX live in `test_reference.py`.
"""

import inspect

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest

import eqrnn

from .helpers import assert_tree_allclose, random_params, tolerance
from .registry import ALL_CELLS, BY_CLASS, STEP_CELLS, sigmoid as _sigmoid


CELLS = STEP_CELLS
NUM_GATES: dict[type, int] = {
    cls: gates for cls in CELLS if (gates := BY_CLASS[cls].num_gates) is not None
}


def _call(cell, x, hidden):
    return cell(x, hidden)


@pytest.mark.parametrize("cls", CELLS)
def test_cell_equals_numpy_equations_in_float64(cls, getkey):
    cell = random_params(cls(3, 4, key=getkey()), getkey())
    x = jr.normal(getkey(), (3,))
    hidden = jax.tree.map(lambda z: jr.normal(getkey(), z.shape), cell.init_hidden())
    expected = BY_CLASS[cls].numpy_step(
        cell, np.asarray(x), jax.tree.map(np.asarray, hidden)
    )
    assert_tree_allclose(eqx.filter_jit(_call)(cell, x, hidden), expected)


@pytest.mark.parametrize("cls", list(NUM_GATES))
def test_parameter_layout_is_pytorch_gate_stacked(cls, getkey):
    cell = cls(3, 5, use_bias=True, key=getkey())
    gates = NUM_GATES[cls]
    assert cell.weight_ih.shape == (gates * 5, 3)
    assert cell.weight_hh.shape == (gates * 5, 5)
    assert cell.bias is not None and cell.bias.shape == (gates * 5,)
    if cls is eqrnn.GRUCell:
        assert cell.bias_hn is not None and cell.bias_hn.shape == (5,)


@pytest.mark.parametrize("cls", list(NUM_GATES))
def test_default_init_is_flax_lecun_orthogonal_zeros(cls, getkey):
    cell = cls(64, 32, use_bias=True, key=getkey())
    # Each gate's recurrent block is orthogonal.
    for g in range(NUM_GATES[cls]):
        block = np.asarray(cell.weight_hh[g * 32 : (g + 1) * 32])
        np.testing.assert_allclose(block @ block.T, np.eye(32), atol=1e-10)
    # LeCun normal: variance 1 / fan_in, fan_in = input_size.
    var = float(jnp.var(cell.weight_ih))
    assert 0.7 / 64 < var < 1.3 / 64
    assert not jnp.any(cell.bias)


@pytest.mark.parametrize("cls", CELLS)
def test_use_bias_false_has_no_bias(cls, getkey):
    cell = cls(3, 4, use_bias=False, key=getkey())
    assert cell.bias is None
    out = cell(jnp.ones(3), cell.init_hidden())
    assert jax.tree.structure(out) == jax.tree.structure(cell.init_hidden())


@pytest.mark.parametrize("cls", CELLS)
def test_init_hidden_is_zeros_and_output_is_h(cls, getkey):
    cell = cls(3, 4, key=getkey())
    hidden = cell.init_hidden()
    for leaf in jax.tree.leaves(hidden):
        assert leaf.shape == (4,) and not jnp.any(leaf)
    new = cell(jnp.ones(3), hidden)
    expected_out = new[0] if isinstance(new, tuple) else new
    assert cell.output(new) is expected_out


@pytest.mark.parametrize("cls", CELLS)
def test_carry_init_draws_a_trainable_initial_hidden(cls, getkey):
    cell = cls(3, 4, carry_init=jax.nn.initializers.ones, key=getkey())
    for leaf in jax.tree.leaves(cell.init_hidden()):
        assert_tree_allclose(leaf, jnp.ones(4))

    def loss(c):
        # Every unit of the final state: one unit alone can be inactive (ReLU).
        final = eqrnn.scan_last(c, jnp.ones((2, 3)))
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(final))

    grads = jax.grad(loss)(cell)
    assert grads.initial_hidden is not None
    assert any(jnp.any(g != 0) for g in jax.tree.leaves(grads.initial_hidden))


def test_lstm_with_projection_equals_numpy_equations(getkey):
    cell = random_params(eqrnn.LSTMCell(3, 5, proj_size=2, key=getkey()), getkey())
    assert cell.weight_hr is not None
    assert cell.weight_hh.shape == (20, 2) and cell.weight_hr.shape == (2, 5)
    x = jr.normal(getkey(), (3,))
    h, c = jr.normal(getkey(), (2,)), jr.normal(getkey(), (5,))
    g = np.asarray(cell.weight_ih @ x + cell.weight_hh @ h + cell.bias)
    i, f, gg, o = (g[k * 5 : (k + 1) * 5] for k in range(4))
    c_new = _sigmoid(f) * np.asarray(c) + _sigmoid(i) * np.tanh(gg)
    h_new = np.asarray(cell.weight_hr) @ (_sigmoid(o) * np.tanh(c_new))
    assert_tree_allclose(eqx.filter_jit(_call)(cell, x, (h, c)), (h_new, c_new))
    hs, cs = eqrnn.scan_all_hidden(cell, jnp.ones((4, 3)), length=3)
    assert hs.shape == (4, 2) and cs.shape == (4, 5)
    assert cell.output((h, c)) is h


def test_lstm_proj_size_must_be_smaller_than_hidden_size(getkey):
    with pytest.raises(ValueError, match="`proj_size` must be smaller than"):
        eqrnn.LSTMCell(3, 4, proj_size=4, key=getkey())


def test_lstm_forget_bias_is_stored_in_the_bias(getkey):
    key = getkey()
    plain = eqrnn.LSTMCell(3, 4, key=key)
    biased = eqrnn.LSTMCell(3, 4, forget_bias=1.0, key=key)
    assert plain.bias is not None and biased.bias is not None
    assert_tree_allclose(biased.bias[4:8], plain.bias[4:8] + 1.0)
    assert_tree_allclose(biased.bias[:4], plain.bias[:4])
    assert_tree_allclose(biased.bias[8:], plain.bias[8:])


def test_simple_cell_residual_and_activation(getkey):
    k1, k2 = getkey(), getkey()
    cell = random_params(eqrnn.SimpleCell(3, 4, key=k1), k2)
    relu = random_params(eqrnn.SimpleCell(3, 4, activation_fn=jax.nn.relu, key=k1), k2)
    residual = random_params(eqrnn.SimpleCell(3, 4, residual=True, key=k1), k2)
    x, h = jr.normal(getkey(), (3,)), jr.normal(getkey(), (4,))
    pre = cell.weight_ih @ x + cell.weight_hh @ h + cell.bias
    assert_tree_allclose(relu(x, h), jax.nn.relu(pre))
    assert_tree_allclose(residual(x, h), jnp.tanh(pre + h))


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
def test_dtype_is_kept_by_parameters_and_hidden_state(cls, dtype, getkey):
    cell = cls(3, 4, dtype=dtype, key=getkey())
    for leaf in jax.tree.leaves(cell):
        if eqx.is_array(leaf):
            assert leaf.dtype == dtype
    for out in (
        cell(jnp.ones(3, dtype), cell.init_hidden()),
        eqrnn.scan_all_hidden(cell, jnp.ones((5, 3), dtype)),
    ):
        for leaf in jax.tree.leaves(out):
            assert leaf.dtype == dtype


@pytest.mark.parametrize("cls", CELLS)
def test_float32_cell_matches_float64_cell(cls, getkey):
    cell64 = random_params(cls(3, 4, dtype=jnp.float64, key=getkey()), getkey())
    cell32 = jax.tree.map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, cell64
    )
    xs = jr.normal(getkey(), (6, 3))
    out64 = eqrnn.scan_all_hidden(cell64, xs)
    out32 = eqrnn.scan_all_hidden(cell32, xs.astype(jnp.float32))
    assert_tree_allclose(out32, out64, rtol=tolerance(jnp.float32), atol=1e-6)


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("size", [0, -1])
def test_nonpositive_sizes_are_rejected(cls, size, getkey):
    with pytest.raises(ValueError, match="`hidden_size` must be a positive integer"):
        cls(3, size, key=getkey())
    with pytest.raises(ValueError, match="`input_size` must be a positive integer"):
        cls(size, 3, key=getkey())


def test_integer_dtype_for_parameters_is_rejected(getkey):
    with pytest.raises(TypeError, match="`dtype` must be a floating dtype"):
        eqrnn.GRUCell(3, 4, dtype=jnp.int32, key=getkey())


def test_forget_bias_without_bias_is_rejected(getkey):
    with pytest.raises(ValueError, match=r"`forget_bias=1\.0` needs `use_bias=True`"):
        eqrnn.LSTMCell(3, 4, use_bias=False, forget_bias=1.0, key=getkey())


# Every cell that takes the option.
@pytest.mark.parametrize(
    "cls",
    [cls for cls in ALL_CELLS if "forget_bias" in inspect.signature(cls).parameters],
)
def test_forget_bias_that_is_not_a_number_is_rejected(cls, getkey, no_jaxtyping):
    match = f"{cls.__name__}: `forget_bias` must be a float, got '1'"
    with pytest.raises(TypeError, match=match):
        cls(3, 4, forget_bias="1", key=getkey())  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("cls", CELLS)
def test_batched_input_to_a_cell_is_rejected(cls, getkey, no_jaxtyping):
    cell = cls(3, 4, key=getkey())
    batched_hidden = jax.tree.map(lambda h: jnp.stack([h, h]), cell.init_hidden())
    with pytest.raises(
        ValueError, match=r"`input` must have shape .* batch with `jax.vmap`"
    ):
        cell(jnp.ones((2, 3)), batched_hidden)


@pytest.mark.parametrize("cls", CELLS)
def test_wrong_input_width_is_rejected(cls, getkey, no_jaxtyping):
    cell = cls(3, 4, key=getkey())
    with pytest.raises(
        ValueError,
        match=r"`input` must have shape \(input_size,\) = \(3,\), got shape \(5,\)",
    ):
        cell(jnp.ones(5), cell.init_hidden())


def test_integer_input_is_rejected(getkey, no_jaxtyping):
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    with pytest.raises(TypeError, match="`input` must be a floating-point array"):
        cell(jnp.ones(3, jnp.int32), cell.init_hidden())


def test_hidden_of_wrong_shape_is_rejected(getkey, no_jaxtyping):
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    with pytest.raises(
        ValueError, match=r"`hidden` must be an array of shape \(4,\), got \(5,\)"
    ):
        cell(jnp.ones(3), jnp.zeros(5))


def test_lstm_hidden_of_wrong_structure_is_rejected(getkey, no_jaxtyping):
    cell = eqrnn.LSTMCell(3, 4, key=getkey())
    with pytest.raises(
        ValueError, match=r"`hidden` must be a tuple of arrays of shapes"
    ):
        cell(jnp.ones(3), jnp.zeros(4))


def test_mixed_dtypes_are_an_error_not_a_silent_cast(getkey, no_jaxtyping):
    cell = eqrnn.GRUCell(3, 4, dtype=jnp.bfloat16, key=getkey())
    with pytest.raises(TypeError, match="`input` has dtype float32 but the cell's"):
        cell(jnp.ones(3, jnp.float32), cell.init_hidden())
    with pytest.raises(TypeError, match="`hidden` has dtype float32 but the cell's"):
        cell(jnp.ones(3, jnp.bfloat16), jnp.zeros(4, jnp.float32))


def test_the_jaxtyping_annotations_catch_what_the_library_does_not_check(getkey):
    # `step` is the fast path's inner function: the library does not re-check its
    # arguments, the annotations do (under the test suite's jaxtyping hook).
    cell = eqrnn.GRUCell(3, 4, key=getkey())
    with pytest.raises(jaxtyping.TypeCheckError):
        cell.step(jnp.ones((2, 12)), jnp.zeros(4))
