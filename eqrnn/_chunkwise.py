"""The chunked and associative modes (`eqrnn.Chunked`, `eqrnn.Associative`) of a
cell with parallel forms of its own (an `AbstractChunkCell`: `MLSTMCell`), over the
whole sequence or, checkpointed, chunk by chunk."""

from typing import Any

from jaxtyping import Array, Float

from ._cell import AbstractChunkCell
from ._loop import Plan, in_chunks
from ._modes import Chunked


def run_chunkwise(
    cell: AbstractChunkCell,
    inputs: Float[Array, "time input_size"],
    hidden: Any,
    plan: Plan,
) -> tuple[Any, Any]:
    """`(final, stacked)` of `cell` over one sequence by its chunkwise form
    (`Chunked`) or its associative form (`Associative`)."""
    chunked = isinstance(plan.mode, Chunked)
    form = cell.chunk_form(plan) if chunked else cell.associative_form(plan)
    return in_chunks(form, hidden, inputs, plan)
