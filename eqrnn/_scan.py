"""`scan_last` and `scan_all_hidden`: a cell run over one sequence.

Everything about time lives here: valid lengths, reversal, episode resets,
checkpointing and picking a cell's fast sequence path (for cells whose recurrence is
linear, the engine in `_linear_scan.py`).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, PRNGKeyArray

from ._cell import AbstractCell
from ._custom_types import AnyHidden, AnyHiddenLike, AnyHiddens, Inputs, Length
from ._linear_cell import AbstractLinearCell
from ._linear_scan import (
    Mode,
    check_mode,
    linear_scan_final,
    mask_coefficients,
    resolve_mode,
)
from ._misc import check_same_dtype
from ._platform import Unroll, check_unroll, hoists_projection, resolve_unroll


def _tree_where(pred: Array, on_true: Any, on_false: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _zeros_like_hidden(cell: Any, hidden: Any, where: str) -> Any:
    """A starting state for a cell that has no `init_hidden` (e.g. Equinox's)."""
    if hidden is not None:
        return jax.tree.map(jnp.zeros_like, hidden)
    if isinstance(cell, eqx.nn.LSTMCell):
        zeros = jnp.zeros(cell.hidden_size, cell.weight_hh.dtype)
        return (zeros, zeros)
    if isinstance(cell, eqx.nn.GRUCell):
        return jnp.zeros(cell.hidden_size, cell.weight_hh.dtype)
    raise TypeError(
        f"{where}: `hidden` is None and the cell {type(cell).__name__} has no "
        "`init_hidden()` method, so the starting state is unknown: pass `hidden`."
    )


def _initial_hidden(cell: Any, hidden: Any, where: str) -> tuple[Any, Any]:
    """`(start, reset_state)`: where the scan starts, and what `resets` go back to."""
    if hasattr(cell, "init_hidden"):
        reset_state = cell.init_hidden()
    else:
        reset_state = _zeros_like_hidden(cell, hidden, where)
    if hidden is None:
        return reset_state, reset_state
    expected = jax.tree.structure(reset_state)
    got = jax.tree.structure(hidden)
    exp_shapes = [jnp.shape(x) for x in jax.tree.leaves(reset_state)]
    got_shapes = [jnp.shape(x) for x in jax.tree.leaves(hidden)]
    if expected != got or exp_shapes != got_shapes:
        raise ValueError(
            f"{where}: `hidden` must match the cell's hidden state, "
            f"{jax.tree.map(jnp.shape, reset_state)}, got "
            f"{jax.tree.map(jnp.shape, hidden)}. The scan helpers see one sequence "
            "at a time: batch with `jax.vmap`."
        )
    for leaf in jax.tree.leaves(hidden):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{where}: `hidden` must hold floating-point arrays, got dtype "
                f"{jnp.result_type(leaf)}."
            )
    return hidden, reset_state


def _check_inputs(cell: Any, inputs: Any, where: str) -> Array:
    inputs = jnp.asarray(inputs)
    input_size = getattr(cell, "input_size", None)
    width = "input_size" if input_size is None else f"input_size={input_size}"
    if inputs.ndim != 2 or (input_size is not None and inputs.shape[1] != input_size):
        hint = ""
        if inputs.ndim == 3:
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
    length = jnp.asarray(length)
    return eqx.error_if(
        length,
        (length < 0) | (length > num_steps),
        f"{where}: `length` must be in [0, {num_steps}] (the number of time steps in "
        "`inputs`).",
    )


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


def check_cell_mode(cell: Any, mode: Any, where: str) -> None:
    check_mode(mode, where)
    if not isinstance(cell, AbstractLinearCell) and mode not in ("auto", "sequential"):
        raise ValueError(
            f"{where}: `mode={mode!r}` needs a cell whose recurrence is linear in its "
            "state (an `eqrnn.AbstractLinearCell` such as `MinGRU`, `MinLSTM`, `LRU` "
            f"or `RGLRU`); {type(cell).__name__} is not, and runs one step at a "
            "time: use mode='auto' or mode='sequential'."
        )


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


def scan_with_final(
    cell: Callable[..., Any],
    inputs: Any,
    hidden: Any,
    *,
    stack: bool,
    where: str,
    check_finite: bool = False,
    **options: Any,
) -> tuple[Any, Any]:
    """The final hidden state and (if `stack`) every step's, stacked; `where` names
    the public function in error messages. `options`: `length`, `reverse`, `resets`,
    `unroll`, `checkpoint`, `key` and `mode`, as the public functions take them."""
    if not isinstance(check_finite, bool):
        raise TypeError(
            f"{where}: `check_finite` must be a bool, got {check_finite!r}."
        )
    final, hiddens = _scan(
        cell, inputs, hidden, stack=stack or check_finite, where=where, **options
    )
    if check_finite:
        _raise_at_first_nonfinite(
            hiddens, jnp.asarray(inputs), options["reverse"], where
        )
    return final, (hiddens if stack else None)


def _scan(
    cell: Callable[..., Any],
    inputs: Any,
    hidden: Any,
    *,
    length: Any,
    reverse: bool,
    resets: Any,
    unroll: Unroll,
    checkpoint: bool | int,
    key: PRNGKeyArray | None,
    stack: bool,
    where: str,
    mode: str = "auto",
) -> tuple[Any, Any]:
    """`scan_with_final` without `check_finite`: check the arguments once, then
    `_run` (in float32 for a half-precision cell)."""
    if not callable(cell):
        raise TypeError(f"{where}: `cell` must be callable, got {type(cell).__name__}.")
    if not isinstance(reverse, bool):
        raise TypeError(f"{where}: `reverse` must be a bool, got {reverse!r}.")
    check_unroll(unroll, where)
    check_cell_mode(cell, mode, where)
    inputs = _check_inputs(cell, inputs, where)
    num_steps = inputs.shape[0]
    hidden, reset_state = _initial_hidden(cell, hidden, where)
    length = check_length(length, num_steps, where)
    resets = _check_resets(resets, num_steps, where)
    chunk = chunk_length(checkpoint, num_steps, where)

    valid = None if length is None else jnp.arange(num_steps) < length
    if valid is not None:
        # Padding is replaced by zeros before the cell sees it, so that NaN or inf
        # there reaches neither the state nor (through `where`) any gradient.
        inputs = jnp.where(valid[:, None], inputs, jnp.zeros((), inputs.dtype))

    options: dict[str, Any] = dict(
        valid=valid,
        resets=resets,
        length=length,
        chunk=chunk,
        key=key,
        reverse=reverse,
        unroll=unroll,
        stack=stack,
        mode=mode,
    )
    if isinstance(cell, AbstractCell):
        check_same_dtype("inputs", inputs, cell.dtype, where)
        check_same_dtype("hidden", hidden, cell.dtype, where)
        if _is_half(cell.dtype):
            return _half_precision_run(cell, inputs, hidden, reset_state, options)
    return _run(cell, inputs, hidden, reset_state, **options)


def _run(
    cell: Callable[..., Any],
    inputs: Array,
    hidden: Any,
    reset_state: Any,
    *,
    valid: Array | None,
    resets: Array | None,
    length: Array | None,
    chunk: int | None,
    key: PRNGKeyArray | None,
    reverse: bool,
    unroll: Unroll,
    stack: bool,
    mode: str,
) -> tuple[Any, Any]:
    """The scan itself, on checked arguments (`inputs` already zero at padding)."""
    num_steps = inputs.shape[0]
    unroll = resolve_unroll(unroll, num_steps if chunk is None else chunk)
    xs = inputs
    if isinstance(cell, AbstractCell):
        # Whether the input projection of every step is made in one matmul before
        # the loop: for a linear cell, whose engine needs every step's coefficients
        # at once, unless checkpointed (each chunk then projects its own inputs);
        # for the others, off the CPU (see `eqrnn._platform.hoists_projection`).
        linear = isinstance(cell, AbstractLinearCell)
        hoisted = chunk is None if linear else hoists_projection()
        if hoisted:
            xs = cell.project_inputs(inputs)
        # The built-in step-by-step cells have a faster form of the step
        # (`eqrnn._fused`), made here, outside the loop.
        fused = None if linear else cell._fused_step(hoisted)

        def call(x: Array, h: Any, k: Any) -> Any:
            del k
            if fused is not None:
                return fused(x, h)
            return cell.step(x if hoisted else cell.project_inputs(x), h)
    else:

        def call(x: Array, h: Any, k: Any) -> Any:
            return cell(x, h, key=k)

    keys = None if key is None else jr.split(key, num_steps)

    def body(carry: Any, step_in: Any) -> tuple[Any, Any]:
        x, ok, reset, k = step_in
        start = carry if reset is None else _tree_where(reset, reset_state, carry)
        new = call(x, start, k)
        if ok is None:
            return new, (new if stack else None)
        out = jax.tree.map(lambda n: jnp.where(ok, n, jnp.zeros_like(n)), new)
        return _tree_where(ok, new, carry), (out if stack else None)

    def run_steps(carry: Any, seq_in: Any) -> tuple[Any, Any]:
        return jax.lax.scan(body, carry, seq_in, reverse=reverse, unroll=unroll)

    seq_in = (xs, valid, resets, keys)
    if not isinstance(cell, AbstractLinearCell):
        if chunk is None:
            return run_steps(hidden, seq_in)
        return _checkpointed(run_steps, hidden, seq_in, chunk, reverse)

    # A linear cell: the recurrence s_t = a_t s_{t-1} + b_t of every step at once.
    # Padding and resets become coefficients, and the engine carries the linear state
    # rather than the hidden state (they differ for `LRU`, whose hidden state also
    # holds its output).
    engine = resolve_mode(mode)
    reset_linear = cell.linear_state(reset_state)
    if chunk == 3 and engine != "sequential":
        # Checkpointed chunks of 3 steps crash XLA's CPU backend (jax 0.10.2, a
        # segfault at run time) in the compiled gradient of `LRU`, reversed, with
        # resets, in these modes; chunks of 4 give the same numbers.
        chunk = 4
    # Checkpointed, each chunk projects its own inputs and returns its hidden
    # states, so that nothing of size (time, projected) is stored for the backward
    # pass; otherwise `xs` holds the projection of every step, made once above.
    in_chunks = chunk is not None

    def run_linear(carry: Any, seq_in: Any) -> tuple[Any, Any]:
        x, ok, reset, _ = seq_in
        projected = cell.project_inputs(x) if in_chunks else x
        a, b = cell.linear_coefficients(projected)
        a, b = mask_coefficients(a, b, ok, reset, reset_linear)
        final, states = linear_scan_final(
            a, b, carry, mode=engine, reverse=reverse, unroll=unroll, stack=stack
        )
        if in_chunks and states is not None:
            states = cell.hidden_from_state(states, projected)
        return final, states

    start = cell.linear_state(hidden)
    if chunk is None:
        final, states = run_linear(start, seq_in)
    else:
        final, states = _checkpointed(run_linear, start, seq_in, chunk, reverse)
    return _linear_hiddens(
        cell, xs, in_chunks, hidden, final, states, length, valid, reverse
    )


def _is_half(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def _half_precision_run(
    cell: AbstractCell,
    inputs: Array,
    hidden: Any,
    reset_state: Any,
    options: dict[str, Any],
) -> tuple[Any, Any]:
    """`_run` for a bfloat16/float16 cell, computed in float32.

    The parameters, inputs and states are widened to float32, every step and the
    carried state are float32, and the final and stacked states are rounded back to
    the cell's dtype once. Rounding the state to 8 (bfloat16) or 11 (float16)
    significant bits at every step would lose what each step adds whenever it is
    small next to the state, e.g. an LSTM's cell state `c` or a linear cell's state
    with a forget rate near 1, and the error would grow with the sequence length.
    Gradients flow back through the casts in the cell's dtype.
    """
    dtype = cell.dtype
    wide = jax.tree.map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x,
        (cell, inputs, hidden, reset_state),
    )
    final, hiddens = _run(*wide, **options)
    return jax.tree.map(lambda x: x.astype(dtype), (final, hiddens))


def _raise_at_first_nonfinite(
    hiddens: Any, inputs: Array, reverse: bool, where: str
) -> None:
    """`check_finite=True`: raise, naming the step, if a hidden state is NaN or inf.

    The check runs inside the compiled computation (a `jax.debug.callback`, which
    transformations keep), so it works under `jit`, `vmap` and `grad`."""
    bad = jnp.zeros(inputs.shape[0], bool)
    for leaf in jax.tree.leaves(hiddens):
        bad = bad | ~jnp.isfinite(leaf).reshape(leaf.shape[0], -1).all(axis=1)
    input_ok = jnp.isfinite(inputs).all(axis=1)
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
        raise FloatingPointError(message)


def _checkpointed(
    run: Callable[[Any, Any], tuple[Any, Any]],
    hidden: Any,
    seq_in: tuple[Array, Array | None, Array | None, Array | None],
    chunk: int,
    reverse: bool,
) -> tuple[Any, Any]:
    """`run(hidden, seq_in)`, with the forward pass recomputed chunk by chunk in the
    backward pass."""
    xs, valid, resets, keys = seq_in
    num_steps = xs.shape[0]

    # Checkpointing: an outer scan over chunks of `chunk` steps stores only the
    # state at chunk boundaries; each chunk's inner scan is recomputed in the
    # backward pass. With chunk ~ sqrt(T), memory grows as sqrt(T), not T.
    num_chunks = -(-num_steps // chunk)
    pad = num_chunks * chunk - num_steps
    if valid is None:
        valid = jnp.ones(num_steps, bool)

    def to_chunks(a: Array) -> Array:
        a = jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])
        return a.reshape(num_chunks, chunk, *a.shape[1:])

    chunked = jax.tree.map(to_chunks, (xs, valid, resets, keys))
    final, outs = jax.lax.scan(jax.checkpoint(run), hidden, chunked, reverse=reverse)
    outs = jax.tree.map(
        lambda a: a.reshape(num_chunks * chunk, *a.shape[2:])[:num_steps], outs
    )
    return final, outs


def _linear_hiddens(
    cell: AbstractLinearCell,
    xs: Array,
    raw_inputs: bool,
    hidden: Any,
    final: Any,
    states: Any,
    length: Array | None,
    valid: Array | None,
    reverse: bool,
) -> tuple[Any, Any]:
    """The final hidden state and the stacked ones (zero at padded steps), from what
    the engine returned: linear states, or, when `raw_inputs` (checkpointed: `xs`
    are the inputs, not their projections), hidden states already."""
    num_steps = xs.shape[0]
    if num_steps == 0:
        final = hidden
    else:
        # The last step that was run: its input completes the hidden state (`LRU`'s
        # output y needs it); with no valid step the state is the starting one.
        last = 0 if reverse else (num_steps - 1 if length is None else length - 1)
        last_in = xs[jnp.maximum(last, 0)]
        if raw_inputs:
            last_in = cell.project_inputs(last_in)
        final = cell.hidden_from_state(final, last_in)
        if length is not None:
            final = _tree_where(length > 0, final, hidden)
    if states is None:
        return final, None
    hiddens = states if raw_inputs else cell.hidden_from_state(states, xs)
    if valid is not None:
        hiddens = jax.tree.map(
            lambda h: jnp.where(
                valid.reshape(-1, *(1,) * (h.ndim - 1)), h, jnp.zeros((), h.dtype)
            ),
            hiddens,
        )
    return final, hiddens


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
    mode: Mode = "auto",
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
        For a linear cell each chunk's coefficients and scan are recomputed.
    - `key`: a `jax.random` key, split into one key per step and passed to the cell
        as `key=`. For stochastic cells; the built-in cells ignore it.
    - `mode`: how a cell whose recurrence is linear in its state (`MinGRU`,
        `MinLSTM`, `LRU`, `RGLRU`, any `eqrnn.AbstractLinearCell`) is run over
        time: `"sequential"` (a `jax.lax.scan` over its coefficients),
        `"associative"` (`jax.lax.associative_scan`, depth `log2(time)`),
        `"chunked"` (associative within chunks, sequential across them) or `"auto"`
        (sequential on CPU, associative on GPU and TPU); see `eqrnn.linear_scan`.
        Every mode gives the step-by-step results up to rounding; forward-mode
        differentiation (`jax.jvp`) needs `"sequential"`. Other cells run one step
        at a time and accept only `"auto"` and `"sequential"`.
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
    final, _ = scan_with_final(
        cell,
        inputs,
        hidden,
        length=length,
        reverse=reverse,
        resets=resets,
        unroll=unroll,
        checkpoint=checkpoint,
        key=key,
        stack=False,
        where="scan_last",
        mode=mode,
        check_finite=check_finite,
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
    mode: Mode = "auto",
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
        For a linear cell each chunk's coefficients and scan are recomputed.
    - `key`: a `jax.random` key, split into one key per step and passed to the cell
        as `key=`. For stochastic cells; the built-in cells ignore it.
    - `mode`: how a cell whose recurrence is linear in its state (`MinGRU`,
        `MinLSTM`, `LRU`, `RGLRU`, any `eqrnn.AbstractLinearCell`) is run over
        time: `"sequential"` (a `jax.lax.scan` over its coefficients),
        `"associative"` (`jax.lax.associative_scan`, depth `log2(time)`),
        `"chunked"` (associative within chunks, sequential across them) or `"auto"`
        (sequential on CPU, associative on GPU and TPU); see `eqrnn.linear_scan`.
        Every mode gives the step-by-step results up to rounding; forward-mode
        differentiation (`jax.jvp`) needs `"sequential"`. Other cells run one step
        at a time and accept only `"auto"` and `"sequential"`.
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
    _, hiddens = scan_with_final(
        cell,
        inputs,
        hidden,
        length=length,
        reverse=reverse,
        resets=resets,
        unroll=unroll,
        checkpoint=checkpoint,
        key=key,
        stack=True,
        where="scan_all_hidden",
        mode=mode,
        check_finite=check_finite,
    )
    return hiddens
