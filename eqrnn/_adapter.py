"""`CallableCell`: any callable with the cell signature as an eqrnn cell, so that
the scan helpers and layers wrap Equinox's cells and user functions once, at the
public edge, and talk to one interface below it."""

import types
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._cell import AbstractCell, AbstractStochasticCell


class CallableCell(AbstractStochasticCell):
    """A callable `fn(input, hidden, *, key=None) -> hidden`, such as
    `equinox.nn.GRUCell`, `equinox.nn.LSTMCell` or a user's function, as an eqrnn
    cell. `scan_last`, `scan_all_hidden` and the layers wrap any such callable in
    one; build one yourself to give a function a starting state.

    It runs one step after another, passing each step its own key (the scan
    helpers' `key=`, split per step). Its starting state, and the state `resets`
    return to, is `fn.init_hidden()` where `fn` has one, zeros for Equinox's cells,
    else zeros shaped like the `hidden` it was built with. `output` is `h` of an
    `(h, c)` tuple and the hidden state itself otherwise.

    !!! example

        ```python
        gru = equinox.nn.GRUCell(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(eqrnn.CallableCell(gru), jnp.ones((10, 3)))
        ```
    """

    fn: Callable[..., Any]
    initial_hidden: PyTree[Float[Array, "..."]]
    input_size: int | None = eqx.field(static=True)
    hidden_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        fn: Callable[..., Any],
        hidden: PyTree[Float[Array, "..."]] | None = None,
    ):
        """**Arguments:**

        - `fn`: the step, `fn(input, hidden, *, key=None) -> hidden`.
        - `hidden`: a hidden state of `fn`; its zeros are the starting state.
            Needed only when `fn` has no `init_hidden()` and is not one of
            Equinox's cells.
        """
        self.initial_hidden = reset_state_of(fn, hidden, "CallableCell")
        self.fn = fn
        # `None` where `fn` does not say (a plain function). `fn` is not an eqrnn
        # cell, so its sizes are read as the attributes Equinox's cells name them.
        self.input_size = _declared(fn, "input_size")  # pyright: ignore[reportIncompatibleVariableOverride]
        self.hidden_size = _declared(fn, "hidden_size")  # pyright: ignore[reportIncompatibleVariableOverride]

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time input_size"]:
        return inputs

    def step(self, projected: Float[Array, " input_size"], hidden: Any) -> Any:
        return _checked(self, self.fn(projected, hidden), hidden)

    def keyed_step(
        self, projected: Float[Array, " input_size"], hidden: Any, key: Any
    ) -> Any:
        """`fn(input, hidden, key=key)`: the step with this step's key."""
        return _checked(self, self.fn(projected, hidden, key=key), hidden)

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(jnp.shape(x) for x in jax.tree.leaves(self.initial_hidden))

    def step_input_shape(self) -> tuple[int, ...] | None:
        return None if self.input_size is None else (self.input_size,)

    def output(self, hidden: Any) -> Float[Array, " output_size"]:
        return hidden[0] if isinstance(hidden, tuple) else hidden


def _checked(cell: CallableCell, new: Any, hidden: Any) -> Any:
    """`new`, the state `cell.fn` returned, which must be shaped like `hidden`
    (checked at trace time: `lax.scan` would only say that its carry changed)."""
    if _signature(new) == _signature(hidden):
        return new
    fn = cell.fn
    name = fn.__name__ if isinstance(fn, types.FunctionType) else type(fn).__name__
    hint = ""
    if (
        isinstance(new, tuple)
        and len(new) == 2
        and _signature(new[0]) == _signature(hidden)
    ):
        hint = (
            " It returned a pair whose first element is the state, like a Flax cell's "
            "`(carry, output)`: eqrnn expects the new hidden state alone, so wrap it, "
            "e.g. `lambda x, h, key=None: fn(x, h)[0]` (a Flax NNX cell takes "
            "`(carry, inputs)`: `lambda x, h, key=None: flax_cell(h, x)[0]`)."
        )
    raise ValueError(
        f"The cell {name} must return the new hidden state, shaped like `hidden` "
        f"{_describe(hidden)}, got {_describe(new)}.{hint}"
    )


def _signature(tree: Any) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def _describe(tree: Any) -> str:
    """`float32[4]`, or `(float32[4], float32[4])` for a tuple of states."""
    if isinstance(tree, tuple | list):
        return "(" + ", ".join(_describe(x) for x in tree) + ")"
    if isinstance(tree, jax.Array | np.ndarray | float | int):
        return f"{jnp.result_type(tree)}{list(jnp.shape(tree))}"
    return type(tree).__name__


def reset_state_of(fn: Any, hidden: Any, where: str) -> Any:
    """The state a callable `fn` starts from and resets to."""
    if not callable(fn):
        raise TypeError(f"{where}: `cell` must be callable, got {type(fn).__name__}.")
    init_hidden = getattr(fn, "init_hidden", None)
    if init_hidden is not None:
        return init_hidden()
    if hidden is not None:
        return jax.tree.map(jnp.zeros_like, hidden)
    if isinstance(fn, eqx.nn.LSTMCell):
        zeros = jnp.zeros(fn.hidden_size, fn.weight_hh.dtype)
        return (zeros, zeros)
    if isinstance(fn, eqx.nn.GRUCell):
        return jnp.zeros(fn.hidden_size, fn.weight_hh.dtype)
    raise TypeError(
        f"{where}: `hidden` is None and the cell {type(fn).__name__} has no "
        "`init_hidden()` method, so the starting state is unknown: pass `hidden`."
    )


def as_cell(cell: Any, hidden: Any, where: str) -> AbstractCell:
    """`cell` itself if it is an eqrnn cell, else `cell` wrapped in `CallableCell`."""
    if isinstance(cell, AbstractCell):
        return cell
    # Checked here, so that an error names the public function.
    return CallableCell(cell, reset_state_of(cell, hidden, where))


def input_shape_of(cell: Any) -> tuple[int, ...] | None:
    """The shape of one step's input of a cell or a callable, where it says."""
    if isinstance(cell, AbstractCell):
        return cell.step_input_shape()
    size = _declared(cell, "input_size")
    return None if size is None else (size,)


def _declared(fn: Any, size: str) -> int | None:
    """A size that a callable which is not an eqrnn cell declares as Equinox's cells
    do (`input_size`, `hidden_size`), or `None`: the one place eqrnn reads an
    attribute of a foreign callable by name."""
    # A foreign object cannot subclass eqrnn's interfaces, so its sizes are read by
    # the names Equinox's cells give them.
    value = getattr(fn, size, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
