"""PyTorch's stacked starting and final states, `(h, c)` of shape `(num_layers *
num_directions, batch, hidden)`, to and from a `StackedRNN`'s one state per layer."""

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._layers import RNN, Bidirectional, StackedRNN
from ._common import as_jax


# A torch tensor: torch is not imported here (see `as_jax`).
_Tensor = Any


def _directions(stack: Any, where: str) -> tuple[list[list[RNN]], bool]:
    """Each layer's `RNN`s (one, or forward and backward) and whether the cells'
    state is a pair `(h, c)`."""
    if not isinstance(stack, StackedRNN):
        raise TypeError(
            f"{where}: `stack` must be an eqrnn.StackedRNN (what `from_torch` makes "
            f"of a torch RNN module), got {type(stack).__name__}."
        )
    layers = []
    for i, layer in enumerate(stack.layers):
        if isinstance(layer, Bidirectional):
            layers.append([layer.forward, layer.backward])
        elif isinstance(layer, RNN):
            layers.append([layer])
        else:
            raise TypeError(f"{where}: layer {i} is a {type(layer).__name__}.")
    state = layers[0][0].init_hidden()
    return layers, isinstance(state, tuple)


def hidden_from_torch(
    stack: StackedRNN,
    h0: Float[ArrayLike, "layers_directions *batch hidden"] | _Tensor,
    c0: Float[ArrayLike, "layers_directions *batch cell"] | _Tensor | None = None,
) -> tuple[Any, ...]:
    """PyTorch's starting state `h0` (and an LSTM's `c0`), shape `(num_layers *
    num_directions, batch, hidden)`, as the `hidden` that `stack` takes: one state
    per layer, bottom first, a `Bidirectional` layer's as `(forward, backward)`, an
    LSTM's as `(h, c)`. The batch axes stay in front, ready for `jax.vmap`.

    !!! example

        ```python
        lstm = torch.nn.LSTM(3, 8, num_layers=2, bidirectional=True)
        stack = eqrnn.interop.from_torch(lstm)
        h0, c0 = torch.randn(4, 5, 8), torch.randn(4, 5, 8)  # batch of 5
        hidden = eqrnn.interop.hidden_from_torch(stack, h0, c0)
        xs = jnp.ones((5, 10, 3))
        outputs, finals = jax.vmap(stack)(xs, hidden)  # lstm(x, (h0, c0)), batch first
        h_n, c_n = eqrnn.interop.hidden_to_torch(stack, finals)
        ```

    **Arguments:**

    - `stack`: the `StackedRNN` the state is for (e.g. `from_torch(module)`).
    - `h0`: torch's `h_0` (a tensor or array), layer `l` direction `d` at index
        `l * num_directions + d`; any batch axes, or none, after the first.
    - `c0`: torch's `c_0`, for LSTM cells only.

    **Returns:**

    A tuple with one starting state per layer.
    """
    where = "hidden_from_torch"
    layers, pair = _directions(stack, where)
    count = sum(len(directions) for directions in layers)
    arrays = {"h0": as_jax(h0, "h0")} | ({} if c0 is None else {"c0": as_jax(c0, "c0")})
    if pair != (c0 is not None):
        raise ValueError(
            f"{where}: "
            + (
                "the cells are LSTMs: pass `c0` too."
                if pair
                else "`c0` belongs to an LSTM; these cells have one state: leave it "
                "out."
            )
        )
    for name, x in arrays.items():
        if x.ndim < 2 or x.shape[0] != count:
            raise ValueError(
                f"{where}: `{name}` must have shape (num_layers * num_directions = "
                f"{count}, ..., size), got shape {x.shape}."
            )
    out, i = [], 0
    for directions in layers:
        states = []
        for rnn in directions:
            state = (arrays["h0"][i], arrays["c0"][i]) if pair else arrays["h0"][i]
            _check_like(rnn, state, where)
            states.append(state)
            i += 1
        out.append(tuple(states) if len(states) == 2 else states[0])
    return tuple(out)


def hidden_to_torch(
    stack: StackedRNN, finals: tuple[Any, ...]
) -> (
    Float[Array, "layers_directions *batch hidden"]
    | tuple[
        Float[Array, "layers_directions *batch hidden"],
        Float[Array, "layers_directions *batch cell"],
    ]
):
    """The final states that `stack` returns (one per layer, batched or not) as
    PyTorch returns them: `h_n`, or `(h_n, c_n)` for LSTM cells, of shape
    `(num_layers * num_directions, *batch, hidden)`. The inverse of
    `hidden_from_torch` (see its example).

    **Arguments:**

    - `stack`: the `StackedRNN` that returned `finals`.
    - `finals`: its final states, e.g. from `jax.vmap(stack)(xs)[1]`.

    **Returns:**

    `h_n`, or `(h_n, c_n)` for LSTM cells.
    """
    layers, pair = _directions(stack, "hidden_to_torch")
    if not isinstance(finals, tuple | list) or len(finals) != len(layers):
        raise ValueError(
            f"hidden_to_torch: `finals` must hold one state per layer ({len(layers)}),"
            f" as the stack returns them, got {type(finals).__name__}."
        )
    flat = []
    for directions, final in zip(layers, finals, strict=True):
        flat += list(final) if len(directions) == 2 else [final]
    if pair:
        return jnp.stack([h for h, _ in flat]), jnp.stack([c for _, c in flat])
    return jnp.stack(flat)


def _check_like(rnn: RNN, state: Any, where: str) -> None:
    """`state` (with any leading batch axes) has the trailing shapes of the cell's."""
    expected = jax.tree.leaves(rnn.init_hidden())
    for got, want in zip(jax.tree.leaves(state), expected, strict=True):
        if got.shape[got.ndim - want.ndim :] != want.shape or got.ndim < want.ndim:
            raise ValueError(
                f"{where}: each state must end in the cell's shape {want.shape}, got "
                f"{got.shape}."
            )
        if got.dtype != want.dtype:
            raise TypeError(
                f"{where}: the states are {got.dtype} but the cells are {want.dtype}; "
                f"cast them first, e.g. `h0.to(torch.{want.dtype})`."
            )
