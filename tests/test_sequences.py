"""`pad_sequences`, `sequence_mask`, `masked_sum` and `masked_mean`."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import eqrnn

from .helpers import assert_tree_allclose


def test_padded_batch_runs_like_each_sequence_alone(getkey):
    cell = eqrnn.GRUCell(2, 3, key=getkey())
    sequences = [jr.normal(getkey(), (n, 2)) for n in (4, 1, 6, 0)]
    batch, lengths = eqrnn.pad_sequences(sequences, value=jnp.nan)
    assert batch.shape == (4, 6, 2) and lengths.tolist() == [4, 1, 6, 0]
    finals = jax.jit(jax.vmap(lambda x, n: eqrnn.scan_last(cell, x, length=n)))(
        batch, lengths
    )
    for sequence, final in zip(sequences, finals, strict=True):
        assert_tree_allclose(final, eqrnn.scan_last(cell, sequence))


def test_pad_sequences_refuses_to_cut_or_mix():
    with pytest.raises(ValueError, match="at least 3"):
        eqrnn.pad_sequences([np.ones((3, 2)), np.ones((1, 2))], length=2)
    with pytest.raises(ValueError, match=r"`sequences\[1\]` has \(3,\) float64"):
        eqrnn.pad_sequences([np.ones((3, 2)), np.ones((1, 3))])
    with pytest.raises(ValueError, match="is empty"):
        eqrnn.pad_sequences([])
    batch, _ = eqrnn.pad_sequences([np.ones((1, 2))], length=4, value=-1)
    assert batch[0, 1:].tolist() == [[-1, -1]] * 3


def test_sequence_mask_and_its_checks(no_jaxtyping):
    masks = jax.vmap(eqrnn.sequence_mask, in_axes=(0, None))(jnp.array([0, 2, 3]), 3)
    assert masks.tolist() == [[False] * 3, [True, True, False], [True] * 3]
    with pytest.raises(ValueError, match=r"`length` must be in \[0, 3\]"):
        eqrnn.sequence_mask(4, 3)
    with pytest.raises(ValueError, match="`num_steps` must be a non-negative int"):
        eqrnn.sequence_mask(1, 2.5)  # pyright: ignore[reportArgumentType]


def test_masked_mean_skips_padding_in_values_and_gradients(getkey):
    values = jr.normal(getkey(), (3, 5, 2))
    values = values.at[0, 3:].set(jnp.nan).at[2].set(jnp.inf)
    lengths = jnp.array([3, 5, 0])

    def loss(values):
        return jax.vmap(eqrnn.masked_mean)(values, lengths).sum()

    means = jax.vmap(eqrnn.masked_mean)(values, lengths)
    assert_tree_allclose(means[0], values[0, :3].mean(0))
    assert_tree_allclose(means[1], values[1].mean(0))
    assert_tree_allclose(means[2], jnp.zeros(2))  # no valid step: zeros, not NaN
    grads = jax.jit(jax.grad(loss))(values)
    assert bool(jnp.all(jnp.isfinite(grads)))
    assert_tree_allclose(grads[0, :3], jnp.full((3, 2), 1 / 3))
    assert not bool(jnp.any(grads[0, 3:])) and not bool(jnp.any(grads[2]))
    assert_tree_allclose(
        jax.vmap(eqrnn.masked_sum)(values, lengths)[:2],
        jnp.stack([values[0, :3].sum(0), values[1].sum(0)]),
    )
    assert_tree_allclose(eqrnn.masked_mean(values[1]), values[1].mean(0))


def test_masked_mean_of_integers_says_to_cast(no_jaxtyping):
    with pytest.raises(TypeError, match=r"values\.astype\(jnp\.float32\)"):
        eqrnn.masked_mean(jnp.arange(3), 2)
    with pytest.raises(ValueError, match="must have a time axis"):
        eqrnn.masked_sum(jnp.ones(()))


def test_int32_lengths_work_everywhere_under_x64_and_strict_promotion(getkey):
    """`pad_sequences` gives int32 lengths; the suite runs with x64 and strict
    dtype promotion, where `arange(T) < length` would mix int64 and int32."""
    k1, k2, k3 = (getkey() for _ in range(3))
    layer = eqrnn.Bidirectional(
        eqrnn.RNN(eqrnn.GRUCell(2, 3, key=k1)), eqrnn.RNN(eqrnn.MinGRU(2, 3, key=k2))
    )
    stack = eqrnn.StackedRNN([layer, eqrnn.RNN(eqrnn.LSTMCell(6, 2, key=k3))])
    batch, lengths = eqrnn.pad_sequences([jnp.ones((4, 2)), jnp.ones((2, 2))])
    assert lengths.dtype == jnp.int32
    outputs, _ = jax.vmap(lambda x, n: stack(x, length=n))(batch, lengths)
    assert not bool(jnp.any(outputs[1, 2:]))
    flipped = jax.vmap(eqrnn.flip_sequence)(batch, lengths)
    assert_tree_allclose(flipped, batch)
