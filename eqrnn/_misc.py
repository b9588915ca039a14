"""Helpers shared by the cells: dtypes, initialisation and argument checks."""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray


# The metadata key of a static field that says how to compute, not what (`unroll`,
# `mode`, ...): checkpoints load across a change of it.
SPEED_SETTING = "eqrnn_speed_setting"


def speed_setting() -> Any:
    """A static field that `load_checkpoint` does not compare (see SPEED_SETTING)."""
    return eqx.field(static=True, metadata={SPEED_SETTING: True})


def default_floating_dtype() -> Any:
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def resolve_dtype(dtype: Any, where: str) -> Any:
    """A cell's `dtype` argument: a floating dtype that JAX keeps as it is."""
    if dtype is None:
        return default_floating_dtype()
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: `dtype` must be a floating dtype, got {dtype}.")
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        # Refused here, once: JAX would truncate every parameter to 32 bits, with a
        # warning per array.
        raise ValueError(
            f"{where}: `dtype={dtype}` needs JAX's 64-bit mode, which is off, so "
            f"JAX would truncate the parameters to 32 bits. Turn it on first with "
            '`jax.config.update("jax_enable_x64", True)` (or the environment '
            f"variable JAX_ENABLE_X64=1), or pass `dtype=jnp.float32`."
        )
    return dtype


def check_key(where: str, key: Any, name: str = "key") -> Any:
    """A JAX random key: a typed key (`jax.random.key`) or a raw uint32 one
    (`jax.random.PRNGKey`), not an int seed."""
    dtype = getattr(key, "dtype", None)
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.ndim >= 1)
    ):
        return key
    raise TypeError(
        f"{where}: `{name}` must be a JAX random key, e.g. `jax.random.key(0)`, "
        f"got {key!r}{'' if dtype is None else f' of dtype {dtype}'}."
    )


def split_key(where: str, key: Any, num: int) -> Any:
    """`jax.random.split(key, num)` of a cell's `key` argument, checked first."""
    return jr.split(check_key(where, key), num)


def check_size(name: str, value: Any) -> int:
    """A positive Python or NumPy integer, returned as `int`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_positive(where: str, name: str, value: Any) -> float:
    """A positive Python or NumPy real number, returned as `float`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 < float(value) < math.inf
    ):
        raise ValueError(f"{where}: `{name}` must be a positive float, got {value!r}.")
    return float(value)


def check_forget_bias(where: str, forget_bias: Any, use_bias: bool) -> None:
    """`forget_bias` of an LSTM-like cell: a number, and 0 unless there is a bias to
    store it in."""
    if not isinstance(forget_bias, int | float) or isinstance(forget_bias, bool):
        raise TypeError(f"{where}: `forget_bias` must be a float, got {forget_bias!r}.")
    if forget_bias != 0 and not use_bias:
        raise ValueError(
            f"{where}: `forget_bias={forget_bias}` needs `use_bias=True`; it is "
            "stored in the bias."
        )


def with_forget_bias(bias: Array | None, gate: slice, forget_bias: float) -> Any:
    """`bias` with `forget_bias` added, once, to its forget gate's part `gate`."""
    if bias is None or forget_bias == 0:
        return bias
    return bias.at[gate].add(forget_bias)


def gate_blocks(
    init: Callable[..., Array],
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    num_gates: int,
    dtype: Any,
) -> Array:
    """`num_gates` blocks of `shape` (`(..., in, out)`), each drawn on its own from
    `init`, concatenated on the last axis: `(..., in, num_gates * out)`."""
    keys = jr.split(key, num_gates)
    draw_dtype = _draw_dtype(dtype)
    blocks = [init(k, shape, draw_dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1).astype(dtype)


def gate_kernels(
    init: Callable[..., Array],
    key: PRNGKeyArray,
    fan_in: int,
    hidden_size: int,
    num_gates: int,
    dtype: Any,
) -> Array:
    """A PyTorch-layout weight `(num_gates * hidden_size, fan_in)`.

    Each gate's block is drawn on its own from `init` in Flax's `(in, out)` layout and
    then transposed, so that `lecun_normal` sees the right fan-in and `orthogonal`
    makes every gate's recurrent matrix orthogonal (as Flax's `LSTMCell` does).
    """
    return gate_blocks(init, key, (fan_in, hidden_size), num_gates, dtype).T


def _draw_dtype(dtype: Any) -> Any:
    # Half-precision weights are drawn in float32 and cast, as Flax's
    # `modified_orthogonal` does: the QR decomposition behind `orthogonal` has no
    # bfloat16/float16 kernel.
    return jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype


def optional_bias(
    use_bias: bool,
    init: Callable[..., Array],
    key: PRNGKeyArray,
    size: int,
    dtype: Any,
) -> Array | None:
    """A bias of `size` entries drawn from `init`, or `None` without `use_bias`."""
    if not use_bias:
        return None
    return jnp.asarray(init(key, (size,), _draw_dtype(dtype)), dtype)


def check_bool(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: `{name}` must be a bool, got {value!r}.")
    return value


def describe_shape(shape: tuple[int, ...]) -> str:
    """`(input_size,) = (3,)` for a vector input, `input_shape = (8, 8, 2)` else."""
    if len(shape) == 1:
        return f"(input_size,) = ({shape[0]},)"
    return f"input_shape = {shape}"


def check_input(cell_name: str, input_shape: tuple[int, ...], input: Any) -> None:
    """Trace-time check of one step's input: one example, right shape, floating."""
    shape = tuple(jnp.shape(input))
    if shape != input_shape:
        hint = ""
        if shape[1:] == input_shape:
            hint = (
                " eqrnn cells see one example at a time: batch with `jax.vmap`, "
                "and run over time with `eqrnn.scan_all_hidden`/`scan_last`."
            )
        raise ValueError(
            f"{cell_name}: `input` must have shape {describe_shape(input_shape)}, "
            f"got shape {shape}.{hint}"
        )
    check_floating("input", jnp.result_type(input), cell_name)


def check_same_dtype(name: str, value: Any, dtype: Any, where: str) -> None:
    """Mixing dtypes is an error, not a silent cast: a hidden state keeps its dtype
    only if everything it meets has that dtype. (`dtype=None`: nothing to check.)"""
    if dtype is None:
        return
    for leaf in jax.tree.leaves(value):
        got = jnp.result_type(leaf)
        if got != dtype:
            raise TypeError(
                f"{where}: `{name}` has dtype {got} but the cell's parameters are "
                f"{jnp.dtype(dtype)}. Cast one of them, e.g. "
                f"`{name}.astype({jnp.dtype(dtype)})`, or build the cell with "
                f"`dtype={jnp.dtype(got)}`."
            )


def check_floating(name: str, dtype: Any, where: str) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{where}: `{name}` must be a floating-point array, got dtype {dtype}. "
            f"Cast it first, e.g. `{name}.astype(jnp.float32)`."
        )


def check_hidden(
    cell_name: str, hidden: Any, shapes: Sequence[tuple[int, ...]]
) -> None:
    """Trace-time check that `hidden` is one array, or a tuple, of the given shapes."""
    expected = shapes[0] if len(shapes) == 1 else tuple(shapes)
    if len(shapes) == 1:
        ok = not isinstance(hidden, tuple | list) and jnp.shape(hidden) == shapes[0]
    else:
        ok = isinstance(hidden, tuple) and len(hidden) == len(shapes)
        ok = ok and all(jnp.shape(h) == s for h, s in zip(hidden, shapes, strict=True))
    if not ok:
        got = jax.tree.map(jnp.shape, hidden)
        what = (
            "an array of shape" if len(shapes) == 1 else "a tuple of arrays of shapes"
        )
        raise ValueError(
            f"{cell_name}: `hidden` must be {what} {expected}, got {got}. "
            "eqrnn cells see one example at a time: batch with `jax.vmap`."
        )
    for h in jax.tree.leaves(hidden):
        check_floating("hidden", jnp.result_type(h), cell_name)
