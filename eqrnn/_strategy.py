"""Which loop runs a cell in a mode: the one place where a mode meets the cell's
capabilities (`AbstractMode.supports` says whether it can; this says how)."""

from collections.abc import Callable
from typing import Any

from ._cell import AbstractCell, AbstractChunkCell
from ._chunkwise import run_chunkwise
from ._linear_cell import AbstractLinearCell
from ._linear_form import run_linear
from ._modes import AbstractMode, Newton, Sequential
from ._newton import run_newton
from ._sequential import run_steps


def strategy(cell: AbstractCell, mode: AbstractMode) -> Callable[..., Any]:
    """The loop that runs `cell` in `mode` (concrete, and checked to support the
    cell): `run(cell, inputs, hidden, plan) -> (final, stacked)`."""
    if isinstance(mode, Newton):
        return run_newton
    if isinstance(cell, AbstractLinearCell):
        # Every other mode of a linear cell runs its coefficients by the engine
        # the mode names.
        return run_linear
    if isinstance(mode, Sequential):
        return run_steps
    assert isinstance(cell, AbstractChunkCell), (cell, mode)
    return run_chunkwise
