"""Weights to and from `equinox.nn.GRUCell` and `equinox.nn.LSTMCell`."""

from typing import overload

import equinox as eqx
import jax.random as jr

from .._gru import GRUCell
from .._lstm import LSTMCell
from .._mgu import MGUCell
from .._simple import SimpleCell
from ._common import SIGMOID, TANH, as_jax, build_gru, build_lstm, check_cell, check_fn


@overload
def from_equinox(cell: eqx.nn.GRUCell) -> GRUCell: ...


@overload
def from_equinox(cell: eqx.nn.LSTMCell) -> LSTMCell: ...


def from_equinox(cell: eqx.nn.GRUCell | eqx.nn.LSTMCell) -> GRUCell | LSTMCell:
    """Convert an `equinox.nn.GRUCell` or `equinox.nn.LSTMCell` to eqrnn.

    The layouts are the same (Equinox's `bias_n` is eqrnn's `bias_hn`), so this is
    exact and `to_equinox(from_equinox(cell))` gives `cell` back bit for bit. The
    parameters keep their dtype.

    !!! example

        ```python
        eqx_cell = equinox.nn.LSTMCell(3, 8, key=jax.random.key(0))
        cell = eqrnn.interop.from_equinox(eqx_cell)
        hs, cs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))
        ```

    **Arguments:**

    - `cell`: an `equinox.nn.GRUCell` or `equinox.nn.LSTMCell`.

    **Returns:**

    An eqrnn `GRUCell` or `LSTMCell` with the same parameters.

    **Raises:**

    `TypeError` for anything else.
    """
    if isinstance(cell, eqx.nn.GRUCell):
        return build_gru(
            as_jax(cell.weight_ih, "weight_ih"),
            as_jax(cell.weight_hh, "weight_hh"),
            None if cell.bias is None else as_jax(cell.bias, "bias"),
            None if cell.bias_n is None else as_jax(cell.bias_n, "bias_n"),
        )
    if isinstance(cell, eqx.nn.LSTMCell):
        return build_lstm(
            as_jax(cell.weight_ih, "weight_ih"),
            as_jax(cell.weight_hh, "weight_hh"),
            None if cell.bias is None else as_jax(cell.bias, "bias"),
        )
    raise TypeError(
        "from_equinox: expected an equinox.nn.GRUCell or equinox.nn.LSTMCell, got "
        f"{type(cell).__name__}."
    )


@overload
def to_equinox(cell: GRUCell) -> eqx.nn.GRUCell: ...


@overload
def to_equinox(cell: LSTMCell) -> eqx.nn.LSTMCell: ...


def to_equinox(cell: eqx.Module) -> eqx.nn.GRUCell | eqx.nn.LSTMCell:
    """Convert an eqrnn `GRUCell` or `LSTMCell` to its `equinox.nn` counterpart.

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        eqx_cell = eqrnn.interop.to_equinox(cell)  # equinox.nn.GRUCell
        ```

    **Arguments:**

    - `cell`: an eqrnn `GRUCell` or `LSTMCell` with the default `gate_fn` (sigmoid)
        and `activation_fn` (tanh), no `proj_size` and no non-zero learned starting
        state.

    **Returns:**

    An `equinox.nn.GRUCell` or `equinox.nn.LSTMCell` with the same parameters and
    dtype.

    **Raises:**

    `ValueError` where Equinox cannot express the cell exactly: `SimpleCell` and
    `MGUCell` (Equinox has neither), another `gate_fn` or `activation_fn`,
    `proj_size`, a non-zero `initial_hidden`. `TypeError` for anything else.
    """
    if isinstance(cell, SimpleCell | MGUCell):
        raise ValueError(
            f"{type(cell).__name__} has no counterpart in equinox.nn (which has "
            "GRUCell and LSTMCell), so it cannot be converted."
        )
    if not isinstance(cell, GRUCell | LSTMCell):
        raise TypeError(
            "to_equinox: expected an eqrnn GRUCell or LSTMCell, got "
            f"{type(cell).__name__}."
        )
    check_cell(cell, "equinox.nn")
    check_fn(cell, "gate_fn", SIGMOID, "sigmoid gates", "equinox.nn")
    check_fn(cell, "activation_fn", TANH, "tanh activations", "equinox.nn")
    key = jr.key(0)  # Every drawn weight is replaced below.
    fields = {"weight_ih": cell.weight_ih, "weight_hh": cell.weight_hh}
    if cell.bias is not None:
        fields["bias"] = cell.bias
    if isinstance(cell, GRUCell):
        out = eqx.nn.GRUCell(
            cell.input_size, cell.hidden_size, cell.use_bias, cell.dtype, key=key
        )
        if cell.bias_hn is not None:
            fields["bias_n"] = cell.bias_hn
    else:
        if cell.proj_size is not None:
            raise ValueError(
                "LSTMCell has `proj_size`, but equinox.nn.LSTMCell has no "
                "projection, so it cannot be converted exactly."
            )
        out = eqx.nn.LSTMCell(
            cell.input_size, cell.hidden_size, cell.use_bias, cell.dtype, key=key
        )
    names = list(fields)
    return eqx.tree_at(
        lambda c: tuple(getattr(c, n) for n in names),
        out,
        tuple(fields[n] for n in names),
    )
