"""Whole-sequence layers on top of the scan helpers, one sequence at a time."""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray, PyTree, Shaped

from ._adapter import as_cell, input_shape_of
from ._custom_types import AnyHiddenLike, Inputs, Length
from ._misc import check_key, describe_shape, speed_setting
from ._modes import AbstractMode, ScanMode
from ._platform import Unroll
from ._scan import ScanOptions, check_length, check_sequence, run_scan


def flip_sequence(
    inputs: Shaped[ArrayLike, "time ..."], length: Length | None = None
) -> Shaped[Array, "time ..."]:
    """Reverse the first `length` steps of a sequence and leave the padding after them
    in place (Flax's `flip_sequences`, for one sequence; `jax.vmap` it for a batch).

    !!! example

        ```python
        >>> import jax, jax.numpy as jnp, eqrnn
        >>> inputs = jnp.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]], dtype=jnp.int32)
        >>> lengths = jnp.array([1, 2, 3])
        >>> jax.vmap(eqrnn.flip_sequence)(inputs, lengths)
        Array([[1, 0, 0],
               [3, 2, 0],
               [6, 5, 4]], dtype=int32)

        ```

    **Arguments:**

    - `inputs`: one sequence, time on axis 0, any dtype and trailing axes.
    - `length`: the number of valid steps, an integer in `[0, time]`; default all.

    **Returns:**

    An array like `inputs` whose step `t < length` is step `length - 1 - t` of
    `inputs`, and whose other steps are those of `inputs`.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 1:
        raise ValueError(
            "flip_sequence: `inputs` must have a time axis (axis 0), got a scalar."
        )
    num_steps = inputs.shape[0]
    length = check_length(length, num_steps, "flip_sequence")
    if length is None:
        return jnp.flip(inputs, axis=0)
    t = jnp.arange(num_steps, dtype=length.dtype)
    return inputs[jnp.where(t < length, length - 1 - t, t)]


def _check_static(where: str, **flags: Any) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{where}: `{name}` must be a bool, got {value!r}.")


class RNN(eqx.Module):
    """A cell run over a whole sequence, as Flax NNX's `nnx.RNN`, for one sequence.

    !!! example

        ```python
        rnn = eqrnn.RNN(eqrnn.GRUCell(3, 8, key=jax.random.key(0)))
        outputs = rnn(jnp.ones((10, 3)), length=7)  # (10, 8), zero after step 7
        ```
    """

    cell: Callable[..., Any]
    reverse: bool = eqx.field(static=True)
    keep_order: bool = eqx.field(static=True)
    return_hidden: bool = eqx.field(static=True)
    unroll: Unroll = speed_setting()
    checkpoint: bool | int = speed_setting()
    mode: AbstractMode = speed_setting()
    check_finite: bool = speed_setting()

    def __init__(
        self,
        cell: Callable[..., Any],
        *,
        reverse: bool = False,
        keep_order: bool = False,
        return_hidden: bool = False,
        unroll: Unroll = "auto",
        checkpoint: bool | int = False,
        mode: ScanMode = "auto",
        check_finite: bool = False,
    ):
        """**Arguments:**

        - `cell`: an eqrnn cell, or any callable `cell(input, hidden, *, key=None)`
            (e.g. `equinox.nn.GRUCell`).
        - `reverse`: run from the last valid step to the first.
        - `keep_order`: with `reverse=True`, return the outputs aligned with the
            inputs (`outputs[t]` belongs to `inputs[t]`). Without it they come in the
            order they were computed, `outputs[0]` belonging to the last valid step,
            as in Flax (padding stays at the end either way).
        - `return_hidden`: also return the final hidden state.
        - `unroll`: as in `scan_all_hidden`: steps unrolled per iteration of
            `jax.lax.scan`, `"auto"` (the default) for the platform's choice.
        - `checkpoint`: as in `scan_all_hidden`: recompute in the backward pass,
            memory growing as `sqrt(time)`.
        - `mode`: as in `scan_all_hidden`: how the cell runs over time, a mode
            object (`eqrnn.Auto()`, `eqrnn.Sequential()`, `eqrnn.Associative()`,
            `eqrnn.Chunked()`, `eqrnn.Newton(...)`) or its name; kept as the
            object (`rnn.mode`).
        - `check_finite`: as in `scan_all_hidden`: raise, naming the step, when a
            hidden state becomes NaN or inf (a debugging aid).
        """
        if not callable(cell):
            raise TypeError(f"RNN: `cell` must be callable, got {type(cell).__name__}.")
        if isinstance(cell, RNN | Bidirectional | StackedRNN):
            name = type(cell).__name__
            raise TypeError(
                f"RNN: `cell` must be a cell (one step), got an {name}, a layer that "
                "runs whole sequences. Use the layer itself"
                + (", or its cell: `eqrnn.RNN(layer.cell)`" if name == "RNN" else "")
                + "; to stack layers, `eqrnn.StackedRNN([...])`."
            )
        _check_static("RNN", keep_order=keep_order, return_hidden=return_hidden)
        options = ScanOptions(
            "RNN", reverse, unroll, checkpoint, mode, check_finite, layer=True
        )
        options.check_cell(cell)
        self.cell = cell
        self.reverse = reverse
        self.keep_order = keep_order
        self.return_hidden = return_hidden
        self.unroll = unroll
        self.checkpoint = checkpoint
        self.mode = options.mode
        self.check_finite = check_finite

    def run(
        self,
        inputs: Inputs,
        hidden: PyTree[Float[ArrayLike, "..."]] | None = None,
        *,
        length: Length | None = None,
        resets: Bool[ArrayLike, " time"] | None = None,
        key: PRNGKeyArray | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ) -> tuple[Float[Array, " time *output_shape"], PyTree[Float[Array, "..."]]]:
        """`(outputs, final_hidden)`, whatever `return_hidden` says; `reverse` and
        `keep_order` override the layer's own settings (as `Bidirectional` needs).

        **Arguments:**

        - `inputs`, `hidden`, `length`, `resets`, `key`: as for `__call__`.
        - `reverse`: the direction to run in; default the layer's own.
        - `keep_order`: whether reversed outputs stay aligned with the inputs;
            default the layer's own.

        **Returns:**

        The outputs of every step, shape `(time, output_size)`, and the final hidden
        state.
        """
        return self._run(
            inputs,
            hidden,
            length=length,
            resets=resets,
            key=key,
            reverse=reverse,
            keep_order=keep_order,
        )

    def _run(
        self,
        inputs: Inputs,
        hidden: PyTree[Float[ArrayLike, "..."]] | None,
        *,
        length: Any,
        resets: Bool[ArrayLike, " time"] | None,
        key: PRNGKeyArray | None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        length_checked: bool = False,
    ) -> tuple[Float[Array, " time *output_shape"], PyTree[Float[Array, "..."]]]:
        """`run`; with `length_checked`, the caller has checked `length`."""
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order
        options = ScanOptions(
            "RNN",
            reverse,
            self.unroll,
            self.checkpoint,
            self.mode,
            self.check_finite,
            layer=True,
        )
        cell = as_cell(self.cell, hidden, "RNN")
        final, hiddens = run_scan(
            cell,
            inputs,
            hidden,
            options,
            length=length,
            resets=resets,
            key=key,
            stack=True,
            length_checked=length_checked,
        )
        outputs = jax.vmap(cell.output)(hiddens)
        if reverse and not keep_order:
            outputs = flip_sequence(outputs, length)
        return outputs, final

    def init_hidden(self) -> PyTree[Float[Array, "..."]]:
        """The cell's starting state (`cell.init_hidden()`).

        **Returns:**

        The hidden state the layer starts from when `hidden` is not given.
        """
        return as_cell(self.cell, None, "RNN.init_hidden").init_hidden()

    def step(
        self,
        input: Float[ArrayLike, " *input_shape"],
        hidden: PyTree[Float[ArrayLike, "..."]],
        *,
        reset: bool | Bool[ArrayLike, ""] = False,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " *output_shape"], PyTree[Float[Array, "..."]]]:
        """One step for streaming inference: feed steps one at a time, carrying the
        hidden state yourself, and get what `__call__` gives for the whole sequence
        (`resets` included): the step runs through the same scan, one step long.
        On the CPU a step-by-step cell gives the same numbers bit for bit; where
        the whole sequence's inputs are projected in one matmul (linear cells, GPU
        and TPU) that matmul may round differently, by float32 rounding. Jit it
        once and call it per step.

        !!! example

            ```python
            rnn = eqrnn.RNN(eqrnn.GRUCell(3, 8, key=jax.random.key(0)))
            step = eqx.filter_jit(lambda rnn, x, h, r: rnn.step(x, h, reset=r))
            hidden = rnn.init_hidden()
            for x, done in [(jnp.ones(3), False), (jnp.zeros(3), True)]:  # a stream
                output, hidden = step(rnn, x, hidden, done)
            ```

        **Arguments:**

        - `input`: one step's input, shape `(input_size,)`.
        - `hidden`: the state after the previous step (`init_hidden()` at first).
        - `reset`: start again from `init_hidden()` before this step (an episode
            boundary), as `resets[t]` does in `__call__`.
        - `key`: for stochastic cells, as `__call__`'s `key` for a one-step
            sequence.

        **Returns:**

        `(output, hidden)`: this step's output and the new hidden state.
        """
        if self.reverse:
            raise ValueError(
                "RNN.step: a `reverse=True` layer reads the sequence backwards and "
                "cannot be streamed one step at a time."
            )
        input = _check_step_input(self, input, "RNN.step", "input")
        if jnp.ndim(reset) != 0:
            raise ValueError(
                f"RNN.step: `reset` must be one flag for this step, a bool or a "
                f"scalar boolean array, got shape {jnp.shape(reset)}. For a batch "
                "of streams, `jax.vmap(lambda x, h, r: rnn.step(x, h, reset=r))"
                "(inputs, hiddens, resets)`."
            )
        # A one-step sequence through the scan: the same computation as each step
        # of `__call__`, so streaming gives its numbers bit for bit.
        outputs, final = self._run(
            input[None],
            hidden,
            length=None,
            resets=jnp.asarray(reset, bool)[None],
            key=key,
            reverse=False,
            keep_order=None,
        )
        return outputs[0], final

    def __call__(
        self,
        inputs: Inputs,
        hidden: PyTree[Float[ArrayLike, "..."]] | None = None,
        *,
        length: Length | None = None,
        resets: Bool[ArrayLike, " time"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> (
        Float[Array, " time *output_shape"]
        | tuple[Float[Array, " time *output_shape"], PyTree[Float[Array, "..."]]]
    ):
        """**Arguments:**

        - `inputs`: one sequence, shape `(time, input_size)`.
        - `hidden`: the starting state; default `cell.init_hidden()`.
        - `length`: the number of valid steps; the rest is padding, skipped, and zero
            in the outputs.
        - `resets`: booleans of shape `(time,)`: start again from
            `cell.init_hidden()` at these steps.
        - `key`: passed on, one key per step, to stochastic cells.

        **Returns:**

        The outputs (`cell.output` of every step's hidden state), shape `(time,
        output_size)`; with `return_hidden=True`, the tuple `(outputs,
        final_hidden)`.
        """
        outputs, final = self._run(
            inputs, hidden, length=length, resets=resets, key=key
        )
        return (outputs, final) if self.return_hidden else outputs


class _Merge:
    """A built-in merge of `Bidirectional`, shown by its name (one instance per
    name, so identity is equality)."""

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn: Callable[[Array, Array], Array]):
        self.name, self.fn = name, fn

    def __call__(self, a: Array, b: Array) -> Array:
        return self.fn(a, b)

    def __repr__(self) -> str:
        return repr(self.name)


def _concat_last(a: Array, b: Array) -> Array:
    return jnp.concatenate([a, b], axis=-1)


def _mean(a: Array, b: Array) -> Array:
    return (a + b) / 2


_concatenate = _Merge("concat", _concat_last)
_MERGES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": _concatenate,
    "sum": _Merge("sum", jnp.add),
    "mean": _Merge("mean", _mean),
    "product": _Merge("product", jnp.multiply),
}


_ELEMENTWISE = (_MERGES["sum"], _MERGES["mean"], _MERGES["product"])


def _input_shape(layer: Any) -> tuple[int, ...] | None:
    """The shape of one step's input that an `RNN` or `Bidirectional` reads, where
    its cell says."""
    rnn = layer.forward if isinstance(layer, Bidirectional) else layer
    return input_shape_of(rnn.cell)


def _output_size(rnn: "RNN") -> int | None:
    """The number of values an `RNN` outputs per step, where its cell says."""
    shapes = getattr(rnn.cell, "hidden_shapes", None)
    if shapes is not None:
        return math.prod(shapes()[0])
    return getattr(rnn.cell, "hidden_size", None)


class Bidirectional(eqx.Module):
    """Two `RNN`s over one sequence, one forwards and one backwards, merged per step,
    as Flax NNX's `nnx.Bidirectional` and PyTorch's `bidirectional=True`.

    The backward RNN runs over the valid part only, from its last step to its first;
    its outputs are aligned with the inputs before merging, so `outputs[t]` merges
    both directions' states at step `t`. Padded steps are zero.

    !!! example

        ```python
        k1, k2 = jax.random.split(jax.random.key(0))
        bi = eqrnn.Bidirectional(
            eqrnn.RNN(eqrnn.LSTMCell(3, 8, key=k1)),
            eqrnn.RNN(eqrnn.LSTMCell(3, 8, key=k2)),
        )
        outputs = bi(jnp.ones((10, 3)), length=7)  # (10, 16)
        ```
    """

    forward: RNN
    backward: RNN
    merge: Callable[[Array, Array], Array] = eqx.field(static=True)
    return_hidden: bool = eqx.field(static=True)

    def __init__(
        self,
        forward: RNN,
        backward: RNN,
        *,
        merge: Literal["concat", "sum", "mean", "product"]
        | Callable[[Array, Array], Array] = "concat",
        return_hidden: bool = False,
    ):
        """**Arguments:**

        - `forward`: the forward `RNN`; it must not have `reverse=True`.
        - `backward`: the backward `RNN`. It always runs backwards with its outputs
            aligned to the inputs, whatever its `reverse` and `keep_order` say (as in
            Flax); its `unroll`, `checkpoint`, `mode` and `check_finite` are used.
        - `merge`: how the two directions' outputs combine per step: `"concat"`
            (default, on the last axis), `"sum"`, `"mean"`, `"product"`, or a
            callable `merge(forward_outputs, backward_outputs)`.
        - `return_hidden`: also return both final hidden states.
        """
        for name, rnn in (("forward", forward), ("backward", backward)):
            if not isinstance(rnn, RNN):
                raise TypeError(
                    f"Bidirectional: `{name}` must be an eqrnn.RNN, got "
                    f"{type(rnn).__name__}. Wrap the cell: `eqrnn.RNN(cell)`."
                )
        if forward.reverse:
            raise ValueError(
                "Bidirectional: `forward` has `reverse=True`; pass an RNN that runs "
                "forwards (the backward direction is `backward`'s job)."
            )
        merge_name = merge
        if isinstance(merge, str):
            if merge not in _MERGES:
                raise ValueError(
                    f"Bidirectional: `merge` must be one of {sorted(_MERGES)} or a "
                    f"callable, got {merge!r}."
                )
            merge = _MERGES[merge]
        elif not callable(merge):
            raise TypeError(
                "Bidirectional: `merge` must be a str or a callable, got "
                f"{type(merge).__name__}."
            )
        _check_static("Bidirectional", return_hidden=return_hidden)
        sizes = (_output_size(forward), _output_size(backward))
        if merge in _ELEMENTWISE and None not in sizes and sizes[0] != sizes[1]:
            raise ValueError(
                f"Bidirectional: merging by {merge_name!r} adds or multiplies the two "
                f"directions' outputs elementwise, but `forward` outputs {sizes[0]} "
                f"and `backward` {sizes[1]} values per step. Use merge='concat', or "
                "cells of the same output size."
            )
        self.forward = forward
        self.backward = backward
        self.merge = merge
        self.return_hidden = return_hidden

    def run(
        self,
        inputs: Inputs,
        hidden: tuple[AnyHiddenLike | None, AnyHiddenLike | None] | None = None,
        *,
        length: Length | None = None,
        resets: Bool[ArrayLike, " time"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " time *output_shape"], tuple[Any, Any]]:
        """`(outputs, (forward_final, backward_final))`, whatever `return_hidden`
        says.

        **Arguments:**

        - `inputs`, `hidden`, `length`, `resets`, `key`: as for `__call__`.

        **Returns:**

        The merged outputs and both final hidden states.
        """
        inputs = check_sequence(
            inputs, "Bidirectional", _input_shape(self.forward), layer=True
        )
        length = check_length(length, inputs.shape[0], "Bidirectional")
        return self._run(
            inputs,
            hidden,
            length=length,
            resets=resets,
            key=key,
            length_checked=True,
        )

    def _run(
        self,
        inputs: Array,
        hidden: tuple[AnyHiddenLike | None, AnyHiddenLike | None] | None,
        *,
        length: Any,
        resets: Bool[ArrayLike, " time"] | None,
        key: PRNGKeyArray | None,
        length_checked: bool,
    ) -> tuple[Float[Array, " time *output_shape"], tuple[Any, Any]]:
        """`run`; with `length_checked`, the caller has checked `length`."""
        if hidden is None:
            hidden = (None, None)
        elif not (isinstance(hidden, tuple) and len(hidden) == 2):
            raise ValueError(
                "Bidirectional: `hidden` must be a pair `(forward_hidden, "
                f"backward_hidden)`, got {type(hidden).__name__}."
            )
        kf, kb = (None, None) if key is None else tuple(jr.split(key))
        out_f, final_f = self.forward._run(
            inputs,
            hidden[0],
            length=length,
            resets=resets,
            key=kf,
            reverse=False,
            keep_order=None,
            length_checked=length_checked,
        )
        out_b, final_b = self.backward._run(
            inputs,
            hidden[1],
            length=length,
            resets=resets,
            key=kb,
            reverse=True,
            keep_order=True,
            length_checked=length_checked,
        )
        return self.merge(out_f, out_b), (final_f, final_b)

    def __call__(
        self,
        inputs: Inputs,
        hidden: tuple[AnyHiddenLike | None, AnyHiddenLike | None] | None = None,
        *,
        length: Length | None = None,
        resets: Bool[ArrayLike, " time"] | None = None,
        key: PRNGKeyArray | None = None,
    ) -> (
        Float[Array, " time *output_shape"]
        | tuple[Float[Array, " time *output_shape"], Any]
    ):
        """**Arguments:**

        - `inputs`: one sequence, shape `(time, input_size)`.
        - `hidden`: `(forward_hidden, backward_hidden)`; default each cell's
            `init_hidden()`.
        - `length`: the number of valid steps; the rest is padding.
        - `resets`: booleans of shape `(time,)`: both directions start again from
            their cell's `init_hidden()` at these steps (the backward one, reading
            the sequence from its end, at the step itself), as each `RNN` does with
            `resets`.
        - `key`: split between the two directions, for stochastic cells.

        **Returns:**

        The merged outputs, shape `(time, output_size)` (`2 * hidden_size` for
        `"concat"`); with `return_hidden=True`, the tuple `(outputs,
        (forward_final, backward_final))`.
        """
        outputs, finals = self.run(
            inputs, hidden, length=length, resets=resets, key=key
        )
        return (outputs, finals) if self.return_hidden else outputs


class StackedRNN(eqx.Module):
    """Layers of `RNN`s or `Bidirectional`s, each reading the outputs of the one
    below, with dropout between layers and optional residual connections: PyTorch's
    `num_layers` / `dropout` / `bidirectional`, for one sequence.

    !!! example

        ```python
        keys = jax.random.split(jax.random.key(0), 2)
        stack = eqrnn.StackedRNN(
            [
                eqrnn.RNN(eqrnn.GRUCell(3, 8, key=keys[0])),
                eqrnn.RNN(eqrnn.GRUCell(8, 8, key=keys[1])),
            ],
            dropout=0.1,
        )
        outputs, finals = stack(jnp.ones((10, 3)), key=jax.random.key(1))
        # outputs (10, 8); finals: one final hidden state per layer
        ```
    """

    layers: tuple[RNN | Bidirectional, ...]
    dropout: float = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    inference: bool

    def __init__(
        self,
        layers: Sequence[RNN | Bidirectional],
        *,
        dropout: float = 0.0,
        residual: bool = False,
        inference: bool = False,
    ):
        """**Arguments:**

        - `layers`: the layers, bottom first; each an `RNN` or a `Bidirectional`.
        - `dropout`: probability of zeroing each output of every layer but the last
            (as PyTorch's `dropout`), scaled by `1 / (1 - dropout)` when kept.
        - `residual`: add each layer's input to its output, for every layer but the
            first (whose input width usually differs), as in GNMT.
        - `inference`: turn dropout off. Like `equinox.nn.Dropout`, this is a
            (non-array) field toggled by `equinox.nn.inference_mode`, so transform a
            `StackedRNN` with `eqx.filter_jit`/`eqx.filter_grad`, not plain
            `jax.jit`/`jax.grad`.
        """
        layers = tuple(layers)
        if not layers:
            raise ValueError("StackedRNN: `layers` must hold at least one layer.")
        for i, layer in enumerate(layers):
            if not isinstance(layer, RNN | Bidirectional):
                raise TypeError(
                    f"StackedRNN: `layers[{i}]` must be an eqrnn.RNN or "
                    f"eqrnn.Bidirectional, got {type(layer).__name__}."
                )
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"StackedRNN: `dropout` must be a float, got {dropout!r}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"StackedRNN: `dropout` must be in [0, 1), got {dropout}.")
        _check_static("StackedRNN", residual=residual, inference=inference)
        self.layers = layers
        self.dropout = float(dropout)
        self.residual = residual
        self.inference = inference

    def __call__(
        self,
        inputs: Inputs,
        hidden: Sequence[AnyHiddenLike | None] | None = None,
        *,
        length: Length | None = None,
        resets: Bool[ArrayLike, " time"] | None = None,
        key: PRNGKeyArray | None = None,
        inference: bool | None = None,
    ) -> tuple[Float[Array, " time *output_shape"], tuple[Any, ...]]:
        """**Arguments:**

        - `inputs`: one sequence, shape `(time, input_size)`.
        - `hidden`: one starting state per layer (`None` entries for the default);
            default every layer's default.
        - `length`: the number of valid steps; the rest is padding, and zero in the
            outputs.
        - `resets`: booleans of shape `(time,)`: every layer starts again from its
            starting state at these steps (episode boundaries), as `step(...,
            reset=True)` does.
        - `key`: for dropout (needed when `dropout > 0` and not in inference) and
            stochastic cells. Under `jax.vmap`, give each example its own key
            (`jax.vmap(lambda x, k: stack(x, key=k))(batch, jax.random.split(key,
            len(batch)))`): one key shared by the batch gives every example the
            same dropout mask.
        - `inference`: overrides the `inference` field for this call.

        **Returns:**

        The last layer's outputs, shape `(time, output_size)`, and a tuple holding
        each layer's final hidden state, bottom first (for a `Bidirectional` layer,
        the pair `(forward_final, backward_final)`).
        """
        num_layers = len(self.layers)
        if hidden is None:
            hidden = (None,) * num_layers
        elif len(hidden) != num_layers:
            raise ValueError(
                f"StackedRNN: `hidden` must hold one state per layer ({num_layers}), "
                f"got {len(hidden)}."
            )
        inputs = check_sequence(
            inputs, "StackedRNN", _input_shape(self.layers[0]), layer=True
        )
        length = check_length(length, inputs.shape[0], "StackedRNN")
        inference = self.inference if inference is None else inference
        use_dropout = self.dropout > 0 and not inference and num_layers > 1
        if use_dropout and key is None:
            raise ValueError(
                "StackedRNN: dropout needs a `key`; pass `key=...`, or switch dropout "
                "off with `inference=True` (or `equinox.nn.inference_mode`)."
            )
        layer_keys = (
            [None] * num_layers if key is None else list(jr.split(key, num_layers))
        )
        valid = None
        if length is not None:
            valid = jnp.arange(inputs.shape[0], dtype=length.dtype) < length
        x = jnp.asarray(inputs)
        finals = []
        for i, (layer, h0, k) in enumerate(
            zip(self.layers, hidden, layer_keys, strict=True)
        ):
            run_key, drop_key = (None, None) if k is None else tuple(jr.split(k))
            expected = _input_shape(layer)
            if expected is not None and tuple(x.shape[1:]) != expected:
                below = "the inputs" if i == 0 else f"layer {i - 1}'s outputs"
                if len(expected) == 1:
                    what = (f"width {expected[0]}", f"width {x.shape[1]}")
                    fix = f"input_size={x.shape[1]}"
                else:
                    what = (f"shape {expected}", f"shape {tuple(x.shape[1:])}")
                    fix = f"input_shape={tuple(x.shape[1:])}"
                raise ValueError(
                    f"StackedRNN: layer {i} reads inputs of {what[0]}, but {below} "
                    f"have {what[1]}. Build layer {i}'s cell with {fix}."
                )
            out, final = layer._run(
                x,
                h0,
                length=length,
                resets=resets,
                key=run_key,
                length_checked=True,
            )
            if self.residual and i > 0:
                if out.shape != jnp.shape(x):
                    raise ValueError(
                        f"StackedRNN: `residual=True` needs layer {i}'s outputs "
                        f"{out.shape} to match its inputs {jnp.shape(x)}."
                    )
                out = out + x
            if use_dropout and i < num_layers - 1:
                assert drop_key is not None
                keep = jr.bernoulli(drop_key, 1 - self.dropout, out.shape)
                out = jnp.where(keep, out / (1 - self.dropout), 0)
            if valid is not None:
                out = jnp.where(valid.reshape(-1, *(1,) * (out.ndim - 1)), out, 0)
            finals.append(final)
            x = out
        return x, tuple(finals)

    def init_hidden(self) -> tuple[Any, ...]:
        """Every layer's starting state, bottom first (for streaming with `step`).

        **Returns:**

        A tuple with one hidden state per layer.
        """
        out = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, RNN):
                raise TypeError(_no_streaming(i))
            out.append(layer.init_hidden())
        return tuple(out)

    def step(
        self,
        input: Float[ArrayLike, " *input_shape"],
        hidden: Sequence[Any],
        *,
        reset: bool | Bool[ArrayLike, ""] = False,
    ) -> tuple[Float[Array, " *output_shape"], tuple[Any, ...]]:
        """One step of every layer, for streaming inference (dropout off): feeding a
        sequence step by step gives what `__call__` gives with `inference=True`.

        **Arguments:**

        - `input`: one step's input, shape `(input_size,)`.
        - `hidden`: every layer's state after the previous step (`init_hidden()` at
            first).
        - `reset`: start every layer again from its starting state before this step.

        **Returns:**

        `(output, hidden)`: the last layer's output and every layer's new state.
        """
        if len(hidden) != len(self.layers):
            raise ValueError(
                f"StackedRNN.step: `hidden` must hold one state per layer "
                f"({len(self.layers)}), got {len(hidden)}."
            )
        x = _check_step_input(self, input, "StackedRNN.step", "input")
        new_hidden = []
        for i, (layer, h) in enumerate(zip(self.layers, hidden, strict=True)):
            if not isinstance(layer, RNN):
                raise TypeError(_no_streaming(i))
            out, h = layer.step(x, h, reset=reset)
            x = out + x if self.residual and i > 0 else out
            new_hidden.append(h)
        return x, tuple(new_hidden)


def _check_step_input(
    layer: "RNN | StackedRNN", input: Any, where: str, name: str
) -> Array:
    """One step's `input` of a streamed layer, checked against its first cell's
    input shape where the cell says it."""
    input = jnp.asarray(input)
    first = layer if isinstance(layer, RNN) else layer.layers[0]
    shape = input_shape_of(first.cell) if isinstance(first, RNN) else None
    if input.ndim != (1 if shape is None else len(shape)) or (
        shape is not None and input.shape != shape
    ):
        expected = "(input_size,)" if shape is None else describe_shape(shape)
        raise ValueError(
            f"{where}: `{name}` must have shape {expected}, one step of one "
            f"sequence, got shape {input.shape}."
            + (
                " For a batch of streams, `jax.vmap(lambda x, h: rnn.step(x, h))"
                "(inputs, hiddens)`."
                if shape is not None and input.shape[1:] == shape
                else ""
            )
        )
    return input


def _no_streaming(i: int) -> str:
    return (
        f"StackedRNN: layer {i} is a Bidirectional, which reads the whole sequence "
        "and cannot be streamed one step at a time."
    )


def generate(
    layer: "RNN | StackedRNN",
    first_input: Float[ArrayLike, " *input_shape"],
    next_input: Callable[[Array, PRNGKeyArray | None], Any],
    num_steps: int,
    hidden: PyTree[Float[ArrayLike, "..."]] | None = None,
    *,
    key: PRNGKeyArray | None = None,
) -> tuple[
    PyTree[Shaped[Array, "time ..."]],
    Float[Array, "time ..."],
    PyTree[Float[Array, "..."]],
]:
    """Run a layer in closed loop: each step's output, through `next_input`, becomes
    the next step's input (sampling from a language model, rolling out a dynamics
    model). One `jax.lax.scan` over `layer.step`, so it jits into one program.

    !!! example

        ```python
        rnn = eqrnn.RNN(eqrnn.GRUCell(3, 3, key=jax.random.key(0)))
        inputs, outputs, hidden = eqrnn.generate(
            rnn, jnp.ones(3), lambda out, key: jnp.tanh(out), num_steps=50
        )  # inputs[t + 1] == tanh(outputs[t])
        ```

    !!! example "A token model: prime with a prompt, get the sampled ids back"

        ```python
        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        embed = eqx.nn.Embedding(20, 4, key=k1)  # token ids -> vectors
        rnn = eqrnn.RNN(eqrnn.GRUCell(4, 16, key=k2))
        head = eqx.nn.Linear(16, 20, key=k3)  # outputs -> logits

        def sample(output, key):
            token = jax.random.categorical(key, head(output))
            return embed(token), token  # (the next input, what to return)

        prompt = jnp.array([3, 1, 4, 1, 5])
        _, hidden = rnn.run(jax.vmap(embed)(prompt[:-1]))  # state after the prompt
        tokens, _, _ = eqrnn.generate(
            rnn, embed(prompt[-1]), sample, 100, hidden, key=jax.random.key(1)
        )  # tokens[t]: the id sampled at step t, the prompt's continuation
        ```

    **Arguments:**

    - `layer`: an `RNN` (not reversed) or a `StackedRNN` of such `RNN`s (dropout
        off, as in `StackedRNN.step`).
    - `first_input`: the first step's input, shape `(input_size,)`.
    - `next_input`: `next_input(output, key)` gives the next step's input from this
        step's output (e.g. a readout, a sample and an embedding), or the pair
        `(input, emitted)`, where `emitted` is any pytree of arrays (the sampled
        token id) that `generate` collects and returns in place of the inputs.
        `key` is `None` unless `key` is given, else a fresh key per step.
    - `num_steps`: how many steps to run.
    - `hidden`: the starting state; default `layer.init_hidden()`. To continue a
        prompt, the final state of `layer.run` over it (see the example).
    - `key`: split into one key per step for `next_input` (and an `RNN`'s cell).

    **Returns:**

    `(inputs, outputs, hidden)`: every step's input (`inputs[0]` is
    `first_input`), every step's output, and the final hidden state. Where
    `next_input` returns `(input, emitted)`, the first element is every step's
    `emitted` instead, stacked on a leading time axis (`emitted[t]` comes from
    `outputs[t]`).
    """
    if not isinstance(layer, RNN | StackedRNN):
        raise TypeError(
            f"generate: `layer` must be an eqrnn.RNN or StackedRNN, got "
            f"{type(layer).__name__}. Wrap a cell: `eqrnn.RNN(cell)`."
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(
            f"generate: `num_steps` must be a non-negative int, got {num_steps!r}."
        )
    first = _check_step_input(layer, first_input, "generate", "first_input")
    if hidden is None:
        hidden = layer.init_hidden()
    keys = None if key is None else jr.split(check_key("generate", key), num_steps)

    def body(carry: Any, step_key: Any) -> tuple[Any, Any]:
        x, h = carry
        if step_key is None:
            cell_key = next_key = None
        else:
            cell_key, next_key = jr.split(step_key)
        if isinstance(layer, RNN):
            out, h = layer.step(x, h, key=cell_key)
        else:
            out, h = layer.step(x, h)
        returned = next_input(out, next_key)
        if isinstance(returned, tuple) and len(returned) == 2:
            new_x, emitted = returned
        elif isinstance(returned, tuple):
            raise ValueError(
                "generate: `next_input` must return the next input or a pair "
                f"`(input, emitted)`, got a tuple of {len(returned)}."
            )
        else:
            new_x, emitted = returned, x
        new_x = jnp.asarray(new_x)
        if new_x.shape != x.shape or new_x.dtype != x.dtype:
            raise ValueError(
                f"generate: `next_input` must return the next input, shape {x.shape} "
                f"and dtype {x.dtype} like `first_input`, got shape {new_x.shape} "
                f"and dtype {new_x.dtype}."
            )
        return (new_x, h), (emitted, out)

    (_, hidden), (emitted, outputs) = jax.lax.scan(
        body, (first, hidden), keys, length=num_steps
    )
    return emitted, outputs, hidden
