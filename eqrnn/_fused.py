"""The fused steps of the built-in cells: what each cell's `fused_step` returns.

Each computes what the cell's `step` computes, in a form XLA runs faster forward
and backward: weights transposed once outside the loop with a tangent rule that
multiplies by the stored weight (`matmul`), all gates through one `tanh`, and
hand-written tangent rules that save few arrays for the backward pass. The
measurements behind each choice: benchmarks/NOTES.md.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float


@jax.custom_jvp
def matmul(
    x: Float[Array, "*batch k"],
    weight_t: Float[Array, "k n"],
    weight: Float[Array, "n k"],
) -> Float[Array, "*batch n"]:
    """`x @ weight_t` where `weight_t` is `weight.T`, materialised: the tangent rule
    reads `weight` as stored, so that the backward pass multiplies by it without a
    transpose. Only `weight_t` carries the weight's tangent, so the two must hold
    the same values."""
    return x @ weight_t


def _matmul_jvp(primals: Any, tangents: Any) -> Any:
    x, weight_t, weight = primals
    dx, dweight_t, _ = tangents
    out = x @ weight_t
    parts = []
    if not isinstance(dx, SymbolicZero):
        # dx @ weight.T, written against `weight`: its transpose is ct @ weight.
        parts.append(
            jax.lax.dot_general(dx, weight, (((dx.ndim - 1,), (1,)), ((), ())))
        )
    if not isinstance(dweight_t, SymbolicZero):
        parts.append(x @ dweight_t)
    if not parts:
        return out, jnp.zeros_like(out)
    return out, parts[0] if len(parts) == 1 else parts[0] + parts[1]


matmul.defjvp(_matmul_jvp, symbolic_zeros=True)


def laid_out(
    weight: Float[Array, "n k"],
    bias: Float[Array, " n"] | None = None,
    *,
    weight_t: Float[Array, "k n"] | None = None,
) -> Callable[[Array], Array]:
    """`x -> x @ weight.T + bias` through `matmul`, with `weight.T` made here, once,
    outside the time loop (or given as `weight_t`)."""
    if weight_t is None:
        weight_t = weight.T

    def apply(x: Float[Array, "*batch k"]) -> Float[Array, "*batch n"]:
        out = matmul(x, weight_t, weight)
        return out if bias is None else out + bias

    return apply


def identity(x: Array) -> Array:
    """The input projection of a fused step whose inputs were projected before the
    loop."""
    return x


def _lstm_scale(hidden_size: int, dtype: Any) -> tuple[Array, Array]:
    """Per-entry scale and shift that turn `tanh(scale * g) * scale + shift` into
    sigmoid for the gates i, f, o and tanh for the candidate g."""
    half = jnp.full(hidden_size, 0.5, dtype)
    one, zero = jnp.ones(hidden_size, dtype), jnp.zeros(hidden_size, dtype)
    return (
        jnp.concatenate([half, half, one, half]),
        jnp.concatenate([half, half, zero, half]),
    )


@jax.custom_jvp
def lstm_pointwise(
    gates: Float[Array, "*batch four_hidden"], c: Float[Array, "*batch hidden"]
) -> tuple[Float[Array, "*batch hidden"], Float[Array, "*batch hidden"]]:
    """`(h', c')` from the pre-activations `gates` (i, f, g, o stacked) and `c`."""
    hs = c.shape[-1]
    scale, shift = _lstm_scale(hs, c.dtype)
    a = jnp.tanh(gates * scale) * scale + shift
    c_new = a[..., hs : 2 * hs] * c + a[..., :hs] * a[..., 2 * hs : 3 * hs]
    return a[..., 3 * hs :] * jnp.tanh(c_new), c_new


@lstm_pointwise.defjvp
def _lstm_pointwise_jvp(primals: Any, tangents: Any) -> Any:
    gates, c = primals
    dgates, dc = tangents
    hs = c.shape[-1]
    scale, shift = _lstm_scale(hs, c.dtype)
    t = jnp.tanh(gates * scale)
    a = t * scale + shift
    i, f = a[..., :hs], a[..., hs : 2 * hs]
    g, o = a[..., 2 * hs : 3 * hs], a[..., 3 * hs :]
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    # d(activation)/d(gate) times what each activation multiplies:
    # dc' = di*g + df*c + dg*i + f*dc and dh' = do*tanh(c') + o*(1 - tanh(c')^2)*dc'.
    # The arrays saved for the backward pass are `coef`, `f` and `dh_dc`.
    coef = (scale * scale) * (1 - t * t) * jnp.concatenate([g, c, i, tanh_c], -1)
    dh_dc = o * (1 - tanh_c * tanh_c)
    terms = (dgates * coef).reshape(*dgates.shape[:-1], 4, hs)
    # Summing over the gate axis with 0/1 weights, rather than slicing, transposes
    # to a broadcast and a multiply.
    to_c = jnp.array([1, 1, 1, 0], c.dtype)[:, None]
    dc_new = (terms * to_c).sum(-2) + f * dc
    dh_new = (terms * (1 - to_c)).sum(-2) + dh_dc * dc_new
    return (h_new, c_new), (dh_new, dc_new)


@jax.custom_jvp
def gru_pointwise(
    projected: Float[Array, "*batch three_hidden"],
    recurrent: Float[Array, "*batch three_hidden"],
    h: Float[Array, "*batch hidden"],
) -> Float[Array, "*batch hidden"]:
    """`h'` from the input part `projected` (r, z, n stacked, with `bias`) and the
    recurrent part `recurrent` (`weight_hh @ h`, with `bias_hn` added to n)."""
    hs = h.shape[-1]
    t = jnp.tanh(0.5 * (projected[..., : 2 * hs] + recurrent[..., : 2 * hs]))
    r, z = 0.5 * t[..., :hs] + 0.5, 0.5 * t[..., hs:] + 0.5
    n = jnp.tanh(projected[..., 2 * hs :] + r * recurrent[..., 2 * hs :])
    return n + z * (h - n)


@gru_pointwise.defjvp
def _gru_pointwise_jvp(primals: Any, tangents: Any) -> Any:
    projected, recurrent, h = primals
    dprojected, drecurrent, dh = tangents
    hs = h.shape[-1]
    t = jnp.tanh(0.5 * (projected[..., : 2 * hs] + recurrent[..., : 2 * hs]))
    r, z = 0.5 * t[..., :hs] + 0.5, 0.5 * t[..., hs:] + 0.5
    rec_n = recurrent[..., 2 * hs :]
    n = jnp.tanh(projected[..., 2 * hs :] + r * rec_n)
    h_new = n + z * (h - n)
    # dh' = (1 - z) dn + dz (h - n) + z dh, with dn = (1 - n^2)(dp_n + dr*rec_n +
    # r*drec_n), dr = sigmoid'(.) (dp_r + drec_r), dz = sigmoid'(.) (dp_z + drec_z).
    gate_slope = 0.25 * (1 - t * t)
    dn_scale = (1 - z) * (1 - n * n)
    coef_in = jnp.concatenate(
        [
            gate_slope[..., :hs] * dn_scale * rec_n,
            gate_slope[..., hs:] * (h - n),
            dn_scale,
        ],
        -1,
    )
    coef_rec = jnp.concatenate([coef_in[..., : 2 * hs], dn_scale * r], -1)
    terms = dprojected * coef_in + drecurrent * coef_rec
    return h_new, terms.reshape(*terms.shape[:-1], 3, hs).sum(-2) + z * dh
