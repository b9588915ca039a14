"""Exact weight conversion to and from PyTorch, Flax NNX, Equinox and Keras.

Nothing here imports torch, flax or keras until it is handed one of their objects or
asked to build one, so `eqrnn.interop` works with none of them installed.
"""

from ._equinox import from_equinox as from_equinox, to_equinox as to_equinox
from ._flax import from_flax as from_flax, to_flax as to_flax
from ._keras import from_keras as from_keras, to_keras as to_keras
from ._torch import from_torch as from_torch, to_torch as to_torch
from ._torch_hidden import (
    hidden_from_torch as hidden_from_torch,
    hidden_to_torch as hidden_to_torch,
)


__all__ = [
    "from_equinox",
    "from_flax",
    "from_keras",
    "from_torch",
    "hidden_from_torch",
    "hidden_to_torch",
    "to_equinox",
    "to_flax",
    "to_keras",
    "to_torch",
]
