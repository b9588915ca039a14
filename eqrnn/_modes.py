"""The `mode` objects: how the scan helpers and layers run a cell's time loop.

One class per strategy, as Lineax has one per solver: `Sequential`, `Associative`,
`Chunked`, `Newton`, and `Auto`, which picks one of the others for a cell and the
platform. Strings (`"auto"`, `"sequential"`, ...) are shorthands, turned into these
objects once, at the public edge (`as_mode`). This module holds the options, the
names and which capability of a cell each mode needs (`supports`); each strategy's
algorithm lives in its own module (`_sequential.py`, `_linear_form.py`,
`_chunkwise.py`, `_newton.py`) and imports this one.
"""

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

import equinox as eqx

from ._cell import AbstractChunkCell
from ._linear_cell import AbstractLinearCell
from ._platform import platform


def _has(cell: Any, *capabilities: type) -> bool:
    """Whether `cell`, a cell or a cell class, has one of the `capabilities`."""
    if isinstance(cell, type):
        return issubclass(cell, capabilities)
    return isinstance(cell, capabilities)


def _runs_in_parallel(cell: Any) -> bool:
    """A cell with a parallel form: a linear recurrence, or a chunk form."""
    return _has(cell, AbstractLinearCell, AbstractChunkCell)


class AbstractMode(eqx.Module):
    """How a scan helper or layer runs the time loop: the base of `eqrnn.Sequential`,
    `eqrnn.Associative`, `eqrnn.Chunked`, `eqrnn.Newton` and `eqrnn.Auto`."""

    if TYPE_CHECKING:
        name: ClassVar[str]
    else:
        # The string that stands for this mode (`mode="sequential"`).
        name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def supports(self, cell: Any) -> bool:
        """Whether this mode runs `cell`.

        **Arguments:**

        - `cell`: a cell, a callable with the cell signature, or a cell class.

        **Returns:**

        `True` where `cell` has the capability the mode needs.
        """


class Sequential(AbstractMode):
    """`mode=eqrnn.Sequential()` (or `"sequential"`): one step after another, by
    `jax.lax.scan`. Every cell runs in it; it is the reference the other modes are
    tested against.

    !!! example

        ```python
        cell = eqrnn.MinGRU(3, 8, key=jax.random.key(0))
        hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)), mode=eqrnn.Sequential())
        ```
    """

    name: ClassVar[str] = "sequential"

    def supports(self, cell: Any) -> bool:
        del cell
        return True


class Associative(AbstractMode):
    """`mode=eqrnn.Associative()` (or `"associative"`): every step at once by
    `jax.lax.associative_scan`, of depth `log2(time)`, for a cell whose recurrence
    is linear in its state (`MinGRU`, `MinLSTM`, `LRU`, `RGLRU`) and `MLSTMCell`.

    !!! example

        ```python
        cell = eqrnn.MinGRU(3, 8, key=jax.random.key(0))
        h = eqrnn.scan_last(cell, jnp.ones((10, 3)), mode=eqrnn.Associative())
        ```
    """

    name: ClassVar[str] = "associative"

    def supports(self, cell: Any) -> bool:
        return _runs_in_parallel(cell)


class Chunked(AbstractMode):
    """`mode=eqrnn.Chunked()` (or `"chunked"`): in parallel within chunks, one step
    per chunk between them; for the linear cells (chunks of 64 steps, associative
    inside) and `MLSTMCell` (its chunkwise form, blocks of 32 steps).

    !!! example

        ```python
        cell = eqrnn.MLSTMCell(3, 8, num_heads=2, key=jax.random.key(0))
        h, C, n, m = eqrnn.scan_last(cell, jnp.ones((10, 3)), mode=eqrnn.Chunked())
        ```
    """

    name: ClassVar[str] = "chunked"

    def supports(self, cell: Any) -> bool:
        return _runs_in_parallel(cell)


LINEARISATIONS = ("auto", "full", "blocks", "diagonal")


class Newton(AbstractMode):
    """`mode=eqrnn.Newton(...)`: evaluate a step-by-step cell in parallel over time
    by Newton's method; `mode="newton"` is `Newton()`.

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        x = jnp.ones((500, 3))
        hs = eqrnn.scan_all_hidden(cell, x, mode=eqrnn.Newton("diagonal"))
        ```

    **Fields:**

    - `linearisation`: what each iteration keeps of the step's Jacobian
        $\\partial h_t / \\partial h_{t-1}$:
        - `"full"`: all of it (DEER; from `jax.jacfwd` of the step): the fewest
          iterations, O(time n^3) work and O(time n^2) memory for a state of
          n entries;
        - `"blocks"`: per unit, the block between the arrays of the state (2x2 for
          `LSTMCell`'s `(h_j, c_j)`; the diagonal for one-array states);
        - `"diagonal"`: its diagonal (quasi-DEER): O(time n), more iterations;
        - `"auto"`: `"full"` up to 32 state entries, else `"blocks"`.

        A cell that subclasses `eqrnn.AbstractNewtonCell` gives its blocks and
        diagonals analytically (the built-in gated cells do, except an `LSTMCell`
        with `proj_size`, whose arrays differ in size); any other takes `"full"`.
    - `max_iterations`: the most iterations of the forward pass and of each
        linear solve of the backward pass. `None` (the default) is the sequence
        length, which is always exact: iteration $k$ makes the first $k$ states
        exact. A smaller cap that is reached before the tolerance raises (an
        `eqx.error_if`, inside `jax.jit` a `JaxRuntimeError`): the result is never
        silently inexact.
    - `tol`: the tolerance on the residual $\\max_t |h_t - f(x_t, h_{t-1})|$,
        relative to $\\max(1, \\max_t |h_t|)$; `None` is twice the dtype's
        epsilon. A residual that stops falling within 64 times the tolerance has
        reached rounding's floor and counts as converged too.
    - `damping`: divide the linearisation by `1 + damping` (a trust region in
        the spirit of ELK): `0` is Newton's method, large values approach
        Picard's iteration (`A_t = 0`), which never amplifies a correction but
        makes only one more step exact per iteration. For dynamics where the
        corrections overflow. Any damping keeps the exactness after `time`
        iterations.

    Memory: the backward pass keeps every step's state and the step's
    linearisation at it, as the sequential scan keeps its residuals, and the
    iterations hold a few more `(time, n)` buffers, so it needs a few times the
    sequential scan's memory with blocks or diagonals and far more with the full
    Jacobian (measured in BENCHMARKS.md). `checkpoint` does not lower it (every
    state is needed by the method itself).

    Newton pays when a step is cheap next to its launch overhead (an accelerator,
    long sequences, modest hidden sizes) and the dynamics forget quickly. On a CPU
    it is slower than the step-by-step scan, and `eqrnn.Auto` never picks it. Cells
    whose dynamics amplify perturbations (large recurrent weights, chaotic
    regimes) need many iterations, up to the sequence length: then every iteration
    costs a parallel pass and the result is still exact, but slow.
    `eqrnn.newton_iterations` tells how many a given input takes. Its linear solves
    run by the engine `eqrnn.Auto` picks for a linear cell on the platform.
    """

    name: ClassVar[str] = "newton"
    # Static: options of the algorithm, read in Python when it is traced (so a
    # `Newton` passes through `jax.jit` with no leaves).
    linearisation: str = eqx.field(default="auto", static=True)
    max_iterations: int | None = eqx.field(default=None, static=True)
    tol: float | None = eqx.field(default=None, static=True)
    damping: float = eqx.field(default=0.0, static=True)

    def supports(self, cell: Any) -> bool:
        # A cell with a parallel form runs in parallel already.
        return not _runs_in_parallel(cell)

    def __check_init__(self) -> None:
        if self.linearisation not in LINEARISATIONS:
            raise ValueError(
                "Newton: `linearisation` must be one of 'auto', 'full', 'blocks' or "
                f"'diagonal', got {self.linearisation!r}."
            )
        cap = self.max_iterations
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, int) or cap < 1
        ):
            raise ValueError(
                "Newton: `max_iterations` must be a positive int or None (the "
                f"sequence length, always exact), got {cap!r}."
            )
        damping = self.damping
        if (
            isinstance(damping, bool)
            or not isinstance(damping, (int, float))
            or not damping >= 0
        ):
            raise ValueError(
                "Newton: `damping` must be a float >= 0 (0: Newton's method), got "
                f"{damping!r}."
            )
        tol = self.tol
        if tol is not None and (
            isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0
        ):
            raise ValueError(
                f"Newton: `tol` must be a positive float or None, got {tol!r}."
            )


class Auto(AbstractMode):
    """`mode=eqrnn.Auto()` (or `"auto"`, the default): the mode measured fastest for
    the cell on the platform, never one that is slower there.

    - a step-by-step cell (`GRUCell`, `LSTMCell`, a callable, ...): `Sequential()`
        everywhere (`Newton` only when asked for);
    - a cell whose recurrence is linear (`MinGRU`, `MinLSTM`, `LRU`, `RGLRU`):
        `Sequential()` on the CPU, where the work is memory-bound and each
        coefficient is read once, `Associative()` on GPU and TPU;
    - `MLSTMCell`: `Chunked()`, its chunkwise form, everywhere.

    The platform is JAX's default backend, or the one `eqrnn.tuned_for` names.
    `select` says what `Auto` runs.

    !!! example

        ```python
        cell = eqrnn.MinGRU(3, 8, key=jax.random.key(0))
        with eqrnn.tuned_for("gpu"):
            assert eqrnn.Auto().select(cell) == eqrnn.Associative()
        with eqrnn.tuned_for("cpu"):
            assert eqrnn.Auto().select(cell) == eqrnn.Sequential()
        ```
    """

    name: ClassVar[str] = "auto"

    def supports(self, cell: Any) -> bool:
        del cell
        return True

    def select(self, cell: Any) -> AbstractMode:
        """The mode `Auto` runs `cell` in, on the current platform.

        **Arguments:**

        - `cell`: an eqrnn cell, or any callable with the cell signature.

        **Returns:**

        A concrete mode: `eqrnn.Sequential()`, `eqrnn.Associative()` or
        `eqrnn.Chunked()`.
        """
        if _has(cell, AbstractChunkCell):
            return Chunked()
        if _has(cell, AbstractLinearCell):
            return linear_engine()
        return Sequential()


# Every mode by its name: the one list of names.
MODE_CLASSES: dict[str, type[AbstractMode]] = {
    cls.name: cls for cls in (Auto, Sequential, Associative, Chunked, Newton)
}
# The modes `eqrnn.linear_scan` runs in.
PARALLEL_MODES = (Auto.name, Sequential.name, Associative.name, Chunked.name)


def linear_engine() -> AbstractMode:
    """The engine `Auto` runs a linear recurrence by on the current platform (a
    linear cell's, `eqrnn.linear_scan`'s and Newton's linear solves):
    `Sequential()` on the CPU, where the work is memory-bound and each
    coefficient is read once, `Associative()` on GPU and TPU."""
    return Sequential() if platform() == "cpu" else Associative()


def as_mode(
    mode: Any, where: str, names: tuple[str, ...] = tuple(MODE_CLASSES)
) -> AbstractMode:
    """`mode` as a mode object: a string turned into its class's default, an
    object checked; one of `names`."""
    if isinstance(mode, AbstractMode) and mode.name in names:
        return mode
    if isinstance(mode, str) and mode in names:
        return MODE_CLASSES[mode]()
    objects = ", ".join(
        f"`eqrnn.{MODE_CLASSES[n].__name__}({'...' if n == Newton.name else ''})`"
        for n in names
    )
    choices = ", ".join(map(repr, names))
    raise ValueError(
        f"{where}: `mode` must be one of {choices} or a mode object "
        f"({objects}), got {mode!r}."
    )


# The `mode` of the scan helpers and layers: a mode object or its name.
ScanMode: TypeAlias = (
    Literal["auto", "sequential", "associative", "chunked", "newton"] | AbstractMode
)
