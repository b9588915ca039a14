"""Shared jaxtyping aliases, so that public signatures stay short."""

from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree


# Arguments accept NumPy arrays too; results are always JAX arrays.
Input: TypeAlias = Float[ArrayLike, " input_size"]
Inputs: TypeAlias = Float[ArrayLike, "time input_size"]
HiddenArray: TypeAlias = Float[Array, " hidden_size"]
# LSTM carries `(h, c)`; other cells carry one array.
Hidden: TypeAlias = HiddenArray | tuple[HiddenArray, HiddenArray]
HiddenLike: TypeAlias = (
    Float[ArrayLike, " hidden_size"]
    | tuple[Float[ArrayLike, " hidden_size"], Float[ArrayLike, " hidden_size"]]
)
Hiddens: TypeAlias = (
    Float[Array, "time hidden_size"]
    | tuple[Float[Array, "time hidden_size"], Float[Array, "time hidden_size"]]
)
# What a generic cell (any callable with the cell signature) carries.
AnyHidden: TypeAlias = PyTree[Float[Array, "..."]]
AnyHiddenLike: TypeAlias = PyTree[Float[ArrayLike, "..."]]
AnyHiddens: TypeAlias = PyTree[Float[Array, "time ..."]]
Length: TypeAlias = Int[ArrayLike, ""]
Resets: TypeAlias = Bool[Array, " time"]
Key: TypeAlias = PRNGKeyArray
Initializer: TypeAlias = Callable[..., Any]
"""`init(key, shape, dtype) -> array`, as in `jax.nn.initializers`."""
