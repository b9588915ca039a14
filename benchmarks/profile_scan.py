"""Where the time of a compiled scan goes: XLA's CPU thunks, summed by name.

Runs `eqrnn.scan_all_hidden` over a vmapped batch (forward, or forward+backward
with gradients w.r.t. parameters and inputs) under `jax.profiler.trace`, reads the
Perfetto trace it writes, and prints the thunks that took the most time, per call.
This is how the fused step's choices were found (benchmarks/NOTES.md: the layout of
the matmuls' weight operand, the elementwise passes, the arrays saved per step):

    python benchmarks/profile_scan.py --cell lstm --pass fwd_bwd
    python benchmarks/profile_scan.py --cell lstm --pass fwd_bwd --generic
    python benchmarks/profile_scan.py --cell gru --hlo /tmp/gru.hlo

Thunk names are XLA's (`ynn_fusion` is a matmul run by YNNPACK, `dot` one run by
XLA's own emitter, `wrapped_broadcast` a fill); `--hlo` writes the optimised HLO
so that a name can be looked up. The profiler adds a little time to every thunk.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import jax.random as jr

import eqrnn


# `_harness` sits next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import generic_step_options, parse_size, positive_int, scan_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    parser.add_argument(
        "--pass", dest="pass_", choices=["fwd", "fwd_bwd"], default="fwd"
    )
    parser.add_argument(
        "--size", type=parse_size, default="256,32,64,256", help="T,B,I,H"
    )
    parser.add_argument("--generic", action="store_true", help="the generic step")
    parser.add_argument("--reps", type=positive_int, default=3)
    parser.add_argument("--top", type=positive_int, default=20)
    parser.add_argument("--hlo", help="write the optimised HLO to this file")
    args = parser.parse_args()
    steps, batch, input_size, hidden = args.size
    cls = eqrnn.LSTMCell if args.cell == "lstm" else eqrnn.GRUCell
    options = generic_step_options(cls) if args.generic else {}
    cell = cls(input_size, hidden, dtype=jnp.float32, key=jr.key(0), **options)
    loss, params = scan_loss(cell)
    xs = jr.normal(jr.key(1), (batch, steps, input_size), jnp.float32)
    fn = jax.value_and_grad(loss, argnums=(0, 1)) if args.pass_ == "fwd_bwd" else loss
    call = jax.jit(fn)
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(call.lower(params, xs).compile().as_text() or "")
    for _ in range(2):
        jax.block_until_ready(call(params, xs))
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(args.reps):
                jax.block_until_ready(call(params, xs))
        (path,) = glob.glob(f"{directory}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name.startswith(("$", "end:")):
            continue
        totals[name][0] += 1
        totals[name][1] += event["dur"]
    print(
        f"{args.cell} {args.pass_} "
        f"({'generic' if args.generic else 'fused'} step), T={steps} B={batch} "
        f"I={input_size} H={hidden}: ms per call, calls per call, thunk"
    )
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])
    for name, (count, micros) in ranked[: args.top]:
        print(f"{micros / args.reps / 1e3:9.2f} ms {count // args.reps:6d}x  {name}")


if __name__ == "__main__":
    main()
