"""Weights to and from Flax NNX's recurrent cells, `nnx.RNN` and `nnx.Bidirectional`.

flax is imported only when a Flax object is handed in (it is then already imported)
or when `to_flax` is called, so that `eqrnn.interop` works without flax.
"""

import sys
from typing import TYPE_CHECKING, Any, Literal, overload

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._gru import GRUCell
from .._layers import RNN, Bidirectional, StackedRNN, _concatenate
from .._lstm import LSTMCell
from .._simple import SimpleCell
from ._common import Cell, as_jax, build_gru, build_lstm, build_simple, check_cell


if TYPE_CHECKING:
    from flax import nnx


_LSTM_INPUT = ("ii", "if_", "ig", "io")  # nnx.LSTMCell's layers, gates i, f, g, o
_LSTM_HIDDEN = ("hi", "hf", "hg", "ho")


# --- Flax NNX -> eqrnn -------------------------------------------------------------


def _param(layer: Any, name: str, where: str) -> Array:
    return as_jax(getattr(layer, name).get_value(), f"{where}.{name}")


def _check_flax_cell(cell: Any, param_dtype: Any) -> None:
    name = type(cell).__name__
    if getattr(cell, "carry_init", None) is not None:
        raise ValueError(
            f"nnx.{name} has a `carry_init`, which draws a new random starting carry "
            "at every call; eqrnn cells start from one fixed state, so it cannot be "
            "converted exactly. Pass the starting state as `hidden` instead."
        )
    dtype = getattr(cell, "dtype", None)
    if dtype is not None and jnp.dtype(dtype) != jnp.dtype(param_dtype):
        raise ValueError(
            f"nnx.{name} computes in dtype={jnp.dtype(dtype).name} but holds "
            f"{jnp.dtype(param_dtype).name} parameters; eqrnn computes in the "
            "parameters' dtype, so it cannot be converted exactly. Build the Flax "
            f"cell with `dtype=None` (or dtype=param_dtype)."
        )


def _cell_from_flax(nnx: Any, cell: Any) -> Cell:
    if isinstance(cell, nnx.SimpleCell):
        w_ih = _param(cell.dense_i, "kernel", "dense_i")
        _check_flax_cell(cell, w_ih.dtype)
        return build_simple(
            w_ih.T,
            _param(cell.dense_h, "kernel", "dense_h").T,
            _param(cell.dense_i, "bias", "dense_i"),
            activation_fn=cell.activation_fn,
            residual=cell.residual,
        )
    if isinstance(cell, nnx.GRUCell):
        w_ih = _param(cell.dense_i, "kernel", "dense_i")
        _check_flax_cell(cell, w_ih.dtype)
        return build_gru(
            w_ih.T,
            _param(cell.dense_h, "kernel", "dense_h").T,
            _param(cell.dense_i, "bias", "dense_i"),
            # Flax's GRU has no b_hn: it is zero.
            jnp.zeros(cell.hidden_features, w_ih.dtype),
            gate_fn=cell.gate_fn,
            activation_fn=cell.activation_fn,
        )
    if isinstance(cell, nnx.OptimizedLSTMCell):
        w_ih = _param(cell.dense_i, "kernel", "dense_i")
        _check_flax_cell(cell, w_ih.dtype)
        return build_lstm(
            w_ih.T,
            _param(cell.dense_h, "kernel", "dense_h").T,
            _param(cell.dense_h, "bias", "dense_h"),
            gate_fn=cell.gate_fn,
            activation_fn=cell.activation_fn,
        )
    if isinstance(cell, nnx.LSTMCell):
        kernels_i = [_param(getattr(cell, n), "kernel", n) for n in _LSTM_INPUT]
        kernels_h = [_param(getattr(cell, n), "kernel", n) for n in _LSTM_HIDDEN]
        biases = [_param(getattr(cell, n), "bias", n) for n in _LSTM_HIDDEN]
        _check_flax_cell(cell, kernels_i[0].dtype)
        return build_lstm(
            jnp.concatenate(kernels_i, axis=1).T,
            jnp.concatenate(kernels_h, axis=1).T,
            jnp.concatenate(biases),
            gate_fn=cell.gate_fn,
            activation_fn=cell.activation_fn,
        )
    raise TypeError(
        "from_flax: expected an nnx.SimpleCell, GRUCell, LSTMCell, OptimizedLSTMCell, "
        f"RNN or Bidirectional, got {type(cell).__name__}."
    )


def _rnn_from_flax(nnx: Any, rnn: Any, where: str, *, forward: bool = False) -> RNN:
    if not isinstance(rnn, nnx.RNN):
        raise TypeError(
            f"from_flax: `{where}` must be an nnx.RNN, got {type(rnn).__name__}."
        )
    return RNN(
        _cell_from_flax(nnx, rnn.cell),
        # nnx.Bidirectional runs its forward RNN forwards whatever it says.
        reverse=False if forward else bool(rnn.reverse),
        keep_order=bool(rnn.keep_order),
        return_hidden=bool(rnn.return_carry),
        # Flax's default of 1 becomes eqrnn's default, the platform's choice.
        unroll="auto" if type(rnn.unroll) is int and rnn.unroll == 1 else rnn.unroll,
    )


@overload
def from_flax(module: "nnx.SimpleCell") -> SimpleCell: ...


@overload
def from_flax(module: "nnx.GRUCell") -> GRUCell: ...


@overload
def from_flax(module: "nnx.LSTMCell | nnx.OptimizedLSTMCell") -> LSTMCell: ...


@overload
def from_flax(module: "nnx.RNN") -> RNN: ...


@overload
def from_flax(module: "nnx.Bidirectional") -> Bidirectional: ...


def from_flax(module: Any) -> Cell | RNN | Bidirectional:
    """Convert a Flax NNX recurrent cell, `nnx.RNN` or `nnx.Bidirectional` to eqrnn.

    `nnx.SimpleCell` becomes `SimpleCell` (with its `residual` and `activation_fn`),
    `nnx.GRUCell` a `GRUCell` with `bias_hn` zero (Flax's GRU has no such term),
    `nnx.LSTMCell` and `nnx.OptimizedLSTMCell` an `LSTMCell`; `gate_fn` and
    `activation_fn` carry over. `nnx.RNN(cell, reverse=, keep_order=, return_carry=,
    unroll=)` becomes `RNN(cell, reverse=, keep_order=, return_hidden=, unroll=)`
    (Flax's default `unroll=1` becomes eqrnn's `"auto"`, and back), and
    `nnx.Bidirectional(forward_rnn, backward_rnn, merge_fn=, return_carry=)` becomes
    `Bidirectional(forward, backward, merge=, return_hidden=)` (a `merge_fn` other
    than Flax's default concatenation is used as it is: it must work per time step).
    `time_major` does not matter: eqrnn runs one sequence at a time, time on axis 0;
    batch with `jax.vmap`. Every mapping is exact; the parameters keep their dtype.

    Two differences to mind when you run the result: an LSTM's hidden state is
    `(h, c)` in eqrnn but `(c, h)` in Flax, and eqrnn's outputs are zero at padded
    steps (after `length`), where Flax keeps computing.

    !!! example

        ```python
        rnn = nnx.RNN(nnx.LSTMCell(3, 8, rngs=nnx.Rngs(0)))
        eq_rnn = eqrnn.interop.from_flax(rnn)
        xs, seq_lengths = jnp.ones((4, 10, 3)), jnp.array([10, 7, 3, 1])
        outputs = jax.vmap(lambda x, n: eq_rnn(x, length=n))(xs, seq_lengths)
        ```

    **Arguments:**

    - `module`: an `nnx.SimpleCell`, `nnx.GRUCell`, `nnx.LSTMCell`,
        `nnx.OptimizedLSTMCell`, or an `nnx.RNN` or `nnx.Bidirectional` of `nnx.RNN`s
        holding one of them.

    **Returns:**

    The matching eqrnn cell, `RNN` or `Bidirectional`.

    **Raises:**

    `ValueError` where eqrnn cannot reproduce the module exactly: a cell with
    `carry_init` (Flax draws a fresh random carry at every call), or one that computes
    in a `dtype` other than its parameters'. `TypeError` for anything else.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(module, nnx.Module):
        raise TypeError(
            "from_flax: expected a Flax NNX recurrent cell, nnx.RNN or "
            f"nnx.Bidirectional, got {type(module).__name__}."
        )
    if isinstance(module, nnx.Bidirectional):
        from flax.nnx.nn import recurrent

        merge = module.merge_fn
        return Bidirectional(
            _rnn_from_flax(nnx, module.forward_rnn, "forward_rnn", forward=True),
            _rnn_from_flax(nnx, module.backward_rnn, "backward_rnn"),
            merge="concat" if merge is recurrent._concatenate else merge,
            return_hidden=bool(module.return_carry),
        )
    if isinstance(module, nnx.RNN):
        return _rnn_from_flax(nnx, module, "module")
    return _cell_from_flax(nnx, module)


# --- eqrnn -> Flax NNX -------------------------------------------------------------


def _set(layer: Any, name: str, value: Array) -> None:
    variable = getattr(layer, name)
    old = variable.get_value()
    assert old.shape == value.shape and old.dtype == value.dtype, (name, value.shape)
    variable.set_value(value)


def _cell_to_flax(nnx: Any, cell: Any, lstm_type: str | None) -> Any:
    cell = check_cell(cell, "Flax NNX")
    name = type(cell).__name__
    if cell.bias is None:
        raise ValueError(
            f"{name} has `use_bias=False`, but Flax NNX's {name} always has a "
            "trainable bias, so it cannot be converted exactly."
        )
    if isinstance(cell, LSTMCell) and cell.proj_size is not None:
        raise ValueError(
            "LSTMCell has `proj_size`, but Flax NNX's LSTM cells have no projection, "
            "so it cannot be converted exactly."
        )
    if isinstance(cell, GRUCell):
        assert cell.bias_hn is not None
        if bool(jnp.any(cell.bias_hn != 0)):
            raise ValueError(
                "GRUCell has a non-zero `bias_hn` (b_hn, inside the reset gate), but "
                "Flax NNX's GRUCell has no such term, so it cannot be converted "
                "exactly."
            )
    kwargs: dict[str, Any] = {
        "dtype": None,  # compute in the parameters' dtype, as eqrnn does
        "param_dtype": cell.dtype,
        # Every weight is set below: draw nothing (which works for every dtype).
        "rngs": nnx.Rngs(0),
        "kernel_init": nnx.initializers.zeros_init(),
        "recurrent_kernel_init": nnx.initializers.zeros_init(),
        "bias_init": nnx.initializers.zeros_init(),
        "activation_fn": cell.activation_fn,
    }
    sizes = (cell.input_size, cell.hidden_size)
    w_ih, w_hh, bias = cell.weight_ih.T, cell.weight_hh.T, cell.bias
    if isinstance(cell, SimpleCell):
        out = nnx.SimpleCell(*sizes, residual=cell.residual, **kwargs)
        _set(out.dense_i, "kernel", w_ih)
        _set(out.dense_i, "bias", bias)
        _set(out.dense_h, "kernel", w_hh)
        return out
    kwargs["gate_fn"] = cell.gate_fn
    if isinstance(cell, GRUCell):
        out = nnx.GRUCell(*sizes, **kwargs)
        _set(out.dense_i, "kernel", w_ih)
        _set(out.dense_i, "bias", bias)
        _set(out.dense_h, "kernel", w_hh)
        return out
    if lstm_type is None:
        raise ValueError(
            "to_flax: an LSTMCell has two Flax NNX counterparts, with the same numbers "
            'and differently named parameters: pass `lstm_type="plain"` for '
            'nnx.LSTMCell or `lstm_type="optimized"` for nnx.OptimizedLSTMCell. '
            "The eqrnn cell does not record which one `from_flax` read, e.g. "
            '`to_flax(model, lstm_type="optimized")` for a model that came from an '
            "nnx.OptimizedLSTMCell."
        )
    if lstm_type == "optimized":
        out = nnx.OptimizedLSTMCell(*sizes, **kwargs)
        _set(out.dense_i, "kernel", w_ih)
        _set(out.dense_h, "kernel", w_hh)
        _set(out.dense_h, "bias", bias)
        return out
    out = nnx.LSTMCell(*sizes, **kwargs)
    hs = cell.hidden_size
    for g, (name_i, name_h) in enumerate(zip(_LSTM_INPUT, _LSTM_HIDDEN, strict=True)):
        gate = slice(g * hs, (g + 1) * hs)
        _set(getattr(out, name_i), "kernel", w_ih[:, gate])
        _set(getattr(out, name_h), "kernel", w_hh[:, gate])
        _set(getattr(out, name_h), "bias", bias[gate])
    return out


def _rnn_to_flax(nnx: Any, rnn: RNN, lstm_type: str | None) -> Any:
    return nnx.RNN(
        _cell_to_flax(nnx, rnn.cell, lstm_type),
        reverse=rnn.reverse,
        keep_order=rnn.keep_order,
        return_carry=rnn.return_hidden,
        unroll=1 if rnn.unroll == "auto" else rnn.unroll,
    )


@overload
def to_flax(
    module: SimpleCell, *, lstm_type: Literal["plain", "optimized"] | None = None
) -> "nnx.SimpleCell": ...


@overload
def to_flax(
    module: GRUCell, *, lstm_type: Literal["plain", "optimized"] | None = None
) -> "nnx.GRUCell": ...


@overload
def to_flax(module: LSTMCell, *, lstm_type: Literal["plain"]) -> "nnx.LSTMCell": ...


@overload
def to_flax(
    module: LSTMCell, *, lstm_type: Literal["optimized"]
) -> "nnx.OptimizedLSTMCell": ...


@overload
def to_flax(
    module: RNN, *, lstm_type: Literal["plain", "optimized"] | None = None
) -> "nnx.RNN": ...


@overload
def to_flax(
    module: Bidirectional, *, lstm_type: Literal["plain", "optimized"] | None = None
) -> "nnx.Bidirectional": ...


def to_flax(
    module: eqx.Module, *, lstm_type: Literal["plain", "optimized"] | None = None
) -> Any:
    """Convert an eqrnn cell, `RNN` or `Bidirectional` to Flax NNX.

    `SimpleCell`, `GRUCell` and `LSTMCell` become `nnx.SimpleCell`, `nnx.GRUCell` and
    `nnx.LSTMCell` (or `nnx.OptimizedLSTMCell`, see `lstm_type`), with the same
    `gate_fn`, `activation_fn` and `residual`, `param_dtype` the parameters' dtype and
    `dtype=None`. `RNN` becomes `nnx.RNN` (`return_hidden` as `return_carry`),
    `Bidirectional` becomes `nnx.Bidirectional` (eqrnn's `"concat"` as Flax's default
    `merge_fn`, any other merge passed on). `checkpoint` only trades memory for
    compute and has no Flax counterpart: it is dropped. The `rngs` Flax's constructors
    need are made here (nothing random is drawn: every weight is set from `module`).
    `from_flax(to_flax(model))` gives `model` back bit for bit. Mind that an LSTM's
    hidden state is `(h, c)` in eqrnn and `(c, h)` in Flax.

    !!! example

        ```python
        cell = eqrnn.LSTMCell(3, 8, key=jax.random.key(0))
        rnn = eqrnn.interop.to_flax(eqrnn.RNN(cell), lstm_type="optimized")
        ```

    **Arguments:**

    - `module`: an eqrnn `SimpleCell`, `GRUCell` or `LSTMCell`, or an `RNN` or
        `Bidirectional` holding one.
    - `lstm_type`: which Flax class an `LSTMCell` becomes: `"plain"` for
        `nnx.LSTMCell` (eight separate dense layers) or `"optimized"` for
        `nnx.OptimizedLSTMCell` (two fused ones). Required where `module` holds an
        `LSTMCell` (the cell does not record which class `from_flax` read), not used
        otherwise. (Keyword only argument.)

    **Returns:**

    The Flax NNX module with the same parameters.

    **Raises:**

    `ValueError` where Flax NNX cannot express the model exactly: `MGUCell`;
    `use_bias=False` (Flax's cells always have a trainable bias); a `GRUCell` whose
    `bias_hn` is not zero (Flax's GRU has no b_hn); an `LSTMCell` with `proj_size`; a
    non-zero learned starting state (`carry_init`); a `StackedRNN` (Flax has no
    stacked RNN: convert its layers one by one); an `LSTMCell` without `lstm_type`.
    `TypeError` for anything else.
    """
    if lstm_type not in ("plain", "optimized", None):
        raise ValueError(
            f"to_flax: `lstm_type` must be 'plain' or 'optimized', got {lstm_type!r}."
        )
    if isinstance(module, StackedRNN):
        raise ValueError(
            "Flax NNX has no stacked RNN, so a StackedRNN cannot be converted as a "
            "whole: convert its layers one by one, `[to_flax(layer) for layer in "
            "stack.layers]`."
        )
    from flax import nnx

    if isinstance(module, Bidirectional):
        kwargs: dict[str, Any] = {}
        if module.merge is not _concatenate:
            kwargs["merge_fn"] = module.merge
        return nnx.Bidirectional(
            _rnn_to_flax(nnx, module.forward, lstm_type),
            _rnn_to_flax(nnx, module.backward, lstm_type),
            return_carry=module.return_hidden,
            **kwargs,
        )
    if isinstance(module, RNN):
        return _rnn_to_flax(nnx, module, lstm_type)
    return _cell_to_flax(nnx, module, lstm_type)
