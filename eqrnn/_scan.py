"""`scan_last` and `scan_all_hidden`: a cell run over one sequence.

What every cell shares lives here: the arguments are checked once per public call,
padding is zeroed once, half precision is widened, and `check_finite` reports; the
loop itself is the strategy's that the mode names, chosen here by the cell's
capabilities (`_strategy.py`). Callables that are not eqrnn cells (Equinox's, a user's
function) are wrapped in `CallableCell` first.
"""

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Int, PRNGKeyArray

from ._adapter import as_cell
from ._cell import AbstractCell
from ._custom_types import AnyHidden, AnyHiddenLike, AnyHiddens, Inputs, Length
from ._loop import Plan
from ._misc import check_bool, check_key, check_same_dtype
from ._modes import Auto, Newton, ScanMode, as_mode
from ._newton import newton_count
from ._platform import Unroll, check_unroll, hoists_projection, resolve_unroll
from ._strategy import strategy


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """The static options of one scan helper or `RNN`, checked when made; `where`
    names the public function in error messages."""

    where: str
    reverse: bool = False
    unroll: Unroll = "auto"
    checkpoint: bool | int = False
    # A `ScanMode`, its mode object after `__post_init__`.
    mode: Any = "auto"
    check_finite: bool = False
    # Whether a layer (`RNN`) calls, which changes the fixes that errors suggest.
    layer: bool = False

    def __post_init__(self) -> None:
        where = self.where
        check_bool(where, "reverse", self.reverse)
        check_bool(where, "check_finite", self.check_finite)
        check_unroll(self.unroll, where)
        chunk_length(self.checkpoint, 1, where)
        # The public edge: a name becomes its mode object here, once.
        object.__setattr__(self, "mode", as_mode(self.mode, where))

    def check_cell(self, cell: Any) -> None:
        """That `cell` has the capability `mode` needs: the one place that says
        which cells a mode runs."""
        name = self.mode.name
        if self.mode.supports(cell):
            return
        cell_name = type(cell).__name__
        if isinstance(self.mode, Newton):
            raise ValueError(
                f"{self.where}: `mode='newton'` runs a cell that steps one step after "
                f"another in parallel over time; {cell_name} runs in parallel "
                "already: use mode='auto', 'associative' or 'chunked'."
            )
        raise ValueError(
            f"{self.where}: `mode={name!r}` needs a cell whose recurrence is "
            "linear in its state (an `eqrnn.AbstractLinearCell` such as `MinGRU`, "
            f"`MinLSTM`, `LRU` or `RGLRU`); {cell_name} is not, and runs one step "
            "at a time: use mode='auto', 'sequential', or 'newton' to run it in "
            "parallel by Newton's method."
        )


def _check_hidden(cell: AbstractCell, hidden: Any, where: str, layer: bool) -> Any:
    """The starting state: `hidden` checked against the cell's, or the cell's."""
    reset_state = cell.init_hidden()
    if hidden is None:
        return reset_state
    expected = jax.tree.structure(reset_state)
    got = jax.tree.structure(hidden)
    exp_shapes = [jnp.shape(x) for x in jax.tree.leaves(reset_state)]
    got_shapes = [jnp.shape(x) for x in jax.tree.leaves(hidden)]
    if expected != got or exp_shapes != got_shapes:
        raise ValueError(
            f"{where}: `hidden` must match the cell's hidden state, "
            f"{jax.tree.map(jnp.shape, reset_state)}, got "
            f"{jax.tree.map(jnp.shape, hidden)}."
            + _hidden_hint(hidden, exp_shapes, where, layer)
        )
    for leaf in jax.tree.leaves(hidden):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{where}: `hidden` must hold floating-point arrays, got dtype "
                f"{jnp.result_type(leaf)}."
            )
    return hidden


def _hidden_hint(
    hidden: Any, expected: list[tuple[int, ...]], where: str, layer: bool
) -> str:
    """What a wrong `hidden` most likely is, and its fix."""
    got = [jnp.shape(x) for x in jax.tree.leaves(hidden)]
    if len(got) == len(expected) and all(
        len(g) == len(e) + 1 and g[1:] == e for g, e in zip(got, expected, strict=True)
    ):
        call = "layer(x, h)" if layer else f"eqrnn.{where}(cell, x, h)"
        return (
            f" {where} sees one sequence at a time: batch the states with the "
            f"inputs, `jax.vmap(lambda x, h: {call})(inputs, hiddens)`."
        )
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return (
            " The third positional argument is `hidden`; `length` is keyword-only: "
            f"`length={hidden}`."
        )
    return (
        " Pass a state shaped like `cell.init_hidden()`, or leave `hidden` out to "
        "start from it."
    )


def check_sequence(
    inputs: Any,
    where: str,
    input_shape: tuple[int, ...] | None = None,
    *,
    layer: bool = False,
) -> Array:
    """`inputs` as one floating-point sequence `(time, *input_shape)` (`(time,
    input_size)` for vector inputs), or an error naming `where` whose fix (for a
    batch: `jax.vmap`; `layer`: called by a layer) runs."""
    inputs = jnp.asarray(inputs)
    ndim = 2 if input_shape is None else 1 + len(input_shape)
    if input_shape is None:
        width = "input_size"
    elif len(input_shape) == 1:
        width = f"input_size={input_shape[0]}"
    else:
        width = ", ".join(str(n) for n in input_shape)
    if inputs.ndim != ndim or (
        input_shape is not None and tuple(inputs.shape[1:]) != input_shape
    ):
        hint = ""
        if inputs.ndim == ndim + 1 and layer:
            hint = (
                f" A batch of sequences is mapped with `jax.vmap(layer)(batch)` "
                f"(`layer` being this {where}), or with lengths `jax.vmap(lambda x, "
                "n: layer(x, length=n))(batch, lengths)`."
            )
        elif inputs.ndim == ndim + 1:
            hint = (
                " A batch of sequences is mapped with `jax.vmap(lambda x: "
                f"eqrnn.{where}(cell, x))(batch)`."
            )
        raise ValueError(
            f"{where}: `inputs` must have shape (time, {width}), one sequence with "
            f"time on axis 0, got shape {inputs.shape}.{hint}"
        )
    if not jnp.issubdtype(inputs.dtype, jnp.floating):
        raise TypeError(
            f"{where}: `inputs` must be a floating-point array, got dtype "
            f"{inputs.dtype}. Cast it first, e.g. `inputs.astype(jnp.float32)`."
        )
    return inputs


def check_length(length: Any, num_steps: int, where: str) -> Array | None:
    if length is None:
        return None
    if isinstance(length, bool) or not jnp.issubdtype(
        jnp.result_type(length), jnp.integer
    ):
        raise TypeError(
            f"{where}: `length` must be an integer (the number of valid steps), got "
            f"{type(length).__name__} of dtype {jnp.result_type(length)}."
        )
    if jnp.ndim(length) != 0:
        raise ValueError(
            f"{where}: `length` must be a scalar for one sequence, got shape "
            f"{jnp.shape(length)}. For a batch, `jax.vmap` over sequences and lengths."
        )
    if isinstance(length, int) and not 0 <= length <= num_steps:
        raise ValueError(
            f"{where}: `length` must be in [0, {num_steps}] (the number of time steps "
            f"in `inputs`), got {length}."
        )
    return _check_traced_length(jnp.asarray(length), num_steps, where)


def _check_traced_length(length: Array, num_steps: int, where: str) -> Array:
    """A traced `length` checked when the program runs: a `ValueError` naming the
    first value outside `[0, num_steps]` and, under `jax.vmap`, its batch index."""

    def raise_error(lengths: Any) -> Any:
        lengths = np.asarray(lengths)
        first = tuple(int(i) for i in np.argwhere(_outside(lengths))[0])
        at = ""
        if first:  # the callback sees the whole batch (vmap_method="expand_dims")
            at = f" at batch index {first[0] if len(first) == 1 else first}"
        raise LengthOutOfRangeError(
            f"{where}: `length` must be in [0, {num_steps}] (the number of time steps "
            f"in `inputs`), got {lengths[first]}{at}."
        )

    def fail(length: Array) -> Array:
        shape = jax.ShapeDtypeStruct(length.shape, length.dtype)
        return jax.pure_callback(raise_error, shape, length, vmap_method="expand_dims")

    def _outside(n: Any) -> Any:
        return (n < 0) | (n > num_steps)

    # As `eqx.error_if` does: one test for the whole batch (`unvmap_any`), so the
    # callback runs only when a value is wrong.
    return jax.lax.cond(eqxi.unvmap_any(_outside(length)), fail, lambda n: n, length)


def _check_resets(resets: Any, num_steps: int, where: str) -> Array | None:
    if resets is None:
        return None
    resets = jnp.asarray(resets)
    if resets.shape != (num_steps,):
        raise ValueError(
            f"{where}: `resets` must have shape (time,) = ({num_steps},), one flag per "
            f"step of `inputs`, got shape {resets.shape}."
        )
    if resets.dtype != jnp.bool_:
        raise TypeError(
            f"{where}: `resets` must be a boolean array, got dtype {resets.dtype}. "
            "Use e.g. `resets = done_flags.astype(bool)`."
        )
    return resets


def chunk_length(checkpoint: Any, num_steps: int, where: str) -> int | None:
    if checkpoint is False:
        return None
    if checkpoint is True:
        return max(1, math.isqrt(max(num_steps - 1, 0)) + 1)
    if isinstance(checkpoint, int) and checkpoint > 0:
        return checkpoint
    raise ValueError(
        f"{where}: `checkpoint` must be a bool or a positive int (steps per "
        f"checkpointed chunk), got {checkpoint!r}."
    )


def run_scan(
    cell: AbstractCell,
    inputs: Any,
    hidden: Any,
    options: ScanOptions,
    *,
    length: Any,
    resets: Any,
    key: PRNGKeyArray | None,
    stack: bool,
    length_checked: bool = False,
) -> tuple[Any, Any]:
    """`(final, stacked)` of `cell` (already an eqrnn cell: see `as_cell`) over one
    sequence: the arguments checked once, padding zeroed once, then the strategy of
    the mode (in float32 for a half-precision cell). `stacked` is `None` unless
    `stack`. With `length_checked`, `length` was checked by the caller."""
    inputs, hidden, plan = _plan(
        cell, inputs, hidden, options, length, resets, key, stack, length_checked
    )
    run = strategy(cell, plan.mode)
    if _is_half(cell.dtype):
        final, hiddens = _half_precision_run(run, cell, inputs, hidden, plan)
    else:
        final, hiddens = run(cell, inputs, hidden, plan)
    if options.check_finite:
        _raise_at_first_nonfinite(hiddens, inputs, options.reverse, options.where)
    return final, (hiddens if stack else None)


def _plan(
    cell: AbstractCell,
    inputs: Any,
    hidden: Any,
    options: ScanOptions,
    length: Any,
    resets: Any,
    key: PRNGKeyArray | None,
    stack: bool,
    length_checked: bool,
) -> tuple[Array, Any, Plan]:
    """The checked `inputs` (zero at padding), starting state and `Plan` of a call."""
    where = options.where
    options.check_cell(cell)
    inputs = check_sequence(inputs, where, cell.step_input_shape(), layer=options.layer)
    num_steps = inputs.shape[0]
    hidden = _check_hidden(cell, hidden, where, options.layer)
    if not length_checked:
        length = check_length(length, num_steps, where)
    resets = _check_resets(resets, num_steps, where)
    chunk = chunk_length(options.checkpoint, num_steps, where)
    check_same_dtype("inputs", inputs, cell.dtype, where)
    check_same_dtype("hidden", hidden, cell.dtype, where)

    # (`arange` in `length`'s dtype: int32 lengths under x64 need no promotion.)
    valid = (
        None if length is None else jnp.arange(num_steps, dtype=length.dtype) < length
    )
    if valid is not None:
        # Padding is replaced by zeros before the cell sees it, so that NaN or inf
        # there reaches neither the state nor (through `where`) any gradient.
        inputs = jnp.where(
            valid.reshape(-1, *(1,) * (inputs.ndim - 1)),
            inputs,
            jnp.zeros((), inputs.dtype),
        )
    plan = Plan(
        valid=valid,
        length=length,
        resets=resets,
        keys=None if key is None else jr.split(check_key(where, key), num_steps),
        reverse=options.reverse,
        stack=stack or options.check_finite,
        unroll=resolve_unroll(options.unroll, num_steps if chunk is None else chunk),
        chunk=chunk,
        # `Auto` made concrete for this cell and platform, at trace time.
        mode=options.mode.select(cell)
        if isinstance(options.mode, Auto)
        else options.mode,
        hoist=hoists_projection(),
        where=where,
    )
    return inputs, hidden, plan


def _is_half(dtype: Any) -> bool:
    return (
        dtype is not None
        and jnp.issubdtype(dtype, jnp.floating)
        and jnp.finfo(dtype).bits < 32
    )


def _half_precision_run(
    run: Callable[..., Any], cell: AbstractCell, inputs: Array, hidden: Any, plan: Plan
) -> tuple[Any, Any]:
    """`run(cell, ...)`, a strategy's loop, for a bfloat16/float16 cell, computed in
    float32.

    The parameters, inputs and states are widened to float32, every step and the
    carried state are float32, and the final and stacked states are rounded back to
    the cell's dtype once. Rounding the state to 8 (bfloat16) or 11 (float16)
    significant bits at every step would lose what each step adds whenever it is
    small next to the state, e.g. an LSTM's cell state `c` or a linear cell's state
    with a forget rate near 1, and the error would grow with the sequence length.
    Gradients flow back through the casts in the cell's dtype.
    """
    dtype = cell.dtype
    wide_cell, wide_inputs, wide_hidden = jax.tree.map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x,
        (cell, inputs, hidden),
    )
    final, hiddens = run(wide_cell, wide_inputs, wide_hidden, plan)
    return jax.tree.map(lambda x: x.astype(dtype), (final, hiddens))


class _Report(Exception):
    """An error raised from a callback inside the compiled program, whose message
    is the whole report."""


class NonFiniteStateError(_Report, FloatingPointError):
    """What `check_finite=True` raises (a `FloatingPointError`, as documented)."""


class LengthOutOfRangeError(_Report, ValueError):
    """A traced `length` outside `[0, time]`."""


def _not_a_report(record: logging.LogRecord) -> bool:
    # JAX logs every exception a callback raises, with its traceback, before
    # passing it on; a report raised here is the message itself.
    return not (record.exc_info and isinstance(record.exc_info[1], _Report))


logging.getLogger("jax._src.debugging").addFilter(_not_a_report)
logging.getLogger("jax._src.callback").addFilter(_not_a_report)


def _raise_at_first_nonfinite(
    hiddens: Any, inputs: Array, reverse: bool, where: str
) -> None:
    """`check_finite=True`: raise, naming the step, if a hidden state is NaN or inf.

    The check runs inside the compiled computation (a `jax.debug.callback`, which
    transformations keep), so it works under `jit`, `vmap` and `grad`."""
    bad = jnp.zeros(inputs.shape[0], bool)
    for leaf in jax.tree.leaves(hiddens):
        bad = bad | ~jnp.isfinite(leaf).reshape(leaf.shape[0], -1).all(axis=1)
    input_ok = jnp.isfinite(inputs).reshape(inputs.shape[0], -1).all(axis=1)
    jax.debug.callback(
        functools.partial(_report_nonfinite, reverse=reverse, where=where),
        bad,
        input_ok,
    )


def _report_nonfinite(bad: Any, input_ok: Any, *, reverse: bool, where: str) -> None:
    bad, input_ok = np.asarray(bad), np.asarray(input_ok)
    # Under `vmap` the arrays may carry the batch axes in front.
    bad = bad.reshape(-1, bad.shape[-1])
    input_ok = input_ok.reshape(-1, input_ok.shape[-1])
    for i, (row, ok) in enumerate(zip(bad, input_ok, strict=True)):
        steps = np.flatnonzero(row)
        if not steps.size:
            continue
        step = int(steps[-1] if reverse else steps[0])
        which = "" if bad.shape[0] == 1 else f" (sequence {i} of the batch)"
        cause = (
            f"`inputs[{step}]` is NaN or inf"
            if not ok[step]
            else f"`inputs[{step}]` is finite, so the state before it, the cell's "
            "parameters or its arithmetic (overflow) is the cause"
        )
        message = (
            f"{where}: check_finite=True: the hidden state first becomes NaN or inf "
            f"at step {step}{which}, counting steps as indices of `inputs`; {cause}."
        )
        raise NonFiniteStateError(message)


def scan_last(
    cell: Callable[..., Any],
    inputs: Inputs,
    hidden: AnyHiddenLike | None = None,
    *,
    length: Length | None = None,
    reverse: bool = False,
    resets: Bool[ArrayLike, " time"] | None = None,
    unroll: Unroll = "auto",
    checkpoint: bool | int = False,
    key: PRNGKeyArray | None = None,
    mode: ScanMode = "auto",
    check_finite: bool = False,
) -> AnyHidden:
    """Run `cell` over one sequence and return the final hidden state.

    Equivalent to `scan_all_hidden(...)` at the last valid step, without stacking the
    states of the other steps.

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        h = eqrnn.scan_last(cell, jnp.ones((10, 3)), length=7)  # shape (8,)
        ```

    **Arguments:**

    - `cell`: an eqrnn cell, or any callable `cell(input, hidden, *, key=None) ->
        hidden` such as `equinox.nn.GRUCell` and `equinox.nn.LSTMCell`.
    - `inputs`: one sequence, shape `(time, input_size)`.
    - `hidden`: the starting state; default `cell.init_hidden()` (zeros for
        Equinox's cells). Required for other callables.
    - `length`: the number of valid steps, an integer in `[0, time]`; the steps after
        it are padding and are skipped. Default: all `time` steps.
    - `reverse`: run from the last valid step to the first.
    - `resets`: booleans of shape `(time,)`; where true, that step starts again from
        `cell.init_hidden()` (zeros for cells without it) instead of the carried
        state, as at an episode boundary.
    - `unroll`: steps unrolled per iteration of `jax.lax.scan` (for a linear cell,
        of the sequential scans of its `mode`): a positive int, a bool (`True`:
        every step) or `"auto"`, the platform's measured choice: 1 on CPU; on GPU
        and TPU, where each loop iteration has a fixed cost, 8 (16 from 1024 steps
        on; see BENCHMARKS.md). More unrolling compiles longer.
    - `checkpoint`: recompute the forward pass during the backward pass, keeping
        only the state at chunk boundaries, so that memory grows as `sqrt(time)`.
        `True` picks chunks of about `sqrt(time)` steps; an int sets the chunk length.
        For a linear cell each chunk's coefficients and scan are recomputed;
        `mode="newton"` holds every state and ignores it.
    - `key`: a `jax.random` key, split into one key per step and passed to the cell
        as `key=`. For stochastic cells; the built-in cells ignore it.
    - `mode`: the strategy that runs the time loop, a mode object or its name,
        as in `scan_all_hidden`; `eqrnn.Auto()` (the default) picks for the cell
        and the platform, and `eqrnn.Auto().select(cell)` says what it picks.
    - `check_finite`: a debugging aid. Raise `FloatingPointError` (inside `jax.jit`,
        a `JaxRuntimeError` carrying its message) naming the first step whose hidden
        state is NaN or inf, and whether that step's input already was. Off by
        default: a NaN in a valid step otherwise propagates to every later state,
        as it should, and is never masked. Costs a stacked copy of the states for
        `scan_last`, and a host callback.

    **Returns:**

    The hidden state after the last valid step (after step 0 when `reverse=True`),
    with the structure of `cell.init_hidden()`: shape `(hidden_size,)`, or for an LSTM
    the tuple `(h, c)`. With `length=0` it is the starting state.
    """
    options = ScanOptions("scan_last", reverse, unroll, checkpoint, mode, check_finite)
    final, _ = run_scan(
        as_cell(cell, hidden, "scan_last"),
        inputs,
        hidden,
        options,
        length=length,
        resets=resets,
        key=key,
        stack=False,
    )
    return final


def scan_all_hidden(
    cell: Callable[..., Any],
    inputs: Inputs,
    hidden: AnyHiddenLike | None = None,
    *,
    length: Length | None = None,
    reverse: bool = False,
    resets: Bool[ArrayLike, " time"] | None = None,
    unroll: Unroll = "auto",
    checkpoint: bool | int = False,
    key: PRNGKeyArray | None = None,
    mode: ScanMode = "auto",
    check_finite: bool = False,
) -> AnyHiddens:
    """Run `cell` over one sequence and return the hidden state of every step.

    `hiddens[t]` is the state right after the cell has read `inputs[t]`, also when
    `reverse=True`, so the result lines up with `inputs`.

    !!! example

        ```python
        cell = eqrnn.LSTMCell(3, 8, key=jax.random.key(0))
        xs = jnp.ones((4, 10, 3))  # a batch of 4 sequences of 10 steps
        lengths = jnp.array([10, 7, 3, 0])
        hs, cs = jax.vmap(lambda x, n: eqrnn.scan_all_hidden(cell, x, length=n))(
            xs, lengths
        )  # (4, 10, 8) each; zero after each sequence's length
        ```

    **Arguments:**

    - `cell`: an eqrnn cell, or any callable `cell(input, hidden, *, key=None) ->
        hidden` such as `equinox.nn.GRUCell` and `equinox.nn.LSTMCell`.
    - `inputs`: one sequence, shape `(time, input_size)`.
    - `hidden`: the starting state; default `cell.init_hidden()` (zeros for
        Equinox's cells). Required for other callables.
    - `length`: the number of valid steps, an integer in `[0, time]`; the steps after
        it are padding: skipped, and zero in the result. Default: all `time` steps.
    - `reverse`: run from the last valid step to the first.
    - `resets`: booleans of shape `(time,)`; where true, that step starts again from
        `cell.init_hidden()` (zeros for cells without it) instead of the carried
        state, as at an episode boundary.
    - `unroll`: steps unrolled per iteration of `jax.lax.scan` (for a linear cell,
        of the sequential scans of its `mode`): a positive int, a bool (`True`:
        every step) or `"auto"`, the platform's measured choice: 1 on CPU; on GPU
        and TPU, where each loop iteration has a fixed cost, 8 (16 from 1024 steps
        on; see BENCHMARKS.md). More unrolling compiles longer.
    - `checkpoint`: recompute the forward pass during the backward pass, keeping
        only the state at chunk boundaries, so that memory grows as `sqrt(time)`.
        `True` picks chunks of about `sqrt(time)` steps; an int sets the chunk length.
        For a linear cell each chunk's coefficients and scan are recomputed;
        `mode="newton"` holds every state and ignores it.
    - `key`: a `jax.random` key, split into one key per step and passed to the cell
        as `key=`. For stochastic cells; the built-in cells ignore it.
    - `mode`: the strategy that runs the time loop, a mode object or its name
        (`"auto"`, `"sequential"`, `"associative"`, `"chunked"`, `"newton"`). A
        cell whose recurrence is linear in its state (`MinGRU`, `MinLSTM`, `LRU`,
        `RGLRU`, any `eqrnn.AbstractLinearCell`) runs in `eqrnn.Sequential()` (a
        `jax.lax.scan` over its coefficients), `eqrnn.Associative()`
        (`jax.lax.associative_scan`, depth `log2(time)`) or `eqrnn.Chunked()`
        (associative within chunks, sequential across them); see
        `eqrnn.linear_scan`. Every mode gives the step-by-step results up to
        rounding, and each can be differentiated in forward and reverse mode.
        `MLSTMCell` takes every one of them too (`Chunked` is its chunkwise form,
        see its docstring). The step-by-step cells (`GRUCell`, `LSTMCell`, ...,
        Equinox's, your callables) take `eqrnn.Sequential()` (one step after
        another) and `eqrnn.Newton(...)`: every step at once by Newton's method,
        iterated until exact to rounding, gradients too; for long sequences on an
        accelerator. `eqrnn.Auto()` (the default) picks for the cell and the
        platform, and `eqrnn.Auto().select(cell)` says what it picks.
    - `check_finite`: a debugging aid. Raise `FloatingPointError` (inside `jax.jit`,
        a `JaxRuntimeError` carrying its message) naming the first step whose hidden
        state is NaN or inf, and whether that step's input already was. Off by
        default: a NaN in a valid step otherwise propagates to every later state,
        as it should, and is never masked. Costs a stacked copy of the states for
        `scan_last`, and a host callback.

    **Returns:**

    The hidden states stacked on a leading time axis, with the structure of
    `cell.init_hidden()`: shape `(time, hidden_size)`, or for an LSTM the tuple
    `(hs, cs)` of two such arrays. Padded steps are zero. Use `cell.output` under
    `jax.vmap` (or `hiddens[0]` for an LSTM) to get what a layer above would see.
    """
    options = ScanOptions(
        "scan_all_hidden", reverse, unroll, checkpoint, mode, check_finite
    )
    _, hiddens = run_scan(
        as_cell(cell, hidden, "scan_all_hidden"),
        inputs,
        hidden,
        options,
        length=length,
        resets=resets,
        key=key,
        stack=True,
    )
    return hiddens


def newton_iterations(
    cell: Callable[..., Any],
    inputs: Inputs,
    hidden: AnyHiddenLike | None = None,
    *,
    length: Length | None = None,
    reverse: bool = False,
    resets: Bool[ArrayLike, " time"] | None = None,
    key: PRNGKeyArray | None = None,
    mode: ScanMode = "newton",
) -> Int[Array, ""]:
    """How many iterations Newton's method takes over one sequence.

    The forward pass of `scan_all_hidden(cell, inputs, hidden, mode=mode, ...)`
    (and of `scan_last` and `RNN`) runs this many; each costs one parallel pass
    over the sequence. A derivative solves one linear system (reverse mode: its
    transpose) to the same tolerance, in about as many iterations or fewer.

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        x = jnp.ones((500, 3))
        n = eqrnn.newton_iterations(cell, x, mode=eqrnn.Newton("diagonal"))
        ```

    **Arguments:**

    - `cell`, `inputs`, `hidden`, `length`, `reverse`, `resets`, `key`: as in
        `scan_all_hidden`.
    - `mode`: `"newton"` or an `eqrnn.Newton(...)`.

    **Returns:**

    The number of iterations, an integer array of shape `()`: at most
    `max_iterations` (default the sequence length).
    """
    where = "newton_iterations"
    if not isinstance(mode, Newton) and not (
        isinstance(mode, str) and mode == Newton.name
    ):
        raise ValueError(
            f"{where}: `mode` must be 'newton' or an `eqrnn.Newton(...)`, got {mode!r}."
        )
    cell = as_cell(cell, hidden, where)
    options = ScanOptions(where, reverse, 1, False, mode, False)
    inputs, hidden, plan = _plan(
        cell, inputs, hidden, options, length, resets, key, False, False
    )
    return newton_count(cell, inputs, hidden, plan)
