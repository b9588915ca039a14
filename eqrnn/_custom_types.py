"""Shared jaxtyping aliases, so that public signatures stay short."""

from collections.abc import Callable
from typing import Any, TypeAlias

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree


# Arguments accept NumPy arrays too; results are always JAX arrays.
Input: TypeAlias = Float[ArrayLike, " *input_shape"]
Inputs: TypeAlias = Float[ArrayLike, " time *input_shape"]
HiddenArray: TypeAlias = Float[Array, " hidden_size"]
# LSTM carries `(h, c)`; `h` has `proj_size` entries when the LSTM projects, and
# `output_size` names that size wherever either kind of hidden state is accepted.
LSTMHidden: TypeAlias = tuple[
    Float[Array, " output_size"], Float[Array, " hidden_size"]
]
# Cells with more state than `(h, c)` (`SLSTMCell`'s `(h, c, n, m)`, `MLSTMCell`'s
# matrix memory) carry a longer tuple, `h` first.
Hidden: TypeAlias = (
    Float[Array, " output_size"] | LSTMHidden | tuple[Float[Array, "..."], ...]
)
HiddenLike: TypeAlias = (
    Float[ArrayLike, " output_size"]
    | tuple[Float[ArrayLike, " output_size"], Float[ArrayLike, " hidden_size"]]
    | tuple[Float[ArrayLike, "..."], ...]
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
