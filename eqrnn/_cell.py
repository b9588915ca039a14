"""The interface every eqrnn cell implements."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Hidden, HiddenLike, Input
from ._misc import (
    check_hidden,
    check_input,
    check_same_dtype,
    check_size,
    gate_kernels,
    make_bias,
    resolve_dtype,
)


class AbstractCell(eqx.Module):
    """One step of a recurrent cell, for one example.

    Every eqrnn cell is called as `cell(input, hidden, *, key=None) -> hidden`, like
    `equinox.nn.GRUCell`, and splits that step in two so that the scan helpers can
    hoist the input-side work out of the time loop:

    - `project_inputs(inputs)` maps inputs of shape `(..., input_size)` to
      everything the step needs from the input alone (for the built-in cells,
      `inputs @ weight_ih.T + bias`), so a whole sequence costs one matmul;
    - `step(projected, hidden)` does the rest of one time step.

    `cell(input, hidden)` is exactly `cell.step(cell.project_inputs(input), hidden)`
    after checking the arguments.
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

    def _fused_step(self, hoisted: bool = False) -> Callable[[Array, Any], Any] | None:
        """`(input, hidden) -> hidden`, the same step as `cell(input, hidden)` in a
        form that runs faster inside a scan (see `eqrnn._fused`), or `None` where
        this cell has none. With `hoisted`, it takes `project_inputs(input)` (made
        for every step before the loop) in place of `input`, as `step` does. The
        scan helpers call this once, before the time loop, so that the weights it
        prepares are prepared once."""
        del hoisted
        return None

    def _can_fuse(self, cls: type) -> bool:
        """Whether `cls`'s fused step computes this cell's step: its nonlinearities
        are the defaults (`gate_fn` sigmoid, `activation_fn` tanh, where it has
        them), and it is `cls` or a subclass that overrides neither `step` nor
        `project_inputs`."""
        kind = type(self)
        return (
            getattr(self, "gate_fn", jax.nn.sigmoid) is jax.nn.sigmoid
            and getattr(self, "activation_fn", jnp.tanh) is jnp.tanh
            and kind.step is cls.step
            and kind.project_inputs is cls.project_inputs
        )

    def hidden_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each array in the hidden state: one `(hidden_size,)` array
        unless a cell says otherwise (LSTM: `(h, c)`)."""
        return ((self.hidden_size,),)

    @property
    def dtype(self) -> Any:
        """The dtype of the cell's parameters (all share one)."""
        return jax.tree.leaves(eqx.filter(self, eqx.is_inexact_array))[0].dtype

    def init_hidden(self) -> Hidden:
        """The starting hidden state: zeros, or what `carry_init` drew at construction.

        **Returns:**

        An array of shape `(hidden_size,)`, or for `LSTMCell` the tuple `(h, c)`.
        """
        if self.initial_hidden is not None:
            return self.initial_hidden
        zeros = tuple(jnp.zeros(s, self.dtype) for s in self.hidden_shapes())
        return zeros[0] if len(zeros) == 1 else zeros  # pyright: ignore[reportReturnType]

    def output(self, hidden: Hidden) -> Float[Array, " output_size"]:
        """What the layer above sees of a hidden state: `h` (identity here).

        **Arguments:**

        - `hidden`: a hidden state of this cell.

        **Returns:**

        An array of shape `(hidden_size,)` (`(proj_size,)` for a projecting LSTM).
        """
        return hidden  # pyright: ignore[reportReturnType]

    def __call__(
        self, input: Input, hidden: HiddenLike, *, key: PRNGKeyArray | None = None
    ) -> Hidden:
        """One time step.

        **Arguments:**

        - `input`: the input at this step, shape `(input_size,)`.
        - `hidden`: the hidden state from the previous step (see `init_hidden`).
        - `key`: ignored by the deterministic built-in cells; accepted for
            compatibility with the rest of the Equinox API. (Keyword only argument.)

        **Returns:**

        The new hidden state, with the same structure and shapes as `hidden`.
        """
        del key
        name = type(self).__name__
        with jax.named_scope(f"eqrnn.{name}"):
            check_input(name, self.input_size, input)
            check_hidden(name, hidden, self.hidden_shapes())
            check_same_dtype("input", input, self.dtype, name)
            check_same_dtype("hidden", hidden, self.dtype, name)
            return self.step(self.project_inputs(jnp.asarray(input)), hidden)  # pyright: ignore[reportArgumentType]


def make_initial_hidden(
    carry_init: Callable[..., Array] | None,
    key: PRNGKeyArray,
    shapes: tuple[tuple[int, ...], ...],
    dtype: Any,
) -> Hidden | None:
    """Draw the starting hidden state from `carry_init`, or `None` for zeros."""
    if carry_init is None:
        return None
    keys = jr.split(key, len(shapes))
    arrays = tuple(
        jnp.asarray(carry_init(k, s, dtype), dtype)
        for k, s in zip(keys, shapes, strict=True)
    )
    return arrays[0] if len(arrays) == 1 else arrays  # pyright: ignore[reportReturnType]


def init_input_gates(
    cell: AbstractCell,
    *,
    input_size: int,
    hidden_size: int,
    num_gates: int,
    use_bias: bool,
    kernel_init: Callable[..., Array],
    bias_init: Callable[..., Array],
    carry_init: Callable[..., Array] | None,
    dtype: Any,
    keys: tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray],
    **settings: Any,
) -> Any:
    """For the `__init__` of a cell whose gates read `weight_ih @ x + bias`: check
    the sizes and `use_bias`, then set `input_size`, `hidden_size`, `use_bias`, the
    `settings`, `weight_ih` (`num_gates` blocks), `bias` and `initial_hidden`, drawn
    with `keys = (weight key, bias key, carry key)`. Returns the resolved dtype."""
    name = type(cell).__name__
    input_size = check_size("input_size", input_size)
    hidden_size = check_size("hidden_size", hidden_size)
    if not isinstance(use_bias, bool):
        raise TypeError(f"{name}: `use_bias` must be a bool, got {use_bias!r}.")
    dtype = resolve_dtype(dtype)
    wkey, bkey, ckey = keys
    cell.input_size = input_size
    cell.hidden_size = hidden_size
    cell.use_bias = use_bias  # pyright: ignore[reportAttributeAccessIssue]
    for setting, value in settings.items():
        setattr(cell, setting, value)
    cell.weight_ih = gate_kernels(  # pyright: ignore[reportAttributeAccessIssue]
        kernel_init, wkey, input_size, hidden_size, num_gates, dtype
    )
    size = num_gates * hidden_size
    cell.bias = make_bias(bias_init, bkey, size, dtype) if use_bias else None  # pyright: ignore[reportAttributeAccessIssue]
    cell.initial_hidden = make_initial_hidden(
        carry_init, ckey, cell.hidden_shapes(), dtype
    )
    return dtype


default_kernel_init = jax.nn.initializers.lecun_normal()
default_recurrent_kernel_init = jax.nn.initializers.orthogonal()
default_bias_init = jax.nn.initializers.zeros


class StackedGatesCell(AbstractCell):
    """A cell whose input projection is `weight_ih @ x + bias`, gates stacked on
    axis 0 of its weights in PyTorch's layout. Its hidden state is one array unless
    `hidden_shapes` says otherwise."""

    weight_ih: eqx.AbstractVar[Array]
    weight_hh: eqx.AbstractVar[Array]
    bias: eqx.AbstractVar[Array | None]
    use_bias: eqx.AbstractVar[bool]

    def _init_parameters(
        self,
        *,
        input_size: int,
        hidden_size: int,
        num_gates: int,
        use_bias: bool,
        kernel_init: Callable[..., Array],
        recurrent_kernel_init: Callable[..., Array],
        bias_init: Callable[..., Array],
        carry_init: Callable[..., Array] | None,
        dtype: Any,
        key: PRNGKeyArray,
        recurrent_size: int | None = None,
        **settings: Any,
    ) -> None:
        """Check the sizes, draw the weights and set every field; for `__init__`."""
        ikey, hkey, bkey, ckey = jr.split(key, 4)
        dtype = init_input_gates(
            self,
            input_size=input_size,
            hidden_size=hidden_size,
            num_gates=num_gates,
            use_bias=use_bias,
            kernel_init=kernel_init,
            bias_init=bias_init,
            carry_init=carry_init,
            dtype=dtype,
            keys=(ikey, bkey, ckey),
            **settings,
        )
        self.weight_hh = gate_kernels(
            recurrent_kernel_init,
            hkey,
            self.hidden_size if recurrent_size is None else recurrent_size,
            self.hidden_size,
            num_gates,
            dtype,
        )

    def project_inputs(
        self, inputs: Float[Array, "*time input_size"]
    ) -> Float[Array, "*time projected"]:
        return affine(inputs, self.weight_ih, self.bias)


def affine(
    inputs: Float[Array, "*time input_size"],
    weight: Float[Array, "out input_size"],
    bias: Float[Array, " out"] | None,
) -> Float[Array, "*time out"]:
    """`inputs @ weight.T + bias` over any number of leading axes: the input
    projection of every cell whose gates are linear maps of the input."""
    out = inputs @ weight.T
    return out if bias is None else out + bias
