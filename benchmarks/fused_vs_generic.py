"""The fused scan step of each built-in cell against its generic step, side by side.

The scan helpers run a cell's fused step (`eqrnn._fused`) when the cell has its
default nonlinearities. The same cell built with `generic_step_options` (its default
nonlinearity as another function object) runs the generic `step` instead, so the
two are timed on the same weights and inputs, round-robin, forward (every hidden
state) and forward+backward (gradients of the sum of every `h` w.r.t. parameters
and inputs), vmapped over the batch:

    python benchmarks/fused_vs_generic.py --reps 7

`python benchmarks/bench.py` shows the same for `LSTMCell` and `GRUCell` next to
PyTorch, Flax and Equinox (its `eqrnn generic step` row); this script covers every
built-in cell.
"""

import argparse
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr

import eqrnn


# `_harness` sits next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import generic_step_options, parse_size, positive_int, scan_loss


CELLS = (eqrnn.SimpleCell, eqrnn.GRUCell, eqrnn.LSTMCell, eqrnn.MGUCell)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--size", type=parse_size, default="256,32,64,256", help="T,B,I,H"
    )
    parser.add_argument("--reps", type=positive_int, default=7)
    args = parser.parse_args()
    steps, batch, input_size, hidden = args.size
    xs = jr.normal(jr.key(1), (batch, steps, input_size), jnp.float32)
    calls: dict[str, tuple[Any, Any]] = {}
    for cls in CELLS:
        name = cls.__name__
        for label, options in (("fused", {}), ("generic", generic_step_options(cls))):
            cell = cls(input_size, hidden, dtype=jnp.float32, key=jr.key(0), **options)
            loss, params = scan_loss(cell)
            grad = jax.value_and_grad(loss, argnums=(0, 1))
            calls[f"{name} {label} fwd"] = (jax.jit(loss), params)
            calls[f"{name} {label} fwd+bwd"] = (jax.jit(grad), params)
    for call, params in calls.values():
        jax.block_until_ready(call(params, xs))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.reps):
        for name, (call, params) in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call(params, xs))
            times[name].append(1e3 * (time.perf_counter() - start))
    print(
        f"T={steps} B={batch} I={input_size} H={hidden}, float32, jax "
        f"{jax.__version__} on {jax.default_backend()}, ms = median [min] of "
        f"{args.reps} reps round-robin"
    )
    print(f"{'cell':<12}{'pass':<9}{'fused ms':>16}{'generic ms':>16}{'speedup':>14}")
    for name in (cls.__name__ for cls in CELLS):
        for pass_ in ("fwd", "fwd+bwd"):
            fused, generic = (
                times[f"{name} {k} {pass_}"] for k in ("fused", "generic")
            )
            med = statistics.median(generic) / statistics.median(fused)
            best = min(generic) / min(fused)
            print(
                f"{name:<12}{pass_:<9}"
                f"{statistics.median(fused):9.1f} [{min(fused):5.1f}]"
                f"{statistics.median(generic):9.1f} [{min(generic):5.1f}]"
                f"{med:8.2f}x [{best:.2f}x]"
            )


if __name__ == "__main__":
    main()
