"""What every converter shares: arrays in and out, building cells, and the checks
that refuse a conversion which would not be exact."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .._gru import GRUCell
from .._layers import RNN, Bidirectional
from .._lstm import LSTMCell
from .._mgu import MGUCell
from .._simple import SimpleCell


Cell = SimpleCell | GRUCell | LSTMCell

# Different names for the same function: any of them converts.
TANH: tuple[Callable[..., Any], ...] = (jnp.tanh, jax.lax.tanh)
SIGMOID: tuple[Callable[..., Any], ...] = (jax.nn.sigmoid, jax.lax.logistic)
RELU: tuple[Callable[..., Any], ...] = (jax.nn.relu,)


def is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def as_jax(x: Any, name: str) -> Float[Array, "..."]:
    """A copy of `x` (a torch tensor, NumPy or JAX array) as a JAX array of the same
    dtype. Refuses what JAX would silently change: float64 without x64 mode."""
    if is_torch_tensor(x):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            # NumPy has no bfloat16; float32 holds every bfloat16 exactly.
            return jnp.array(x.float().numpy(), dtype=jnp.bfloat16)
        x = x.numpy()
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = np.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`{name}` must be a floating-point array, got dtype {dtype}.")
    if jnp.dtype(dtype).itemsize == 8 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"`{name}` is float64, which JAX would silently truncate to float32: turn "
            'on `jax.config.update("jax_enable_x64", True)` first, or convert the '
            "source to float32."
        )
    # `jnp.array` copies, so that later in-place updates of the source (a torch
    # parameter, a NumPy buffer) cannot reach the converted model.
    return jnp.array(x, dtype=dtype)


def as_numpy(x: Array) -> np.ndarray:
    """A writable NumPy copy of a JAX array (bfloat16 widened to float32)."""
    if x.dtype == jnp.bfloat16:
        x = x.astype(jnp.float32)
    return np.array(x)


def common_dtype(where: str, arrays: dict[str, Any]) -> Any:
    dtypes = {name: a.dtype for name, a in arrays.items() if a is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"`{n}` {d}" for n, d in dtypes.items())
        raise ValueError(f"{where}: the parameters must share one dtype, got {listed}.")
    return next(iter(dtypes.values()))


def check_shape(where: str, name: str, array: Any, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != shape:
        raise ValueError(
            f"{where}: `{name}` must have shape {shape}, got {tuple(array.shape)}."
        )


_KEY = jr.key(0)
# Every weight the constructors make is replaced: draw nothing (which is also quicker
# than an orthogonal draw, and works for every dtype).
_ZEROS: dict[str, Any] = {
    "kernel_init": jax.nn.initializers.zeros,
    "recurrent_kernel_init": jax.nn.initializers.zeros,
    "bias_init": jax.nn.initializers.zeros,
}


def _fill(cell: Any, fields: dict[str, Any]) -> Any:
    """`cell` with each named field replaced (fields holding `None` stay `None`)."""
    names = [n for n, v in fields.items() if v is not None]
    for n in names:
        check_shape(type(cell).__name__, n, fields[n], getattr(cell, n).shape)
    return eqx.tree_at(
        lambda c: tuple(getattr(c, n) for n in names),
        cell,
        tuple(fields[n] for n in names),
    )


def build_simple(
    weight_ih: Array,
    weight_hh: Array,
    bias: Array | None,
    *,
    activation_fn: Callable[[Array], Array],
    residual: bool = False,
) -> SimpleCell:
    hidden_size, input_size = weight_ih.shape
    dtype = common_dtype(
        "SimpleCell", {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias": bias}
    )
    cell = SimpleCell(
        input_size,
        hidden_size,
        use_bias=bias is not None,
        activation_fn=activation_fn,
        residual=residual,
        dtype=dtype,
        key=_KEY,
        **_ZEROS,
    )
    return _fill(cell, {"weight_ih": weight_ih, "weight_hh": weight_hh, "bias": bias})


def build_gru(
    weight_ih: Array,
    weight_hh: Array,
    bias: Array | None,
    bias_hn: Array | None,
    *,
    gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
    activation_fn: Callable[[Array], Array] = jnp.tanh,
) -> GRUCell:
    input_size = weight_ih.shape[1]
    hidden_size = weight_hh.shape[1]
    fields = {
        "weight_ih": weight_ih,
        "weight_hh": weight_hh,
        "bias": bias,
        "bias_hn": bias_hn,
    }
    dtype = common_dtype("GRUCell", fields)
    assert (bias is None) == (bias_hn is None)
    cell = GRUCell(
        input_size,
        hidden_size,
        use_bias=bias is not None,
        gate_fn=gate_fn,
        activation_fn=activation_fn,
        dtype=dtype,
        key=_KEY,
        **_ZEROS,
    )
    return _fill(cell, fields)


def build_lstm(
    weight_ih: Array,
    weight_hh: Array,
    bias: Array | None,
    weight_hr: Array | None = None,
    *,
    gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
    activation_fn: Callable[[Array], Array] = jnp.tanh,
) -> LSTMCell:
    input_size = weight_ih.shape[1]
    hidden_size = weight_ih.shape[0] // 4
    fields = {
        "weight_ih": weight_ih,
        "weight_hh": weight_hh,
        "bias": bias,
        "weight_hr": weight_hr,
    }
    dtype = common_dtype("LSTMCell", fields)
    cell = LSTMCell(
        input_size,
        hidden_size,
        use_bias=bias is not None,
        gate_fn=gate_fn,
        activation_fn=activation_fn,
        proj_size=None if weight_hr is None else weight_hr.shape[0],
        dtype=dtype,
        key=_KEY,
        **_ZEROS,
    )
    return _fill(cell, fields)


def check_cell(cell: Any, target: str) -> Cell:
    """`cell` if it is a Simple/GRU/LSTM cell with no learned starting state; else a
    `ValueError` (no counterpart) or `TypeError` (not an eqrnn cell)."""
    if isinstance(cell, MGUCell):
        raise ValueError(
            f"MGUCell has no counterpart in {target}, so it cannot be converted."
        )
    if not isinstance(cell, SimpleCell | GRUCell | LSTMCell):
        raise TypeError(
            "Expected an eqrnn SimpleCell, GRUCell or LSTMCell to convert to "
            f"{target}, got {type(cell).__name__}."
        )
    initial = cell.initial_hidden
    if initial is not None and any(
        bool(jnp.any(h != 0)) for h in jax.tree.leaves(initial)
    ):
        raise ValueError(
            f"{type(cell).__name__} has a learned, non-zero starting state "
            f"(`initial_hidden`, from `carry_init`); {target} starts from zeros, so it "
            "cannot be converted exactly. Pass that state as the initial hidden state "
            "when calling the converted model instead."
        )
    return cell


def check_fn(
    cell: Any,
    field: str,
    allowed: tuple[Callable[..., Any], ...],
    what: str,
    target: str,
) -> None:
    fn = getattr(cell, field)
    if not any(fn is a for a in allowed):
        name = getattr(fn, "__name__", repr(fn))
        raise ValueError(
            f"{type(cell).__name__} has `{field}={name}`, but {target} only has "
            f"{what}, so it cannot be converted exactly."
        )


def layer_cells(layer: RNN | Bidirectional) -> tuple[Any, ...]:
    if isinstance(layer, Bidirectional):
        return (layer.forward.cell, layer.backward.cell)
    return (layer.cell,)
