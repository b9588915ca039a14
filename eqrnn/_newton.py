r"""Newton's method over time: a nonlinear recurrence evaluated in parallel.

Every state $h_t = f(x_t, h_{t-1})$ of a sequence is guessed at once, each step is
linearised around the guess, and the correction solves the linear recurrence
$\delta_t = A_t \delta_{t-1} + (f(x_t, h_{t-1}) - h_t)$ with the linear-scan engine.
With $A_t$ the step's Jacobian this is Newton's method (DEER, Lim et al. 2023); with
its diagonal or its per-unit blocks it is a quasi-Newton method (quasi-DEER, ELK,
Gonzalez et al. 2024). Whatever $A_t$, the recurrence is causal, so iteration $k$
makes the first $k$ states exact: `max_iterations = time` is exact, and the loop
stops as soon as the residual $\max_t |h_t - f(x_t, h_{t-1})|$ is at rounding level.

Derivatives are exact too, whichever linearisation runs the forward pass. The
solution's JVP rule is the implicit function theorem (`eqx.filter_custom_jvp`):
the tangent solves $(I - J S) \dot h = \partial f$ through
`jax.lax.custom_linear_solve`, and reverse mode its transposed system, both with
the full per-step Jacobian $J_t$ applied as one batched JVP (VJP) over all steps
and the chosen $A_t$ as preconditioner, iterated to the same tolerance. The rule
is a JAX function of the solution, so it differentiates again: Hessian-vector
products are exact as well.
"""

import abc
import math
from collections.abc import Callable
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._linear_scan import DEFAULT_CHUNK_SIZE, _run
from ._modes import Newton, Sequential, linear_engine


# `linearisation="auto"` takes the full Jacobian up to this many state entries
# (an associative scan over n x n matrices, O(time n^3) work), else blocks.
AUTO_FULL_SIZE = 32
# The default tolerance, in units of the dtype's epsilon, and how far above it a
# residual that has stopped falling counts as converged (see `_iterate`).
TOL_EPS = 2
STALL = 64


class AbstractNewtonCell(eqx.Module):
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


def pointwise_jacobians(
    pointwise: Callable[..., Any],
    recurrent: Array,
    weight_hh: Array,
    hidden: Any,
) -> Array:
    """`unit_jacobians` of a cell whose step is `pointwise(weight_hh @ h, state)`,
    unit `j` of the result reading only unit `j` of its arguments (the gated cells
    are: every gate of unit `j` reads row `j` of its block of `weight_hh @ h`), and
    `recurrent = weight_hh @ h` read from the first array of the state only.

    One JVP per array of the state gives every unit's block column at once: moving
    `h` by ones moves the pre-activations by the diagonals of `weight_hh`'s gate
    blocks, and by units of other arrays moves nothing else."""
    is_tuple = isinstance(hidden, tuple)
    leaves = hidden if is_tuple else (hidden,)
    units = leaves[0].shape[0]
    blocks = weight_hh.reshape(-1, units, weight_hh.shape[-1])
    diagonals = jnp.diagonal(blocks, axis1=1, axis2=2).reshape(-1)
    columns = []
    for b in range(len(leaves)):
        d_recurrent = diagonals if b == 0 else jnp.zeros_like(recurrent)
        d_leaves = tuple(
            jnp.ones_like(x) if a == b else jnp.zeros_like(x)
            for a, x in enumerate(leaves)
        )
        _, out = jax.jvp(
            pointwise,
            (recurrent, hidden),
            (d_recurrent, d_leaves if is_tuple else d_leaves[0]),
        )
        columns.append(jnp.stack(out if is_tuple else (out,), -1))
    return jnp.stack(columns, -1)


def derivative(fn: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    """`(fn(x), fn'(x))` of an elementwise `fn`."""
    return jax.jvp(fn, (x,), (jnp.ones_like(x),))


# --- the engine: states flattened to one vector of n entries per step ---------


def _shift(hs: Array, start: Array) -> Array:
    """The state each step starts from: `start`, then `hs[:-1]`."""
    return jnp.concatenate([start[None], hs[:-1]])


def _shift_back(a: Array) -> Array:
    """`a[t + 1]` at step `t`, zero after the last: the transposed system's
    coefficients."""
    return jnp.concatenate([a[1:], jnp.zeros_like(a[:1])])


def _max_abs(x: Array) -> Array:
    """The largest finite magnitude in `x` (zero if none)."""
    if not x.size:
        return jnp.zeros((), x.dtype)
    return jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0))


def _mismatch(x: Array, g: Array) -> Array:
    """`max|g - x|`, where two non-finite entries agree and one non-finite entry
    against a finite one is an infinite mismatch.

    A NaN or infinity in a valid input is the sequential scan's result too (from
    that step until a reset), so the iteration must reach it, not be stopped by it:
    once every finite entry is converged, the non-finite ones are the sequential
    scan's, by induction from the first of them (its step starts from a converged
    finite state)."""
    if not x.size:
        return jnp.zeros((), x.dtype)
    error = jnp.abs(g - x)
    error = jnp.where(jnp.isnan(error), jnp.inf, error)
    agree = jnp.logical_and(~jnp.isfinite(x), ~jnp.isfinite(g))
    return jnp.max(jnp.where(agree, 0, error))


class _Coefficients(eqx.Module):
    """Every step's linearisation `A_t`, and how to solve `d_t = A_t d_{t-1} + r_t`
    with it (forwards) or its transpose (backwards)."""

    a: Array  # (T, n) diagonal, (T, U, L, L) blocks or (T, n, n) full
    kind: str = eqx.field(static=True)
    arrays: int = eqx.field(static=True)

    def solve(self, r: Array, transpose: bool = False) -> Array:
        kind, a = self.kind, self.a
        mode = linear_engine()
        if kind == "diagonal":
            if transpose:
                a = _shift_back(a)
            return _run(a, r, None, mode, transpose, 1, DEFAULT_CHUNK_SIZE, True)[1]
        if kind == "blocks":
            num = a.shape[1]
            # (T, n) leaf-major -> (T, U, L): unit j holds entry j of each array.
            r = r.reshape(r.shape[0], self.arrays, num).swapaxes(1, 2)
        else:
            a, r = a[:, None], r[:, None]
        if transpose:
            a = _shift_back(jnp.swapaxes(a, -1, -2))
        out = _matrix_scan(a, r, transpose, mode)
        if kind == "blocks":
            return out.swapaxes(1, 2).reshape(out.shape[0], -1)
        return out[:, 0]


def _matvec(a: Array, v: Array) -> Array:
    return jnp.einsum("...ij,...j->...i", a, v)


def _matrix_scan(a: Array, b: Array, reverse: bool, mode: Any) -> Array:
    """`h_t = a_t @ h_{t-1} + b_t` from zero, for batches of small matrices."""
    if isinstance(mode, Sequential):

        def body(h: Array, ab: tuple[Array, Array]) -> tuple[Array, Array]:
            h = _matvec(ab[0], h) + ab[1]
            return h, h

        return jax.lax.scan(body, jnp.zeros_like(b[0]), (a, b), reverse=reverse)[1]

    def combine(earlier: Any, later: Any) -> Any:
        a1, b1 = earlier
        a2, b2 = later
        return jnp.einsum("...ij,...jk->...ik", a2, a1), _matvec(a2, b1) + b2

    return jax.lax.associative_scan(combine, (a, b), reverse=reverse)[1]


class _System(eqx.Module):
    """One sequence as Newton's method sees it: the step on flattened states over
    all steps at once, and its linearisations. `cell` and `reset_state` are what the
    step reads besides each step's `xs` (the projected input, its key, whether the
    step is valid and whether it resets); `call(cell, x, hidden, key)` and
    `unit_jacobians(cell, x, hidden)` are plain functions of them."""

    cell: Any
    reset_state: Array
    call: Callable[..., Any] = eqx.field(static=True)
    unit_jacobians: Callable[..., Any] | None = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    def unflatten(self, v: Array) -> Any:
        leaves, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            leaves.append(v[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(self.treedef, leaves)

    def start(self, xs: Any, prev: Array) -> Array:
        """The state a step reads: the reset state at a reset step, else `prev`."""
        reset = xs[3]
        return prev if reset is None else jnp.where(reset, self.reset_state, prev)

    def step(self, xs: Any, prev: Array) -> Array:
        """One step on flattened states; a padded step keeps `prev`."""
        x, key, valid, _ = xs
        new = flatten(
            self.call(self.cell, x, self.unflatten(self.start(xs, prev)), key)
        )
        return new if valid is None else jnp.where(valid, new, prev)

    def steps(self, xs: Any, prevs: Array) -> Array:
        return jax.vmap(self.step)(xs, prevs)

    def coefficients(
        self, xs: Any, prevs: Array, kind: str, damping: float = 0.0
    ) -> _Coefficients:
        arrays = len(self.shapes)
        if kind == "full":
            a = jax.vmap(jax.jacfwd(self.step, argnums=1))(xs, prevs)
        else:
            assert self.unit_jacobians is not None

            def unit(xs: Any, prev: Array) -> Array:
                assert self.unit_jacobians is not None
                start = self.unflatten(self.start(xs, prev))
                return self.unit_jacobians(self.cell, xs[0], start)

            blocks = jax.vmap(unit)(xs, prevs)  # (T, U, L, L)
            if kind == "diagonal":
                diag = jnp.diagonal(blocks, axis1=2, axis2=3)  # (T, U, L)
                a = diag.swapaxes(1, 2).reshape(diag.shape[0], -1)
            else:
                a = blocks
            _, _, valid, reset = xs
            # A reset step does not read the state; a padded step is the identity.
            if reset is not None:
                a = jnp.where(reset.reshape((-1,) + (1,) * (a.ndim - 1)), 0, a)
            if valid is not None:
                eye = (
                    jnp.ones_like(a)
                    if kind == "diagonal"
                    else jnp.broadcast_to(jnp.eye(arrays, dtype=a.dtype), a.shape)
                )
                a = jnp.where(valid.reshape((-1,) + (1,) * (a.ndim - 1)), a, eye)
        if damping:
            a = a / (1 + damping)
        # A step that reads a non-finite state has no linearisation: the entries
        # it would correct take the step's value instead (see `_iterate`).
        a = jnp.where(jnp.isfinite(a), a, 0)
        return _Coefficients(a, kind, arrays)


def flatten(tree: Any) -> Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _tolerance(newton: Newton, dtype: Any) -> float:
    if newton.tol is not None:
        return float(newton.tol)
    return TOL_EPS * float(jnp.finfo(dtype).eps)


# `_iterate`'s loop: the guess, the map's value and aux there, its mismatch, the
# mismatch before and the iterations.
_Carry: TypeAlias = tuple[Array, Array, Any, Array, Array, Array]


def _iterate(
    evaluate: Callable[[Array], tuple[Array, Any]],
    correct: Callable[[Array, Any], Array],
    x0: Array,
    first: tuple[Array, Any],
    tol: Array,
    cap: int,
    scale: Callable[[Array], Array],
) -> tuple[Array, Any, Array, Array]:
    """A fixed point `x = g(x)`: `x <- x + correct(g - x, aux)` with
    `(g, aux) = evaluate(x)` (the map's value and whatever else the correction
    needs at `x`; `first` is `evaluate(x0)`) until converged or `cap` iterations:
    `(x, aux at x, iterations, converged)`.

    Converged: `_mismatch(x, g) <= tol * scale(x)`, or, below
    `STALL * tol * scale(x)`, a mismatch that no longer falls (rounding's floor:
    how low a residual can go depends on the sizes and the dynamics, and a
    tolerance under it would otherwise run to the cap).

    Where `g - x` is not finite, the entry takes `g` and its correction is zero:
    a NaN would otherwise spread through the correction's scan past a reset
    (`0 * nan`) to states the sequential scan keeps finite. The remaining
    corrections are still those of the iteration that makes one more step exact
    each time, so `cap = time` stays exact."""

    def done(x: Array, norm: Array, before: Array) -> Array:
        bound = tol * scale(x)
        stalled = jnp.logical_and(norm <= STALL * bound, norm >= before)
        return jnp.logical_or(norm <= bound, stalled)

    def cond(carry: _Carry) -> Array:
        x, _, _, norm, before, k = carry
        return jnp.logical_and(k < cap, jnp.logical_not(done(x, norm, before)))

    def body(carry: _Carry) -> _Carry:
        x, g, aux, norm, _, k = carry
        r = g - x
        finite = jnp.isfinite(r)
        x = jnp.where(finite, x + correct(jnp.where(finite, r, 0), aux), g)
        g, aux = evaluate(x)
        return x, g, aux, _mismatch(x, g), norm, k + 1

    g, aux = first
    inf = jnp.asarray(jnp.inf, g.dtype)
    x, _, aux, norm, before, k = jax.lax.while_loop(
        cond, body, (x0, g, aux, _mismatch(x0, g), inf, jnp.array(0))
    )
    return x, aux, k, done(x, norm, before)


def _limits(newton: Newton, dtype: Any, num_steps: int) -> tuple[Array, int]:
    """The tolerance and the cap on the iterations of every solve."""
    tol = jnp.asarray(_tolerance(newton, dtype), dtype)
    cap = num_steps if newton.max_iterations is None else newton.max_iterations
    return tol, cap


def newton_forward(
    system: _System, xs: Any, h0: Array, kind: str, newton: Newton
) -> tuple[Array, _Coefficients, Array, Array]:
    """`(hs, coefficients, iterations, converged)`: every step's state, flattened,
    by Newton's method, and the linearisation at it; nothing here is
    differentiated."""
    num_steps = jax.tree.leaves(xs)[0].shape[0]
    tol, cap = _limits(newton, h0.dtype, num_steps)

    def evaluate(hs: Array) -> tuple[Array, _Coefficients]:
        # The steps and their linearisation at the same states, in one pass.
        prevs = _shift(hs, h0)
        steps = system.steps(xs, prevs)
        return steps, system.coefficients(xs, prevs, kind, newton.damping)

    def correct(r: Array, coefficients: _Coefficients) -> Array:
        return coefficients.solve(r)

    guess = jnp.broadcast_to(h0, (num_steps, h0.shape[0]))
    return _iterate(
        evaluate,
        correct,
        guess,
        evaluate(guess),
        tol,
        cap,
        lambda hs: jnp.maximum(1, _max_abs(hs)),
    )


@eqx.filter_custom_jvp
def _solution(
    system: _System, xs: Any, h0: Array, *, kind: str, newton: Newton
) -> tuple[Array, Array]:
    """Every step's state, flattened, and the linearisation the forward loop ended
    with (`_Coefficients.a`: the preconditioner of the derivatives' solves)."""
    hs, coefficients, _, converged = newton_forward(system, xs, h0, kind, newton)
    num_steps = hs.shape[0]
    if newton.max_iterations is not None and newton.max_iterations < num_steps:
        hs = eqx.error_if(
            hs,
            jnp.logical_not(converged),
            f"Newton: `max_iterations={newton.max_iterations}` was reached before "
            "the tolerance, so the result would be inexact. Raise it, or pass "
            "`max_iterations=None` (the sequence length, always exact).",
        )
    return hs, coefficients.a


@_solution.def_jvp
def _solution_jvp(
    primals: tuple[_System, Any, Array],
    tangents: tuple[Any, Any, Any],
    *,
    kind: str,
    newton: Newton,
) -> tuple[tuple[Array, Array], tuple[Array, None]]:
    """The implicit function theorem: `hs = F(hs)` with `F(hs) = steps(shift(hs))`
    gives `(I - J S) dhs = dF`, where `dF` is the step's derivative in the cell, the
    inputs and `h0`. Everything here is a JAX function of the primals and of `hs`,
    itself `_solution`'s output, so the rule differentiates again: second and
    higher derivatives are exact too. The preconditioner is a constant (the
    solves' results do not depend on it, to the tolerance)."""
    system, xs, h0 = primals
    hs, a = _solution(system, xs, h0, kind=kind, newton=newton)

    def steps(system: _System, xs: Any, h0: Array) -> Array:
        return system.steps(xs, _shift(hs, h0))

    _, rhs = eqx.filter_jvp(steps, primals, tangents)
    if rhs is None:  # nothing here is differentiated
        return (hs, a), (jnp.zeros_like(hs), None)
    # The step's Jacobian at the solution, as a linear map over all steps.
    _, jvp = jax.linearize(lambda p: system.steps(xs, p), _shift(hs, h0))
    zero = jnp.zeros_like(h0)
    tol, cap = _limits(newton, h0.dtype, hs.shape[0])
    preconditioner = _Coefficients(jax.lax.stop_gradient(a), kind, len(system.shapes))

    def matvec(v: Array) -> Array:
        return v - jvp(_shift(v, zero))

    def solve(matvec: Callable[[Array], Array], rhs: Array) -> Array:
        return _linear_solve(matvec, rhs, preconditioner, False, tol, cap)

    def transpose_solve(vecmat: Callable[[Array], Array], rhs: Array) -> Array:
        return _linear_solve(vecmat, rhs, preconditioner, True, tol, cap)

    tangent = jax.lax.custom_linear_solve(matvec, rhs, solve, transpose_solve)
    return (hs, a), (tangent, None)


def _linear_solve(
    op: Callable[[Array], Array],
    rhs: Array,
    coefficients: _Coefficients,
    transpose: bool,
    tol: Array,
    cap: int,
) -> Array:
    """`op(v) = rhs` for `op = I - J S` (or its transpose), preconditioned by the
    chosen linearisation: exact in one iteration with the full Jacobian."""
    # A constant right-hand side (the cotangent of a plain sum) would otherwise be
    # constant-folded through the loop's test by XLA, for seconds of compilation.
    rhs = jax.lax.optimization_barrier(rhs)
    rhs_size = _max_abs(rhs)
    # The fixed point of `v + (rhs - op(v))`, from zero, where the map is `rhs`
    # itself (`op` is linear): no `op` to evaluate first, and a zero right-hand
    # side costs nothing.
    v, _, _, _ = _iterate(
        lambda v: (v + (rhs - op(v)), None),
        lambda r, _: coefficients.solve(r, transpose),
        jnp.zeros_like(rhs),
        (rhs, None),
        tol,
        cap,
        lambda v: jnp.maximum(rhs_size, _max_abs(v)),
    )
    return v


def _kind(newton: Newton, system: _System, size: int, where: str) -> str:
    """The linearisation that runs: `newton.linearisation` resolved and checked."""
    kind = newton.linearisation
    cheap = system.unit_jacobians is not None and len(set(system.shapes)) == 1
    if kind == "auto":
        return "full" if size <= AUTO_FULL_SIZE or not cheap else "blocks"
    if kind != "full" and not cheap:
        name = type(system.cell).__name__
        why = (
            "its hidden state's arrays differ in shape"
            if system.unit_jacobians is not None
            else "it does not give its step's Jacobian per unit (subclass "
            "`eqrnn.AbstractNewtonCell` to do so)"
        )
        raise ValueError(
            f"{where}: `mode=eqrnn.Newton({kind!r})` needs the step's Jacobian per "
            f"unit, and {name} cannot give it: {why}. Use "
            "`mode=eqrnn.Newton('full')` (the whole Jacobian, by `jax.jacfwd`)."
        )
    return kind


class NewtonParts(eqx.Module):
    """What Newton's method needs of a step-by-step cell: the cell, its step
    `call(cell, x, hidden, key)`, its `unit_jacobians(cell, x, hidden)` or `None`,
    the inputs as the step reads them and the reset state."""

    cell: Any
    xs: Array
    reset_state: Any
    call: Callable[..., Any] = eqx.field(static=True)
    unit_jacobians: Callable[..., Any] | None = eqx.field(static=True)


def _prepare(
    parts: NewtonParts, hidden: Any, plan: Any
) -> tuple[_System, Any, Array, str, Newton]:
    """The system of one sequence in the order it runs (flipped for `reverse`),
    its flattened starting state, the linearisation and the `Newton` options."""
    newton = plan.mode
    assert isinstance(newton, Newton), newton
    leaves = jax.tree.leaves(hidden)
    for leaf in leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"{plan.where}: `mode='newton'` linearises the step in its hidden "
                f"state, which must be floating point; got dtype {leaf.dtype}. Use "
                "mode='sequential'."
            )
    seq = (parts.xs, plan.keys, plan.valid, plan.resets)
    if plan.reverse:
        seq = jax.tree.map(lambda a: jnp.flip(a, 0), seq)
    # `plan.chunk` (checkpointing) changes nothing here: Newton's method holds every
    # step's state by construction (benchmarks/NOTES.md: rematerialising the step
    # inside it raised XLA's planned memory).
    system = _System(
        parts.cell,
        flatten(parts.reset_state),
        parts.call,
        parts.unit_jacobians,
        jax.tree.structure(hidden),
        tuple(leaf.shape for leaf in leaves),
    )
    h0 = flatten(hidden)
    kind = _kind(newton, system, h0.shape[0], plan.where)
    return system, seq, h0, kind, newton


def newton_loop(parts: NewtonParts, hidden: Any, plan: Any) -> tuple[Any, Any]:
    """`(final, stacked)` of one sequence by Newton's method, as a cell family's
    `run_sequence` returns them."""
    if parts.xs.shape[0] == 0:
        empty = jax.tree.map(lambda x: jnp.zeros((0, *x.shape), x.dtype), hidden)
        return hidden, (empty if plan.stack else None)
    system, seq, h0, kind, newton = _prepare(parts, hidden, plan)
    # Differentiable with respect to the cell and reset state (in `system`), the
    # inputs and `h0`, in forward and reverse mode and to any order.
    hs = _solution(system, seq, h0, kind=kind, newton=newton)[0]
    final = system.unflatten(hs[-1])
    if not plan.stack:
        return final, None
    if plan.valid is not None:
        hs = jnp.where(seq[2][:, None], hs, 0)
    if plan.reverse:
        hs = jnp.flip(hs, 0)
    return final, jax.vmap(system.unflatten)(hs)


def newton_count(cell: Any, inputs: Array, hidden: Any, plan: Any) -> Array:
    """The iterations of the forward pass that `newton_loop` runs for `cell`, a
    cell whose `modes` hold `"newton"` (so it has `newton_parts`)."""
    parts = cell.newton_parts(inputs)
    if parts.xs.shape[0] == 0:
        return jnp.array(0)
    system, seq, h0, kind, newton = _prepare(parts, hidden, plan)
    return newton_forward(system, seq, h0, kind, newton)[2]
