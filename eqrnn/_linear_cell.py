"""The family of cells whose recurrence is linear in their state."""

import abc
import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._cell import AbstractArrayStateCell, AbstractCell
from ._linear_scan import (
    Coefficients,
    linear_scan_final,
    mask_coefficients,
    mul_add,
)
from ._loop import Plan, in_chunks, tree_where
from ._modes import LINEAR_AUTO, PARALLEL_MODES, AbstractMode, Sequential


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

    modes: ClassVar[tuple[str, ...]] = PARALLEL_MODES
    auto_modes: ClassVar[tuple[type[AbstractMode], type[AbstractMode]]] = LINEAR_AUTO

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

    def run_sequence(
        self, inputs: Float[Array, "time input_size"], hidden: Any, plan: Plan
    ) -> tuple[Any, Any]:
        # The recurrence of every step at once. Padding and resets become
        # coefficients, and the engine carries the linear state rather than the
        # hidden state (they differ for `LRU`, whose hidden state holds its output).
        reset_linear = self.linear_state(self.init_hidden())
        mode = plan.mode
        if plan.chunk == 3 and not isinstance(mode, Sequential):
            # XLA's CPU backend (jax 0.10.2) crashes at run time on chunks of 3 in
            # the gradient of `LRU`, reversed, with resets; 4 gives the same numbers.
            plan = dataclasses.replace(plan, chunk=4)
        # Checkpointed, each chunk projects its own inputs and returns hidden states,
        # so that nothing of size (time, projected) is kept for the backward pass.
        chunked = plan.chunk is not None
        xs = inputs if chunked else self.project_inputs(inputs)

        def run(carry: Any, seq_in: Any) -> tuple[Any, Any]:
            x, ok, reset, _ = seq_in
            projected = self.project_inputs(x) if chunked else x
            a, b = self.linear_coefficients(projected)
            a, b = mask_coefficients(a, b, ok, reset, reset_linear)
            final, states = linear_scan_final(
                a,
                b,
                carry,
                mode=mode,
                reverse=plan.reverse,
                unroll=plan.unroll,
                stack=plan.stack,
            )
            if chunked and states is not None:
                states = self.hidden_from_state(states, projected)
            return final, states

        final, states = in_chunks(run, self.linear_state(hidden), xs, plan)
        return self._hiddens(xs, chunked, hidden, final, states, plan)

    def _hiddens(
        self,
        xs: Array,
        raw_inputs: bool,
        hidden: Any,
        final: Any,
        states: Any,
        plan: Plan,
    ) -> tuple[Any, Any]:
        """The final hidden state and the stacked ones (zero at padded steps), from
        what the engine returned: linear states, or, when `raw_inputs` (checkpointed:
        `xs` are the inputs, not their projections), hidden states already."""
        num_steps, length = xs.shape[0], plan.length
        if num_steps == 0:
            final = hidden
        else:
            # The last step that was run: its input completes the hidden state
            # (`LRU`'s output needs it); with no valid step the state is the start.
            if plan.reverse:
                last = 0
            else:
                last = num_steps - 1 if length is None else length - 1
            last_in = xs[jnp.maximum(last, 0)]
            if raw_inputs:
                last_in = self.project_inputs(last_in)
            final = self.hidden_from_state(final, last_in)
            if length is not None:
                final = tree_where(length > 0, final, hidden)
        if states is None:
            return final, None
        hiddens = states if raw_inputs else self.hidden_from_state(states, xs)
        valid = plan.valid
        if valid is not None:
            hiddens = jax.tree.map(
                lambda h: jnp.where(
                    valid.reshape(-1, *(1,) * (h.ndim - 1)), h, jnp.zeros((), h.dtype)
                ),
                hiddens,
            )
        return final, hiddens


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
