"""eqrnn against PyTorch cuDNN, Flax NNX and Equinox on the default JAX device.

Forward+backward of an LSTM or GRU over a batch of sequences (batch first,
float32, each library's default matmul precision): the loss is the sum of the
output `h` of every step and example, and its gradient is taken w.r.t. the
parameters and the inputs. Every implementation starts from the same weights and
inputs (converted with `eqrnn.interop`), and their losses are cross-checked.

- eqrnn: `jax.vmap(eqrnn.RNN(cell, unroll=...))`, with the defaults (`"auto"`),
  each `--unroll` given, (`--generic`) with the cell's generic step in place of its
  fused one, (`--cpu-path`) under `eqrnn.tuned_for("cpu")`, and (`--newton`) by
  Newton's method with each linearisation given (`mode=eqrnn.Newton(...)`);
- PyTorch: `torch.nn.LSTM`/`GRU` on CUDA (cuDNN) when there is a GPU, synchronised
  after each call, else on the CPU;
- Flax NNX: `nnx.RNN` of `nnx.LSTMCell`/`GRUCell`, split into a pure function;
- Equinox: `eqx.nn.LSTMCell`/`GRUCell` under a hand-written `lax.scan` in `vmap`.

JAX functions are compiled ahead of time (the wall time of `.compile()` is the
compile time); each repetition then calls every implementation once, round-robin,
and the median is reported. `--drift` also measures how far float32 at the default
matmul precision (TF32 on NVIDIA GPUs) and at "highest" drift from float64 as the
sequence grows. At the default sizes the whole run takes about 5 minutes on one H200:

    python benchmarks/accelerator.py --unroll 1,4,16,32 --cpu-path --drift \
        --json accelerator.json
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import eqrnn


# `_harness` sits next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import generic_step_options


# (cell, T, B, I, H): the sizes of BENCHMARKS.md's accelerator table.
SIZES = {
    "small": (256, 32, 64, 256),
    "mid": (512, 128, 256, 512),
    "long": (2048, 16, 64, 128),
}
# Issue #20's longest case, for `--newton` (not in the default sizes).
EXTRA = {"verylong": (16384, 8, 32, 64)}
TINY = {"tiny": (12, 3, 4, 5)}


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def _names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [v for v in text.split(",") if v]
        bad = [v for v in names if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {choices}")
        return names

    return parse


def _timed_compile(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    lowered = jax.jit(fn).lower(*args)
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def _jax_case(loss: Callable[..., Any], params: Any, xs: Any) -> dict[str, Any]:
    grad = jax.value_and_grad(loss, argnums=(0, 1))
    compiled, seconds = _timed_compile(grad, params, xs)
    return {
        "call": lambda: jax.block_until_ready(compiled(params, xs)),
        "loss": lambda out: float(out[0]),
        "compile_s": seconds,
    }


def eqrnn_case(rnn: eqrnn.RNN, xs: Any) -> dict[str, Any]:
    params, static = eqx.partition(rnn, eqx.is_inexact_array)

    def loss(params: Any, xs: Any) -> Any:
        return jnp.sum(jax.vmap(eqx.combine(params, static))(xs))

    return _jax_case(loss, params, xs)


def equinox_case(cell: Any, lstm: bool, xs: Any) -> dict[str, Any]:
    params, static = eqx.partition(cell, eqx.is_inexact_array)
    zeros = jnp.zeros(cell.hidden_size, xs.dtype)

    def loss(params: Any, xs: Any) -> Any:
        module = eqx.combine(params, static)

        def one(x: Any) -> Any:
            def body(carry: Any, x_t: Any) -> Any:
                carry = module(x_t, carry)
                return carry, carry[0] if lstm else carry

            return jax.lax.scan(body, (zeros, zeros) if lstm else zeros, x)[1]

        return jnp.sum(jax.vmap(one)(xs))

    return _jax_case(loss, params, xs)


def flax_case(rnn: eqrnn.RNN, lstm: bool, xs: Any) -> dict[str, Any]:
    from flax import nnx

    graphdef, params, rest = nnx.split(
        eqrnn.interop.to_flax(rnn, lstm_type="plain"), nnx.Param, ...
    )
    hidden: int = getattr(rnn.cell, "hidden_size")  # noqa: B009

    def loss(params: Any, xs: Any) -> Any:
        zeros = jnp.zeros((xs.shape[0], hidden), xs.dtype)
        # An explicit carry: Flax would otherwise draw it from the module's Rngs.
        carry = (zeros, zeros) if lstm else zeros
        # Typed Any: nnx.RNN's return type also covers `return_carry=True`.
        module: Any = nnx.merge(graphdef, params, rest)
        return jnp.sum(module(xs, initial_carry=carry))

    return _jax_case(loss, params, xs)


def torch_case(rnn: eqrnn.RNN, xs: Any) -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = eqrnn.interop.to_torch(rnn, batch_first=True).to(device)
    inputs = torch.tensor(np.asarray(xs), device=device, requires_grad=True)

    def call() -> Any:
        module.zero_grad(set_to_none=True)
        inputs.grad = None
        loss = module(inputs)[0].sum()
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return loss.detach()

    start = time.perf_counter()
    call()
    return {
        "call": call,
        "loss": lambda out: float(out.cpu()),
        "compile_s": None,
        "first_call_s": time.perf_counter() - start,
        "device": device,
    }


def bench_size(
    kind: str, size: tuple[int, int, int, int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    steps, batch, input_size, hidden = size
    cls = eqrnn.LSTMCell if kind == "lstm" else eqrnn.GRUCell
    keys = jr.split(jr.key(0), 3)

    def make(**options: Any) -> Any:
        cell = cls(input_size, hidden, dtype=jnp.float32, key=keys[0], **options)
        if isinstance(cell, eqrnn.GRUCell):
            # Flax's GRUCell has no b_hn.
            assert cell.bias_hn is not None
            zeros = jnp.zeros_like(cell.bias_hn)
            cell = eqx.tree_at(lambda c: c.bias_hn, cell, zeros)
        return cell

    cell = make()
    xs = jr.normal(keys[1], (batch, steps, input_size), jnp.float32)
    cases: dict[str, dict[str, Any]] = {"eqrnn": eqrnn_case(eqrnn.RNN(cell), xs)}
    for unroll in args.unroll:
        rnn = eqrnn.RNN(cell, unroll=unroll)
        cases[f"eqrnn unroll={unroll}"] = eqrnn_case(rnn, xs)
    if args.generic:
        # The same parameters (the same key), another sigmoid or tanh object.
        generic = make(**generic_step_options(cls))
        cases["eqrnn generic step"] = eqrnn_case(eqrnn.RNN(generic), xs)
    if args.cpu_path:
        with eqrnn.tuned_for("cpu"):
            cases["eqrnn cpu path"] = eqrnn_case(eqrnn.RNN(cell), xs)
    for linearisation in args.newton:
        rnn = eqrnn.RNN(cell, mode=eqrnn.Newton(linearisation))
        cases[f"eqrnn newton-{linearisation}"] = eqrnn_case(rnn, xs)
    for peer in args.peers:
        if peer == "torch":
            cases["torch"] = torch_case(eqrnn.RNN(cell), xs)
        elif peer == "flax":
            cases["flax"] = flax_case(eqrnn.RNN(cell), kind == "lstm", xs)
        else:
            cases["equinox"] = equinox_case(
                eqrnn.interop.to_equinox(cell), kind == "lstm", xs
            )
    losses = {name: case["loss"](case["call"]()) for name, case in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for rep in range(args.reps):
        names = list(cases)
        names = names[rep % len(names) :] + names[: rep % len(names)]
        for name in names:
            start = time.perf_counter()
            cases[name]["call"]()
            times[name].append(1e3 * (time.perf_counter() - start))
    reference = losses["eqrnn"]
    rows = []
    for name, case in cases.items():
        median = statistics.median(times[name])
        rows.append(
            {
                "cell": kind,
                "T": steps,
                "B": batch,
                "I": input_size,
                "H": hidden,
                "impl": name,
                "fwd_bwd_ms": median,
                "min_ms": min(times[name]),
                "compile_s": case["compile_s"],
                "loss": losses[name],
                "loss_rel_diff": abs(losses[name] - reference) / abs(reference),
            }
        )
    if "torch" in cases:
        base = statistics.median(times["torch"])
        for row in rows:
            row["vs_torch"] = row["fwd_bwd_ms"] / base
    return rows


def drift(steps_list: list[int]) -> list[dict[str, Any]]:
    """Max |h - h_float64| / max |h_float64| over the first T steps, for float32 at
    the default and at the highest matmul precision."""
    rows = []
    batch, input_size, hidden = 8, 64, 256
    longest = max(steps_list)
    for cls in (eqrnn.GRUCell, eqrnn.LSTMCell):
        cell = cls(input_size, hidden, dtype=jnp.float32, key=jr.key(0))
        xs = jr.normal(jr.key(1), (batch, longest, input_size), jnp.float32)

        def outputs(cell: Any, xs: Any) -> Any:
            return jax.vmap(eqrnn.RNN(cell))(xs)

        with jax.enable_x64(True):
            wide = jax.tree.map(lambda a: a.astype(jnp.float64), (cell, xs))
            exact = np.asarray(jax.jit(outputs)(*wide))
        results = {}
        for precision in ("default", "highest"):
            with jax.default_matmul_precision(precision):
                results[precision] = np.asarray(jax.jit(outputs)(cell, xs))
        scale = np.abs(exact).max()
        for steps in steps_list:
            row: dict[str, Any] = {"cell": cls.__name__, "T": steps}
            for precision, values in results.items():
                err = np.abs(values[:, :steps] - exact[:, :steps]).max() / scale
                row[f"{precision}_rel_err"] = float(err)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cells", type=_names(("lstm", "gru")), default="lstm,gru")
    parser.add_argument(
        "--sizes", type=_names((*SIZES, *EXTRA, *TINY)), default=",".join(SIZES)
    )
    parser.add_argument(
        "--newton",
        type=_names(("full", "blocks", "diagonal")),
        default=[],
        help="e.g. full,blocks,diagonal",
    )
    parser.add_argument("--unroll", type=_ints, default=[], help="e.g. 1,4,16,32")
    parser.add_argument("--generic", action="store_true")
    parser.add_argument("--cpu-path", action="store_true")
    parser.add_argument(
        "--peers",
        type=_names(("torch", "flax", "equinox")),
        default="torch,flax,equinox",
    )
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--drift", action="store_true")
    parser.add_argument("--drift-steps", type=_ints, default=[64, 256, 1024, 4096])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(
        f"# jax {jax.__version__} on {device.device_kind} ({jax.default_backend()}), "
        f"eqrnn {eqrnn.__version__}, fwd+bwd ms (median of {args.reps}), float32"
    )
    rows = []
    for kind in args.cells:
        for name in args.sizes:
            size = {**SIZES, **EXTRA, **TINY}[name]
            print(f"\n{kind.upper()} T={size[0]} B={size[1]} I={size[2]} H={size[3]}")
            for row in bench_size(kind, size, args):
                rows.append(row)
                ratio = f"{row['vs_torch']:.2f}x" if "vs_torch" in row else ""
                compile_s = row["compile_s"]
                print(
                    f"  {row['impl']:<20} {row['fwd_bwd_ms']:9.2f} ms  {ratio:>6}  "
                    + ("" if compile_s is None else f"compile {compile_s:5.1f} s  ")
                    + f"loss rel diff {row['loss_rel_diff']:.1e}"
                )
    drift_rows = drift(args.drift_steps) if args.drift else []
    for row in drift_rows:
        print(
            f"drift {row['cell']} T={row['T']}: default "
            f"{row['default_rel_err']:.1e}, highest {row['highest_rel_err']:.1e}"
        )
    if args.json:
        record = {
            "argv": sys.argv,
            "machine": {
                "jax": jax.__version__,
                "backend": jax.default_backend(),
                "device": device.device_kind,
                "eqrnn": eqrnn.__version__,
            },
            "rows": rows,
            "drift": drift_rows,
        }
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
