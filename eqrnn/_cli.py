"""The `eqrnn` command line: `eqrnn COMMAND [options]`, also `python -m eqrnn`.

Each command is a pair of functions here, `_add_<command>_parser(subparsers)` and
`_run_<command>(args) -> int`, registered in `_build_parser`; the work itself lives in
its own module (`_bench.py` for `bench`). Peers such as torch and flax are imported
only when a command runs them.
"""

import argparse
import sys
from collections.abc import Sequence

from ._bench import CHECKPOINT_STUDY_SIZE, PEERS, SIZES, BenchConfig, Size, run_bench


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `eqrnn` command line with `argv` (default `sys.argv[1:]`); returns the
    exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    # The exact command, for the record (e.g. in `bench --json`).
    args.command_line = list(sys.argv) if argv is None else ["eqrnn", *argv]
    return args.run(args)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eqrnn",
        description="Recurrent networks for Equinox and JAX: command-line tools.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_parser(subparsers)
    _add_bench_parser(subparsers)
    return parser


# --- demo --------------------------------------------------------------------------


def _add_demo_parser(subparsers: "argparse._SubParsersAction") -> None:
    demo = subparsers.add_parser(
        "demo",
        help="train a small RNN on handwritten digits (about 30 s on 2 CPU cores)",
        description=(
            "Train an eqrnn classifier under eqx.filter_jit with optax on "
            "scikit-learn's 8x8 handwritten digits, read one pixel row per time step "
            "(shipped with scikit-learn: nothing is downloaded). Shows a progress "
            "bar, prints the held-out accuracy, and writes a plot of hidden-state "
            "trajectories and a checkpoint. Needs pip install 'eqrnn[examples]'."
        ),
    )
    demo.add_argument(
        "--cell",
        choices=("gru", "lstm", "mgu", "simple"),
        default="gru",
        help="the recurrent cell (default gru)",
    )
    demo.add_argument(
        "--hidden-size", type=_positive_int, default=64, help="default 64"
    )
    demo.add_argument(
        "--steps", type=_positive_int, default=500, help="Adam steps (default 500)"
    )
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="default 64")
    demo.add_argument("--learning-rate", type=float, default=3e-3, help="default 3e-3")
    demo.add_argument(
        "--out",
        default="eqrnn-demo",
        help="folder for hidden_states.png and model.eqx (default ./eqrnn-demo)",
    )
    demo.add_argument("--seed", type=int, default=0, help="default 0")
    demo.set_defaults(run=_run_demo, parser=demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    print(
        f"Training a {args.cell.upper()} (hidden size {args.hidden_size}) on "
        "scikit-learn's handwritten digits, one 8-pixel row per time step..."
    )
    result = run_demo(
        cell=args.cell,
        hidden_size=args.hidden_size,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        out_dir=args.out,
        seed=args.seed,
    )
    print(
        f"Held-out accuracy: {100 * result['test_accuracy']:.1f}% on "
        f"{result['test_size']} test images (final training loss "
        f"{result['final_loss']:.4f}, {result['seconds']:.0f} s)."
    )
    print(f"Hidden-state trajectories: {result['plot']}")
    print(f"Checkpoint (model, optimiser state, step): {result['checkpoint']}")
    return 0


# --- bench -------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) <= 0:
        raise argparse.ArgumentTypeError(
            "expected four positive integers T,B,I,H (time steps, batch, input size, "
            f"hidden size), got {text!r}"
        )
    return values  # pyright: ignore[reportReturnType]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_bench_parser(subparsers: "argparse._SubParsersAction") -> None:
    sizes = "; ".join(f"{s.name}: {s.describe()}" for s in SIZES.values())
    bench = subparsers.add_parser(
        "bench",
        help="time eqrnn against PyTorch, Flax NNX and Equinox",
        description=(
            "Time eqrnn against every installed peer on the same weights and inputs "
            "(float32, batch first): PyTorch nn.LSTM/nn.GRU, Flax NNX nnx.RNN with "
            "LSTMCell/OptimizedLSTMCell/GRUCell, and Equinox's cells under a "
            "hand-written lax.scan + vmap. Each computes every hidden state and the "
            "loss sum(h); fwd+bwd adds the gradients w.r.t. parameters and inputs. "
            "Prints median [min] times in ms, ratios to PyTorch, eqrnn's speedup vs "
            "Flax, compile time and peak memory. A peer that cannot be imported is "
            "skipped with a note."
        ),
        epilog=f"Sizes: {sizes}.",
    )
    bench.add_argument(
        "--cells",
        nargs="+",
        choices=("lstm", "gru"),
        default=["lstm", "gru"],
        help="cells to run (default: lstm gru)",
    )
    bench.add_argument(
        "--sizes",
        nargs="+",
        choices=tuple(SIZES),
        default=None,
        help="named sizes (default: all three, unless --size is given)",
    )
    bench.add_argument(
        "--size",
        type=_size,
        default=None,
        metavar="T,B,I,H",
        help="a custom size: time steps, batch, input size, hidden size",
    )
    bench.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=list(PEERS),
        help="peers to compare with (default: all; none: eqrnn alone)",
    )
    bench.add_argument(
        "--mode",
        choices=("both", "fwd", "fwd+bwd"),
        default="both",
        help="forward only, forward+backward, or both (default)",
    )
    bench.add_argument(
        "--reps",
        type=_positive_int,
        default=10,
        help="timed repetitions of each implementation, round-robin (default 10)",
    )
    bench.add_argument(
        "--warmup",
        type=_positive_int,
        default=2,
        help="untimed calls of each implementation before timing (default 2)",
    )
    bench.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write machine info, the command line and every raw time to PATH",
    )
    bench.add_argument(
        "--unroll",
        type=_positive_int,
        default=1,
        help="eqrnn only: steps unrolled per lax.scan iteration (default 1)",
    )
    bench.add_argument(
        "--checkpoint",
        nargs="?",
        type=_positive_int,
        const=True,
        default=False,
        metavar="CHUNK",
        help="eqrnn only: recompute the forward pass in the backward pass, in chunks "
        "of about sqrt(T) steps, or of CHUNK steps",
    )
    study = CHECKPOINT_STUDY_SIZE.describe()
    bench.add_argument(
        "--checkpoint-study",
        action="store_true",
        help="instead of the comparison, time eqrnn LSTM fwd+bwd with "
        f"checkpoint=False against checkpoint=True at {study} (or --size), and "
        "report the time and memory ratios; --cells, --peers and --mode do not apply",
    )
    bench.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and inputs (default 0)"
    )
    bench.set_defaults(run=_run_bench, parser=bench)


def _run_bench(args: argparse.Namespace) -> int:
    if args.checkpoint_study and args.sizes:
        args.parser.error("--checkpoint-study takes --size T,B,I,H, not --sizes")
    if args.sizes is None and args.size is None and not args.checkpoint_study:
        names = list(SIZES)
    else:
        names = args.sizes or []
    sizes = [SIZES[name] for name in dict.fromkeys(names)]
    if args.size is not None:
        sizes.append(Size("custom", *args.size))
    passes = {"both": ("fwd", "fwd_bwd"), "fwd": ("fwd",), "fwd+bwd": ("fwd_bwd",)}
    config = BenchConfig(
        cells=tuple(dict.fromkeys(args.cells)),
        sizes=tuple(sizes),
        peers=tuple(dict.fromkeys(args.peers)),
        passes=passes[args.mode],
        reps=args.reps,
        warmup=args.warmup,
        unroll=args.unroll,
        checkpoint=args.checkpoint,
        checkpoint_study=args.checkpoint_study,
        json_path=args.json,
        seed=args.seed,
        command=tuple(args.command_line),
    )
    run_bench(config)
    return 0
