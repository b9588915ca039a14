"""The arithmetic of a linear recurrence's coefficients and states: real or complex
arrays, or `(re, im)` pairs of real arrays standing for complex ones (`eqrnn.LRU`).
What the linear cells and the linear-scan engine share; no algorithm."""

from typing import Any, TypeAlias

from jaxtyping import Array, Float, Inexact


# A coefficient or state: a real or complex array, or an `(re, im)` pair of real
# arrays standing for a complex one.
Coefficients: TypeAlias = (
    Inexact[Array, "*time state"]
    | tuple[Float[Array, "*time state"], Float[Array, "*time state"]]
)


def is_pair(x: Any) -> bool:
    return isinstance(x, tuple)


def mul(a: Any, h: Any) -> Any:
    """`a * h`, elementwise; a complex product for `(re, im)` pairs."""
    if is_pair(a):
        (ar, ai), (hr, hi) = a, h
        return ar * hr - ai * hi, ar * hi + ai * hr
    return a * h


def mul_add(a: Any, h: Any, b: Any) -> Any:
    """`a * h + b`, elementwise; complex arithmetic for `(re, im)` pairs."""
    if is_pair(a):
        (ar, ai), (hr, hi), (br, bi) = a, h, b
        return ar * hr - ai * hi + br, ar * hi + ai * hr + bi
    return a * h + b
