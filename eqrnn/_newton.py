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

import math
from collections.abc import Callable
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._cell import AbstractCell, AbstractNewtonCell, AbstractStochasticCell
from ._linear_scan import DEFAULT_CHUNK_SIZE, _run
from ._loop import Plan, previous
from ._modes import Newton, Sequential, linear_engine


# `linearisation="auto"` takes the full Jacobian up to this many state entries
# (an associative scan over n x n matrices, O(time n^3) work), else blocks.
AUTO_FULL_SIZE = 32
# The default tolerance, in units of the dtype's epsilon, and how far above it a
# residual that has stopped falling counts as converged (see `_iterate`).
TOL_EPS = 2
STALL = 64


# --- the engine: states flattened to one vector of n entries per step ---------


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
                a = previous(a, jnp.zeros_like(a[0]), True)
            return _run(a, r, None, mode, transpose, 1, DEFAULT_CHUNK_SIZE, True)[1]
        if kind == "blocks":
            num = a.shape[1]
            # (T, n) leaf-major -> (T, U, L): unit j holds entry j of each array.
            r = r.reshape(r.shape[0], self.arrays, num).swapaxes(1, 2)
        else:
            a, r = a[:, None], r[:, None]
        if transpose:
            a = previous(jnp.swapaxes(a, -1, -2), jnp.zeros_like(a[0]), True)
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
    step is valid and whether it resets). `units` says whether the cell gives its
    Jacobian per unit (an `eqrnn.AbstractNewtonCell`)."""

    cell: AbstractCell
    reset_state: Array
    units: bool = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    def unflatten(self, v: Array) -> Any:
        leaves, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            leaves.append(v[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(self.treedef, leaves)

    def _step(self, x: Array, hidden: Any, key: Any) -> Any:
        cell = self.cell
        if key is not None and isinstance(cell, AbstractStochasticCell):
            return cell.keyed_step(x, hidden, key)
        return cell.step(x, hidden)

    def start(self, xs: Any, prev: Array) -> Array:
        """The state a step reads: the reset state at a reset step, else `prev`."""
        reset = xs[3]
        return prev if reset is None else jnp.where(reset, self.reset_state, prev)

    def step(self, xs: Any, prev: Array) -> Array:
        """One step on flattened states; a padded step keeps `prev`."""
        x, key, valid, _ = xs
        new = flatten(self._step(x, self.unflatten(self.start(xs, prev)), key))
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
            cell = self.cell
            assert isinstance(cell, AbstractNewtonCell), cell

            def unit(xs: Any, prev: Array) -> Array:
                return cell.unit_jacobians(xs[0], self.unflatten(self.start(xs, prev)))

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
        prevs = previous(hs, h0, False)
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
        return system.steps(xs, previous(hs, h0, False))

    _, rhs = eqx.filter_jvp(steps, primals, tangents)
    if rhs is None:  # nothing here is differentiated
        return (hs, a), (jnp.zeros_like(hs), None)
    # The step's Jacobian at the solution, as a linear map over all steps.
    _, jvp = jax.linearize(lambda p: system.steps(xs, p), previous(hs, h0, False))
    zero = jnp.zeros_like(h0)
    tol, cap = _limits(newton, h0.dtype, hs.shape[0])
    preconditioner = _Coefficients(jax.lax.stop_gradient(a), kind, len(system.shapes))

    def matvec(v: Array) -> Array:
        return v - jvp(previous(v, zero, False))

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
    cheap = system.units and len(set(system.shapes)) == 1
    if kind == "auto":
        return "full" if size <= AUTO_FULL_SIZE or not cheap else "blocks"
    if kind != "full" and not cheap:
        name = type(system.cell).__name__
        why = (
            "its hidden state's arrays differ in shape"
            if system.units
            else "it does not give its step's Jacobian per unit (subclass "
            "`eqrnn.AbstractNewtonCell` to do so)"
        )
        raise ValueError(
            f"{where}: `mode=eqrnn.Newton({kind!r})` needs the step's Jacobian per "
            f"unit, and {name} cannot give it: {why}. Use "
            "`mode=eqrnn.Newton('full')` (the whole Jacobian, by `jax.jacfwd`)."
        )
    return kind


def _prepare(
    cell: AbstractCell, inputs: Array, hidden: Any, plan: Plan
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
    seq = (cell.project_inputs(inputs), plan.keys, plan.valid, plan.resets)
    if plan.reverse:
        seq = jax.tree.map(lambda a: jnp.flip(a, 0), seq)
    # `plan.chunk` (checkpointing) changes nothing here: Newton's method holds every
    # step's state by construction (benchmarks/NOTES.md: rematerialising the step
    # inside it raised XLA's planned memory).
    system = _System(
        cell,
        flatten(cell.init_hidden()),
        isinstance(cell, AbstractNewtonCell),
        jax.tree.structure(hidden),
        tuple(leaf.shape for leaf in leaves),
    )
    h0 = flatten(hidden)
    kind = _kind(newton, system, h0.shape[0], plan.where)
    return system, seq, h0, kind, newton


def run_newton(
    cell: AbstractCell, inputs: Array, hidden: Any, plan: Plan
) -> tuple[Any, Any]:
    """The Newton strategy (`eqrnn.Newton`): `(final, stacked)` of one sequence, a
    step-by-step cell's states found all at once by Newton's method."""
    if inputs.shape[0] == 0:
        empty = jax.tree.map(lambda x: jnp.zeros((0, *x.shape), x.dtype), hidden)
        return hidden, (empty if plan.stack else None)
    system, seq, h0, kind, newton = _prepare(cell, inputs, hidden, plan)
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


def newton_count(cell: AbstractCell, inputs: Array, hidden: Any, plan: Plan) -> Array:
    """The iterations of the forward pass that `run_newton` runs for `cell`."""
    if inputs.shape[0] == 0:
        return jnp.array(0)
    system, seq, h0, kind, newton = _prepare(cell, inputs, hidden, plan)
    return newton_forward(system, seq, h0, kind, newton)[2]
