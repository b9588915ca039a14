"""Experiment: a batch-aware LSTM kernel with a hand-written backward pass.

Speed issue, step "a hand-written VJP for the built-in cells". Under `jax.vmap`, a
`jax.custom_vjp` sees one example, so its weight gradient becomes a batched
`(batch, 4H, H)` product summed afterwards (measured slower than autodiff in an
earlier session). Here `jax.custom_batching.custom_vmap` gives the vmapped call its own
rule: the whole batch goes, time-major, through one `custom_vjp` kernel whose
backward scan carries only `(dh, dc)` and stacks the gate cotangents; the weight and
input gradients are then one `(4H, T*B) @ (T*B, H)` matmul each.

It checks the kernel's loss and gradients against `eqrnn.scan_all_hidden` and times
both, interleaved, forward and forward+backward (`sum` of every `h`, gradients w.r.t.
parameters and inputs):

    python benchmarks/fused_lstm_experiment.py --size mid --reps 7

Not part of the library: see benchmarks/NOTES.md for the measured figures and why this
path is not (yet) wired into the scan helpers. Those figures were taken when
`scan_all_hidden` ran the generic step; it now runs `LSTMCell`'s fused step
(`eqrnn._fused`), against which this kernel is 1.24x slower forward and 1.28x
forward+backward (mid size, median of 5).
"""

import argparse
import statistics
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.custom_batching import custom_vmap

import eqrnn


SIZES = {
    "small": (2048, 8, 32, 64),
    "mid": (256, 32, 64, 256),
    "large": (128, 64, 128, 512),
}


def _forward(w_ih: Any, w_hh: Any, b: Any, xs: Any, h0: Any, c0: Any) -> Any:
    """Time-major LSTM over a batch: xs (T, B, I), h0/c0 (B, H)."""
    hidden = w_hh.shape[1]

    def body(carry: Any, x: Any) -> Any:
        h, c = carry
        g = x @ w_ih.T + b + h @ w_hh.T
        i = jax.nn.sigmoid(g[:, :hidden])
        f = jax.nn.sigmoid(g[:, hidden : 2 * hidden])
        cand = jnp.tanh(g[:, 2 * hidden : 3 * hidden])
        o = jax.nn.sigmoid(g[:, 3 * hidden :])
        c = f * c + i * cand
        tanh_c = jnp.tanh(c)
        h = o * tanh_c
        return (h, c), (h, c, jnp.concatenate([i, f, cand, o], -1), tanh_c)

    _, (hs, cs, gates, tanh_cs) = jax.lax.scan(body, (h0, c0), xs)
    return hs, cs, gates, tanh_cs


@jax.custom_vjp
def lstm_batch(w_ih: Any, w_hh: Any, b: Any, xs: Any, h0: Any, c0: Any) -> Any:
    hs, cs, _, _ = _forward(w_ih, w_hh, b, xs, h0, c0)
    return hs, cs


def _lstm_batch_fwd(w_ih: Any, w_hh: Any, b: Any, xs: Any, h0: Any, c0: Any) -> Any:
    hs, cs, gates, tanh_cs = _forward(w_ih, w_hh, b, xs, h0, c0)
    return (hs, cs), (w_ih, w_hh, xs, h0, c0, hs, cs, gates, tanh_cs)


def _lstm_batch_bwd(res: Any, cotangents: Any) -> Any:
    w_ih, w_hh, xs, h0, c0, hs, cs, gates, tanh_cs = res
    dhs, dcs = cotangents
    hidden = w_hh.shape[1]
    c_prev = jnp.concatenate([c0[None], cs[:-1]])

    def body(carry: Any, step: Any) -> Any:
        dh_next, dc_next = carry
        dh_out, dc_out, g, tanh_c, cp = step
        i, f = g[:, :hidden], g[:, hidden : 2 * hidden]
        cand, o = g[:, 2 * hidden : 3 * hidden], g[:, 3 * hidden :]
        dh = dh_out + dh_next
        dc = dc_out + dc_next + dh * o * (1 - tanh_c * tanh_c)
        dg = jnp.concatenate(
            [
                dc * cand * i * (1 - i),
                dc * cp * f * (1 - f),
                dc * i * (1 - cand * cand),
                dh * tanh_c * o * (1 - o),
            ],
            -1,
        )
        return (dg @ w_hh, dc * f), dg

    zeros = (jnp.zeros_like(h0), jnp.zeros_like(c0))
    (dh0, dc0), dgs = jax.lax.scan(
        body, zeros, (dhs, dcs, gates, tanh_cs, c_prev), reverse=True
    )
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    steps, batch, width = dgs.shape
    flat = dgs.reshape(steps * batch, width)
    dw_hh = flat.T @ h_prev.reshape(steps * batch, hidden)
    dw_ih = flat.T @ xs.reshape(steps * batch, -1)
    return dw_ih, dw_hh, flat.sum(0), dgs @ w_ih, dh0, dc0


lstm_batch.defvjp(_lstm_batch_fwd, _lstm_batch_bwd)


@custom_vmap
def lstm_sequence(w_ih: Any, w_hh: Any, b: Any, xs: Any, h0: Any, c0: Any) -> Any:
    """One sequence, xs (T, I): the batched kernel with a batch of one."""
    hs, cs = lstm_batch(w_ih, w_hh, b, xs[:, None], h0[None], c0[None])
    return hs[:, 0], cs[:, 0]


@lstm_sequence.def_vmap
def _lstm_sequence_vmap(
    axis_size: int, in_batched: Any, w_ih: Any, w_hh: Any, b: Any, *state: Any
) -> Any:
    if any(in_batched[:3]):
        raise ValueError("this experiment batches inputs, not weights")
    xs, h0, c0 = (
        x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
        for x, batched in zip(state, in_batched[3:], strict=True)
    )
    hs, cs = lstm_batch(w_ih, w_hh, b, jnp.swapaxes(xs, 0, 1), h0, c0)
    return (jnp.swapaxes(hs, 0, 1), jnp.swapaxes(cs, 0, 1)), (True, True)


def main() -> None:
    parser = argparse.ArgumentParser(description="A fused LSTM kernel, timed.")
    parser.add_argument("--size", choices=sorted(SIZES), default="mid")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    steps, batch, input_size, hidden = SIZES[args.size]
    cell = eqrnn.LSTMCell(input_size, hidden, dtype=jnp.float32, key=jr.key(0))
    cell = eqx.tree_at(
        lambda c: c.bias, cell, 0.1 * jr.normal(jr.key(1), (4 * hidden,))
    )
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    xs = jr.normal(jr.key(2), (batch, steps, input_size), jnp.float32)

    def eqrnn_loss(params: Any, xs: Any) -> Any:
        c = eqx.combine(params, static)
        return jax.vmap(lambda x: eqrnn.scan_all_hidden(c, x)[0].sum())(xs).sum()

    def fused_loss(params: Any, xs: Any) -> Any:
        c = eqx.combine(params, static)
        zeros = jnp.zeros(hidden, jnp.float32)
        return jax.vmap(
            lambda x: lstm_sequence(c.weight_ih, c.weight_hh, c.bias, x, zeros, zeros)[
                0
            ].sum()
        )(xs).sum()

    calls = {}
    for name, loss in (("eqrnn", eqrnn_loss), ("fused", fused_loss)):
        calls[f"{name} fwd"] = jax.jit(loss)
        calls[f"{name} fwd+bwd"] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    ref = calls["eqrnn fwd+bwd"](params, xs)
    out = calls["fused fwd+bwd"](params, xs)
    error = max(
        float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out), strict=True)
    )
    print(f"{args.size} T={steps} B={batch} I={input_size} H={hidden}, float32")
    print(f"max relative difference of loss and gradients: {error:.1e}")
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        jax.block_until_ready(call(params, xs))
    for _ in range(args.reps):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(params, xs))
            times[name].append(1e3 * (time.perf_counter() - start))
    for name, ms in times.items():
        print(
            f"{name:<14} median {statistics.median(ms):7.1f} ms  min {min(ms):7.1f} ms"
        )
    for pass_ in ("fwd", "fwd+bwd"):
        ratio = statistics.median(times[f"fused {pass_}"]) / statistics.median(
            times[f"eqrnn {pass_}"]
        )
        print(f"fused / eqrnn, {pass_}: {ratio:.2f} (median)")


if __name__ == "__main__":
    main()
