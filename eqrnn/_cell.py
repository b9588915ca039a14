"""The interfaces of eqrnn's cells: what every cell gives (`AbstractCell`), and the
capabilities a strategy may ask of one (a faster step, per-unit Jacobians, a parallel
form over a chunk). This module imports no strategy: the strategies import it."""

import abc
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Hidden, HiddenLike, Input
from ._jacobians import pointwise_jacobians
from ._loop import Plan
from ._misc import (
    check_bool,
    check_hidden,
    check_input,
    check_same_dtype,
    check_size,
    gate_kernels,
    optional_bias,
    resolve_dtype,
)


class AbstractCell(eqx.Module):
    """One step of a recurrent cell for one example, and its loop over one sequence.

    Every eqrnn cell is called as `cell(input, hidden, *, key=None) -> hidden`, like
    `equinox.nn.GRUCell`, and splits that step in two so that the input-side work
    can leave the time loop:

    - `project_inputs(inputs)` maps inputs of shape `(..., input_size)` to
      everything the step needs from the input alone (for the built-in cells,
      `inputs @ weight_ih.T + bias`), so a whole sequence costs one matmul;
    - `step(projected, hidden)` does the rest of one time step.

    `cell(input, hidden)` is exactly `cell.step(cell.project_inputs(input), hidden)`
    after checking the arguments. A cell also says what its hidden state is
    (`hidden_shapes`, `output`).

    That is all the sequential mode needs: `scan_last`, `scan_all_hidden` and the
    layers run any cell one step after another. The other modes ask for a
    capability, an interface the cell subclasses as well: `AbstractLinearCell` (a
    recurrence linear in the state: the associative and chunked modes),
    `AbstractNewtonCell` (per-unit Jacobians for `eqrnn.Newton`), `AbstractStepCell`
    (a faster form of the step inside the loop).
    """

    input_size: eqx.AbstractVar[int]
    hidden_size: eqx.AbstractVar[int]
    initial_hidden: eqx.AbstractVar[Any]

    @abc.abstractmethod
    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time projected"]:
        """The input-side part of the step, for any number of leading axes.

        **Arguments:**

        - `inputs`: inputs of shape `(..., input_size)`.

        **Returns:**

        What `step` needs from each input, shape `(..., projected)`.
        """

    @abc.abstractmethod
    def step(self, projected: Float[Array, " projected"], hidden: Any) -> Any:
        """One time step from an already projected input.

        **Arguments:**

        - `projected`: `project_inputs` of this step's input.
        - `hidden`: the hidden state from the previous step.

        **Returns:**

        The new hidden state.
        """

    @abc.abstractmethod
    def step_input_shape(self) -> tuple[int, ...] | None:
        """The shape of one step's input, which the scan helpers and layers check.

        **Returns:**

        `(input_size,)` for a vector input (`ConvLSTMCell`: `(*spatial,
        channels)`), or `None` for a cell that does not say (a `CallableCell`
        around a plain function).
        """

    @abc.abstractmethod
    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each array in the hidden state.

        **Returns:**

        One shape per array: `((hidden_size,),)` for a single array, two shapes
        for `LSTMCell`'s `(h, c)`.
        """

    @abc.abstractmethod
    def output(self, hidden: Any) -> Float[Array, " output_size"]:
        """What the layer above sees of a hidden state.

        **Arguments:**

        - `hidden`: a hidden state of this cell.

        **Returns:**

        An array of shape `(output_size,)`: the hidden state itself, or for a cell
        whose state is a tuple, its output part (`LSTMCell`: `h` of `(h, c)`).
        """

    @property
    def dtype(self) -> Any:
        """The dtype of the cell's floating-point parameters (all share one), or
        `None` for a cell without any."""
        leaves = jax.tree.leaves(eqx.filter(self, eqx.is_inexact_array))
        return leaves[0].dtype if leaves else None

    def init_hidden(self) -> Hidden:
        """The starting hidden state: zeros, or what `carry_init` drew at construction.

        **Returns:**

        An array of shape `(hidden_size,)`, or for `LSTMCell` the tuple `(h, c)`.
        """
        if self.initial_hidden is not None:
            return self.initial_hidden
        zeros = tuple(jnp.zeros(s, self.dtype) for s in self.hidden_shapes())
        return zeros[0] if len(zeros) == 1 else zeros  # pyright: ignore[reportReturnType]

    def __call__(
        self, input: Input, hidden: HiddenLike, *, key: PRNGKeyArray | None = None
    ) -> Hidden:
        """One time step.

        **Arguments:**

        - `input`: the input at this step, of shape `step_input_shape()`:
            `(input_size,)`, or `(*spatial, channels)` for `ConvLSTMCell`.
        - `hidden`: the hidden state from the previous step (see `init_hidden`).
        - `key`: ignored by the deterministic built-in cells; accepted for
            compatibility with the rest of the Equinox API. (Keyword only argument.)

        **Returns:**

        The new hidden state, with the same structure and shapes as `hidden`.
        """
        del key
        name = type(self).__name__
        with jax.named_scope(f"eqrnn.{name}"):
            shape = self.step_input_shape()
            if shape is not None:
                check_input(name, shape, input)
            check_hidden(name, hidden, self.hidden_shapes())
            check_same_dtype("input", input, self.dtype, name)
            check_same_dtype("hidden", hidden, self.dtype, name)
            return self.step(self.project_inputs(jnp.asarray(input)), hidden)  # pyright: ignore[reportArgumentType]


class AbstractArrayStateCell(AbstractCell):
    """A cell whose hidden state is one `(hidden_size,)` array, which is also what
    the layer above sees."""

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.hidden_size,),)

    def output(
        self, hidden: Float[Array, " hidden_size"]
    ) -> Float[Array, " hidden_size"]:
        """What the layer above sees: the hidden state itself.

        **Arguments:**

        - `hidden`: a hidden state of this cell.

        **Returns:**

        `hidden`, of shape `(hidden_size,)`.
        """
        return hidden


class AbstractTupleStateCell(AbstractCell):
    """A cell whose hidden state is a tuple of arrays, the first of which is what
    the layer above sees: `(h, c)` of the LSTMs, `(h, c, n, m)` of `SLSTMCell`,
    `(y, x)` of `LRU`."""

    def output(self, hidden: tuple[Any, ...]) -> Float[Array, " *output_shape"]:
        """What the layer above sees: the first array of the hidden state.

        **Arguments:**

        - `hidden`: a hidden state of this cell, a tuple.

        **Returns:**

        `hidden[0]`: `h` of shape `(hidden_size,)` for most cells (`(proj_size,)`
        for an `LSTMCell` with a projection, `(*spatial, hidden_channels)` for
        `ConvLSTMCell`), the output `y` for `LRU`.
        """
        return hidden[0]


class AbstractStepCell(AbstractCell):
    """A cell run over a sequence one step after another, by `jax.lax.scan`.

    On top of `AbstractCell`'s methods it provides `fused_step(hoisted)`: the same
    step in a form that runs faster inside the loop, or `None` to run `step`. Where
    the platform projects inputs before the loop (GPU and TPU,
    `eqrnn._platform.hoists_projection`), the step reads `project_inputs(input)`,
    else the input itself.
    """

    @abc.abstractmethod
    def fused_step(self, hoisted: bool) -> Callable[[Array, Any], Any] | None:
        """`(input, hidden) -> hidden`, the same step as `cell(input, hidden)` in a
        form that runs faster inside a scan, or `None` where the cell has none.

        **Arguments:**

        - `hoisted`: the step takes `project_inputs(input)`, made for every step
            before the loop, in place of `input` (as `step` does).

        **Returns:**

        The step, or `None`. It is made once, before the loop, so that the weights
        it prepares are prepared once.
        """


class AbstractNewtonCell(AbstractCell):
    """A step-by-step cell that gives Newton's method its step's Jacobian per unit,
    so that `Newton("blocks")` and `Newton("diagonal")` run without forming the
    whole Jacobian.

    Its hidden state is an array, or a tuple of arrays, each of `num_units`
    entries; unit `j` is entry `j` of every array.
    """

    @abc.abstractmethod
    def unit_jacobians(
        self, projected: Float[Array, " projected"], hidden: Any
    ) -> Float[Array, "units arrays arrays"]:
        """The per-unit blocks of the step's Jacobian.

        **Arguments:**

        - `projected`: `project_inputs` of this step's input.
        - `hidden`: the state the step starts from.

        **Returns:**

        `J[j, a, b]`: the derivative of entry `j` of array `a` of the new state
        with respect to entry `j` of array `b` of `hidden`, shape
        `(num_units, num_arrays, num_arrays)`.
        """


class AbstractChunkCell(AbstractCell):
    """A cell with parallel forms of its own over a chunk of steps (`MLSTMCell`'s
    chunkwise and associative forms), which `eqrnn.Chunked` and `eqrnn.Associative`
    run. Internal until the chunk form of the delta rule and SSD settles it."""

    @abc.abstractmethod
    def chunk_form(self, plan: Plan) -> Callable[[Any, Any], tuple[Any, Any]]:
        """`run(hidden, (inputs, valid, resets, keys)) -> (final, stacked)` over one
        chunk of steps (the whole sequence unless checkpointed), chunkwise."""

    @abc.abstractmethod
    def associative_form(self, plan: Plan) -> Callable[[Any, Any], tuple[Any, Any]]:
        """The same, every step at once by an associative scan."""


class AbstractStochasticCell(AbstractCell):
    """A cell whose step draws random numbers: the scan helpers' `key=`, split per
    step, reaches it through `keyed_step` (`CallableCell` passes it on to its
    function). Other cells are deterministic and run `step`."""

    @abc.abstractmethod
    def keyed_step(self, projected: Array, hidden: Any, key: Any) -> Any:
        """`step` with this step's `jax.random` key.

        **Arguments:**

        - `projected`: `project_inputs` of this step's input.
        - `hidden`: the hidden state from the previous step.
        - `key`: this step's key.

        **Returns:**

        The new hidden state.
        """


class AbstractPointwiseCell(AbstractNewtonCell):
    """A cell whose step is `_pointwise(projected, weight_hh @ h, hidden)`, `h` the
    first array of `hidden`, where unit `j` of the new state reads only unit `j` of
    the recurrent pre-activations and of `hidden` (the gated cells: each gate of
    unit `j` reads row `j` of its block of `weight_hh`). Its per-unit Jacobians
    follow from that structure (`eqrnn._jacobians.pointwise_jacobians`)."""

    weight_hh: eqx.AbstractVar[Array]

    @abc.abstractmethod
    def _pointwise(self, projected: Array, recurrent: Array, hidden: Any) -> Any:
        """The step after the recurrent matmul `recurrent = weight_hh @ h`."""

    def unit_jacobians(
        self, projected: Float[Array, " projected"], hidden: Any
    ) -> Float[Array, "units arrays arrays"]:
        h = hidden[0] if isinstance(hidden, tuple) else hidden
        return pointwise_jacobians(
            functools.partial(self._pointwise, projected),
            self.weight_hh @ h,
            self.weight_hh,
            hidden,
        )


class AbstractAffineInputCell(AbstractCell):
    """A cell whose input projection is `weight_ih @ x + bias`, gates stacked on
    axis 0 of `weight_ih` in PyTorch's layout."""

    weight_ih: eqx.AbstractVar[Array]
    bias: eqx.AbstractVar[Array | None]

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time projected"]:
        return affine(inputs, self.weight_ih, self.bias)

    def step_input_shape(self) -> tuple[int, ...]:
        return (self.input_size,)


class AbstractStackedGatesCell(AbstractStepCell, AbstractAffineInputCell):
    """A step-by-step cell whose input projection is `weight_ih @ x + bias`, gates
    stacked on axis 0 of its weights in PyTorch's layout."""

    weight_hh: eqx.AbstractVar[Array]
    use_bias: eqx.AbstractVar[bool]


def stacked_gates(
    where: str,
    input_size: int,
    hidden_size: int,
    num_gates: int,
    use_bias: bool,
    kernel_init: Callable[..., Array],
    recurrent_kernel_init: Callable[..., Array],
    bias_init: Callable[..., Array],
    dtype: Any,
    keys: tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray],
    recurrent_size: int | None = None,
) -> tuple[int, int, Any, Array, Array, Array | None]:
    """For a stacked-gates cell's `__init__`: the checked `input_size` and
    `hidden_size`, the resolved `dtype`, and `weight_ih`, `weight_hh` (reading
    `recurrent_size` entries, default `hidden_size`) and `bias`, drawn from
    `keys = (input key, recurrent key, bias key)`."""
    dtype = resolve_dtype(dtype, where)
    ikey, hkey, bkey = keys
    input_size, hidden_size, weight_ih, bias = input_gates(
        where, input_size, hidden_size, num_gates, use_bias, kernel_init, bias_init,
        dtype, ikey, bkey,
    )  # fmt: skip
    recurrent_size = hidden_size if recurrent_size is None else recurrent_size
    weight_hh = gate_kernels(
        recurrent_kernel_init, hkey, recurrent_size, hidden_size, num_gates, dtype
    )
    return input_size, hidden_size, dtype, weight_ih, weight_hh, bias


def input_gates(
    where: str,
    input_size: int,
    hidden_size: int,
    num_gates: int,
    use_bias: bool,
    kernel_init: Callable[..., Array],
    bias_init: Callable[..., Array],
    dtype: Any,
    wkey: PRNGKeyArray,
    bkey: PRNGKeyArray,
) -> tuple[int, int, Array, Array | None]:
    """Checked sizes, `weight_ih` `(num_gates * hidden_size, input_size)` (from
    `wkey`) and `bias` (from `bkey`, or `None`) of gates that read the input."""
    input_size = check_size("input_size", input_size)
    hidden_size = check_size("hidden_size", hidden_size)
    check_bool(where, "use_bias", use_bias)
    weight_ih = gate_kernels(
        kernel_init, wkey, input_size, hidden_size, num_gates, dtype
    )
    bias = optional_bias(use_bias, bias_init, bkey, num_gates * hidden_size, dtype)
    return input_size, hidden_size, weight_ih, bias


def affine(
    inputs: Float[Array, "*time input_size"],
    weight: Float[Array, "out input_size"],
    bias: Float[Array, " out"] | None,
) -> Float[Array, "*time out"]:
    """`inputs @ weight.T + bias` over any number of leading axes: the input
    projection of every cell whose gates are linear maps of the input."""
    out = inputs @ weight.T
    return out if bias is None else out + bias


def initial_hidden(
    carry_init: Callable[..., Array] | None,
    key: PRNGKeyArray,
    shapes: tuple[tuple[int, ...], ...],
    dtype: Any,
) -> Any:
    """The starting hidden state drawn from `carry_init`, or `None` for zeros."""
    if carry_init is None:
        return None
    keys = jr.split(key, len(shapes))
    arrays = tuple(
        jnp.asarray(carry_init(k, s, dtype), dtype)
        for k, s in zip(keys, shapes, strict=True)
    )
    return arrays[0] if len(arrays) == 1 else arrays  # pyright: ignore[reportReturnType]


def has_default_nonlinearities(
    activation_fn: Callable[..., Any], gate_fn: Callable[..., Any] = jax.nn.sigmoid
) -> bool:
    """Whether a built-in cell's fused step computes its step: its nonlinearities
    are the defaults, `jax.nn.sigmoid` and `jnp.tanh` (the fused steps hard-code
    them)."""
    return gate_fn is jax.nn.sigmoid and activation_fn is jnp.tanh


default_kernel_init = jax.nn.initializers.lecun_normal()
default_recurrent_kernel_init = jax.nn.initializers.orthogonal()
default_bias_init = jax.nn.initializers.zeros
