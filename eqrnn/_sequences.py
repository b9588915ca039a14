"""Helpers for variable-length sequences: padding a list of them into a batch, the
mask of valid steps, and reductions over the valid steps only."""

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Int, Shaped

from ._custom_types import Length
from ._scan import check_length


def pad_sequences(
    sequences: Sequence[Shaped[ArrayLike, "_ ..."]],
    *,
    length: int | None = None,
    value: float | int = 0,
) -> tuple[Shaped[Array, "batch time ..."], Int[Array, " batch"]]:
    """Pad a list of sequences of different lengths into one batch, plus their
    lengths: what `jax.vmap` over `RNN`, `scan_all_hidden` or `masked_mean` takes.

    !!! example

        ```python
        >>> import jax.numpy as jnp, eqrnn
        >>> batch, lengths = eqrnn.pad_sequences([jnp.ones((3, 2)), jnp.ones((1, 2))])
        >>> batch.shape, lengths
        ((2, 3, 2), Array([3, 1], dtype=int32))

        ```

    **Arguments:**

    - `sequences`: arrays with time on axis 0 and the same trailing shape and dtype.
    - `length`: the padded length; default the longest sequence's. A sequence longer
        than `length` is an error, never cut.
    - `value`: what the padding holds (the scan helpers never read it), a value
        the sequences' dtype holds exactly: `value=float("nan")` or `2.7` in integer
        sequences is an error, never rounded.

    **Returns:**

    `(batch, lengths)`: shape `(len(sequences), length, ...)` and `(len(sequences),)`.
    """
    arrays = [np.asarray(s) for s in sequences]
    if not arrays:
        raise ValueError("pad_sequences: `sequences` is empty; pass at least one.")
    for i, a in enumerate(arrays):
        if a.ndim < 1:
            raise ValueError(
                f"pad_sequences: `sequences[{i}]` must have a time axis (axis 0), "
                "got a scalar."
            )
        if a.shape[1:] != arrays[0].shape[1:] or a.dtype != arrays[0].dtype:
            raise ValueError(
                f"pad_sequences: every sequence must have the trailing shape and "
                f"dtype of `sequences[0]`, {arrays[0].shape[1:]} {arrays[0].dtype}; "
                f"`sequences[{i}]` has {a.shape[1:]} {a.dtype}."
            )
    lengths = [a.shape[0] for a in arrays]
    longest = max(lengths)
    if length is not None and (
        isinstance(length, bool) or not isinstance(length, int) or length < longest
    ):
        raise ValueError(
            f"pad_sequences: `length` must be an int of at least {longest} (the "
            f"longest sequence; nothing is cut), got {length!r}. Leave it out to pad "
            "to the longest, or cut the sequences first."
        )
    dtype = arrays[0].dtype
    _check_pad_value(value, dtype)
    shape = (len(arrays), longest if length is None else length, *arrays[0].shape[1:])
    batch = np.full(shape, value, dtype)
    for i, a in enumerate(arrays):
        batch[i, : a.shape[0]] = a
    return jnp.asarray(batch), jnp.asarray(lengths, jnp.int32)


def _check_pad_value(value: Any, dtype: np.dtype) -> None:
    """`value` must survive the cast to `dtype` unchanged (NaN into floats does)."""
    with np.errstate(invalid="ignore", over="ignore"):
        kept = np.asarray(value).astype(dtype)
    same = kept == value or (np.isnan(value) and np.isnan(kept))
    if isinstance(value, bool | numbers.Real) and bool(same):
        return
    # As the user would write it: `float("nan")`, not `nan`.
    source = (
        f'float("{value}")' if repr(value) in ("nan", "inf", "-inf") else repr(value)
    )
    if np.issubdtype(dtype, np.integer):
        fix = (
            "Pad with an integer (e.g. `value=-1` for tokens), or make the sequences "
            "floating point first: `eqrnn.pad_sequences([jnp.asarray(s, jnp.float32) "
            f"for s in sequences], value={source})`."
        )
    else:
        fix = f"Pass a value that {dtype} holds, or cast the sequences first."
    raise ValueError(
        f"pad_sequences: `value={source}` cannot be stored in the sequences' dtype "
        f"{dtype} without changing it (it would become {kept.item()!r}). {fix}"
    )


def sequence_mask(length: Length, num_steps: int) -> Bool[Array, " time"]:
    """The valid steps of one sequence: `arange(num_steps) < length`.

    !!! example

        ```python
        >>> import jax, jax.numpy as jnp, eqrnn
        >>> jax.vmap(eqrnn.sequence_mask, in_axes=(0, None))(jnp.array([1, 3]), 3)
        Array([[ True, False, False],
               [ True,  True,  True]], dtype=bool)

        ```

    **Arguments:**

    - `length`: the number of valid steps, an integer in `[0, num_steps]`.
    - `num_steps`: the padded length.

    **Returns:**

    Booleans of shape `(num_steps,)`, true at the valid steps.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(
            "sequence_mask: `num_steps` must be a non-negative int (the padded "
            f"length, e.g. `inputs.shape[0]`), got {num_steps!r}."
        )
    return _mask(length, num_steps, "sequence_mask")


def _mask(length: Any, num_steps: int, where: str) -> Array:
    """`sequence_mask`, with errors naming the public function `where`."""
    checked = check_length(length, num_steps, where)
    assert checked is not None
    return jnp.arange(num_steps, dtype=checked.dtype) < checked


def masked_sum(
    values: Shaped[ArrayLike, "time ..."], length: Length | None = None
) -> Shaped[Array, "..."]:
    """The sum over time of the valid steps of one sequence (padding, even NaN,
    is left out).

    **Arguments:**

    - `values`: one sequence, time on axis 0 (e.g. per-step losses or outputs).
    - `length`: the number of valid steps; default all.

    **Returns:**

    `values` summed over axis 0, shape `values.shape[1:]`.
    """
    values = _with_time_axis(values, "masked_sum")
    return _masked_sum(values, length, "masked_sum")


def _masked_sum(values: Array, length: Any, where: str) -> Array:
    if length is None:
        return values.sum(axis=0)
    mask = _mask(length, values.shape[0], where)
    mask = mask.reshape(-1, *(1,) * (values.ndim - 1))
    return jnp.where(mask, values, jnp.zeros((), values.dtype)).sum(axis=0)


def masked_mean(
    values: Shaped[ArrayLike, "time ..."], length: Length | None = None
) -> Shaped[Array, "..."]:
    """The mean over time of the valid steps of one sequence: mean pooling, or a
    loss averaged over the steps that exist. A sequence with no valid step gives
    zeros (not NaN), so it adds nothing to a batch's loss or gradient.

    !!! example

        ```python
        >>> import jax, jax.numpy as jnp, eqrnn
        >>> outputs = jnp.array([[1.0, 2.0, 9.0], [3.0, 4.0, 5.0]], jnp.float32)
        >>> lengths = jnp.array([2, 3])  # the 9.0 is padding
        >>> jax.vmap(eqrnn.masked_mean)(outputs, lengths)
        Array([1.5, 4. ], dtype=float32)

        ```

    **Arguments:**

    - `values`: one sequence, time on axis 0, floating point.
    - `length`: the number of valid steps; default all.

    **Returns:**

    The mean over axis 0 of the first `length` steps, shape `values.shape[1:]`.
    """
    values = _with_time_axis(values, "masked_mean")
    if not jnp.issubdtype(values.dtype, jnp.inexact):
        raise TypeError(
            f"masked_mean: `values` must be floating point, got {values.dtype}; "
            "cast first, e.g. `values.astype(jnp.float32)`."
        )
    count = values.shape[0] if length is None else length
    total = _masked_sum(values, length, "masked_mean")
    count = jnp.asarray(count, values.dtype)
    return total / jnp.maximum(count, jnp.ones((), values.dtype))


def _with_time_axis(values: ArrayLike, where: str) -> Array:
    values = jnp.asarray(values)
    if values.ndim < 1:
        raise ValueError(
            f"{where}: `values` must have a time axis (axis 0), got a scalar. For a "
            "batch, `jax.vmap` over sequences and lengths."
        )
    return values
