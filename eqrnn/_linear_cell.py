"""The family of cells whose recurrence is linear in their state."""

import abc
from typing import Any

from jaxtyping import Array, Float

from ._cell import AbstractArrayStateCell, AbstractCell
from ._coefficients import Coefficients, mul_add


class AbstractLinearCell(AbstractCell):
    r"""A cell whose state follows a linear recurrence with input-driven coefficients,

    $$s_t = a_t \odot s_{t-1} + b_t,$$

    where $a_t$ and $b_t$ depend on the input $x_t$ alone. A whole sequence can then
    be computed without stepping through time: `scan_last` and `scan_all_hidden`
    compute the coefficients of every step at once and hand them to
    `eqrnn.linear_scan` (sequential, associative or chunked, see their `mode`).

    On top of `AbstractCell`'s methods a linear cell provides:

    - `linear_coefficients(projected)`: `(a, b)` from `project_inputs(inputs)`, for any
        number of leading axes;
    - `linear_state(hidden)`: the part of the hidden state that the recurrence acts
        on (the hidden state itself for most cells);
    - `hidden_from_state(state, projected)`: the hidden state again, from the new
        linear state and the same step's projected input (for `LRU`, which also
        carries its output $y_t$; the identity for the others), for any number of
        leading axes.

    `step` is `hidden_from_state(a * linear_state(hidden) + b, projected)`, so
    `cell(input, hidden)` is exactly the recurrence; it is the reference the
    sequence backends are tested against.
    """

    @abc.abstractmethod
    def linear_coefficients(
        self, projected: Float[Array, "*time projected"]
    ) -> tuple[Coefficients, Coefficients]:
        """`(a, b)` of the recurrence $s_t = a_t \\odot s_{t-1} + b_t$.

        **Arguments:**

        - `projected`: `project_inputs(inputs)`, any leading axes.

        **Returns:**

        `a` and `b`, each of shape `(*time, state_size)`, or for a complex state an
        `(re, im)` pair of such arrays.
        """

    @abc.abstractmethod
    def linear_state(self, hidden: Any) -> Coefficients:
        """The part of `hidden` that the linear recurrence acts on.

        **Arguments:**

        - `hidden`: a hidden state of this cell, any leading axes.

        **Returns:**

        The linear state (for most cells, `hidden` itself).
        """

    @abc.abstractmethod
    def hidden_from_state(
        self, state: Any, projected: Float[Array, "*time projected"]
    ) -> Any:
        """The hidden state that holds a given linear state.

        **Arguments:**

        - `state`: a linear state, any leading axes.
        - `projected`: the same step's `project_inputs(input)`, same leading axes.

        **Returns:**

        The hidden state (for most cells, `state` itself).
        """

    def step(self, projected: Float[Array, " projected"], hidden: Any) -> Any:
        a, b = self.linear_coefficients(projected)
        state = mul_add(a, self.linear_state(hidden), b)
        return self.hidden_from_state(state, projected)


class AbstractArrayStateLinearCell(AbstractLinearCell, AbstractArrayStateCell):
    """A linear cell whose hidden state is its linear state, one `(hidden_size,)`
    array (`MinGRU`, `MinLSTM`, `RGLRU`)."""

    def linear_state(
        self, hidden: Float[Array, "*time hidden_size"]
    ) -> Float[Array, "*time hidden_size"]:
        return hidden

    def hidden_from_state(
        self,
        state: Float[Array, "*time hidden_size"],
        projected: Float[Array, "*time projected"],
    ) -> Float[Array, "*time hidden_size"]:
        del projected
        return state
