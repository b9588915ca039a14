"""Shared jaxtyping aliases, so that public signatures stay short."""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int, PyTree


# Arguments accept NumPy arrays too; results are always JAX arrays.
Input: TypeAlias = Float[ArrayLike, " *input_shape"]
Inputs: TypeAlias = Float[ArrayLike, " time *input_shape"]
HiddenArray: TypeAlias = Float[Array, " hidden_size"]
# LSTM carries `(h, c)`; `h` has `proj_size` entries when the LSTM projects, and
# `output_size` names that size wherever either kind of hidden state is accepted.
LSTMHidden: TypeAlias = tuple[
    Float[Array, " output_size"], Float[Array, " hidden_size"]
]
# A tuple state (`(h, c)`, `SLSTMCell`'s `(h, c, n, m)`, `MLSTMCell`'s matrix memory)
# holds arrays of any shapes, `h` first.
Hidden: TypeAlias = Float[Array, " output_size"] | tuple[Float[Array, "..."], ...]
HiddenLike: TypeAlias = (
    Float[ArrayLike, " output_size"] | tuple[Float[ArrayLike, "..."], ...]
)
# What a generic cell (any callable with the cell signature) carries.
AnyHidden: TypeAlias = PyTree[Float[Array, "..."]]
AnyHiddenLike: TypeAlias = PyTree[Float[ArrayLike, "..."]]
AnyHiddens: TypeAlias = PyTree[Float[Array, "time ..."]]
Length: TypeAlias = Int[ArrayLike, ""]
