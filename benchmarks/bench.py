"""Time eqrnn against PyTorch, Flax NNX and Equinox, or run one of eqrnn's studies.

    python benchmarks/bench.py                # LSTM and GRU at three sizes, all peers
    python benchmarks/bench.py --size 512,16,32,128 --peers torch --json out.json
    python benchmarks/bench.py --checkpoint-study
    python benchmarks/bench.py --parallel-study
    python benchmarks/bench.py --long-study
    python benchmarks/bench.py --help         # every option

The tables go to stdout; `--json PATH` also records the machine, the command line and
every raw time. The work is done by `_harness.py`, next to this file.
"""

import argparse
import os
import sys
from collections.abc import Sequence


# `_harness` sits next to this script, which runs as `python benchmarks/bench.py`.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (
    ALL_CELLS,
    CELLS,
    CHECKPOINT_STUDY_SIZE,
    LINEAR_CELLS,
    LONG_BATCH,
    LONG_CELLS,
    LONG_HIDDEN,
    LONG_LENGTHS,
    LONG_REPS,
    NEWTON_MODES,
    PARALLEL_BATCH,
    PARALLEL_CELLS,
    PARALLEL_HIDDEN,
    PARALLEL_LENGTHS,
    PARALLEL_REPS,
    PEERS,
    SCAN_MODES,
    SIZES,
    STUDY_WARMUP,
    BenchConfig,
    Size,
    parse_size,
    parse_unroll,
    positive_float,
    positive_int,
    run_bench,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run with `argv` (default `sys.argv[1:]`); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The exact command, for the record (`--json`).
    if argv is None:
        command = [sys.executable, *sys.argv]
    else:
        command = [sys.executable, __file__, *argv]
    return run(args, parser, command)


def build_parser() -> argparse.ArgumentParser:
    sizes = "; ".join(f"{s.name}: {s.describe()}" for s in SIZES.values())
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description=(
            "Time eqrnn against every installed peer on the same weights and inputs "
            "(float32, batch first): PyTorch nn.LSTM/nn.GRU, Flax NNX nnx.RNN with "
            "LSTMCell/OptimizedLSTMCell/GRUCell, and Equinox's cells under a "
            "hand-written lax.scan + vmap. Each computes every hidden state and the "
            "loss sum(h); fwd+bwd adds the gradients w.r.t. parameters and inputs. "
            "Prints median [min] times in ms, ratios to PyTorch, eqrnn's speedup vs "
            "Flax, compile time and peak memory. A peer that cannot be imported is "
            "skipped with a note. --checkpoint-study, --parallel-study and "
            "--long-study run eqrnn alone instead (see below)."
        ),
        epilog=f"Sizes: {sizes}.",
    )
    parser.add_argument(
        "--cells",
        nargs="+",
        choices=ALL_CELLS,
        default=None,
        help="cells to run (default: lstm gru; --parallel-study: "
        f"{' '.join(PARALLEL_CELLS)}; --long-study: all). The comparison and "
        "--checkpoint-study take lstm and gru only",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        choices=tuple(SIZES),
        default=None,
        help="named sizes (default: all three, unless --size is given)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        metavar="T,B,I,H",
        help="a custom size: time steps, batch, input size, hidden size",
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=PEERS,
        default=list(PEERS),
        help="peers to compare with (default: all; none: eqrnn alone)",
    )
    parser.add_argument(
        "--mode",
        choices=("both", "fwd", "fwd+bwd"),
        default="both",
        help="forward only, forward+backward, or both (default)",
    )
    parser.add_argument(
        "--reps",
        type=positive_int,
        default=None,
        help="timed repetitions of each implementation, round-robin (default 10; "
        f"--parallel-study {PARALLEL_REPS}, --long-study {LONG_REPS})",
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help="untimed calls of each implementation before timing, the first "
        f"included (default 2; the studies {STUDY_WARMUP})",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="also write machine info, the command line and every raw time to PATH",
    )
    parser.add_argument(
        "--unroll",
        type=parse_unroll,
        default="auto",
        help="eqrnn only: steps unrolled per lax.scan iteration, a positive int or "
        "'auto' (the default: the platform's choice)",
    )
    parser.add_argument(
        "--checkpoint",
        nargs="?",
        type=positive_int,
        const=True,
        default=False,
        metavar="CHUNK",
        help="eqrnn only: recompute the forward pass in the backward pass, in chunks "
        "of about sqrt(T) steps, or of CHUNK steps",
    )
    study = CHECKPOINT_STUDY_SIZE.describe()
    studies = parser.add_mutually_exclusive_group()
    studies.add_argument(
        "--checkpoint-study",
        action="store_true",
        help="instead of the comparison, time eqrnn LSTM fwd+bwd with "
        f"checkpoint=False against checkpoint=True at {study} (or --size), and "
        "report the time and memory ratios; --cells, --peers and --mode do not apply",
    )
    lengths = " ".join(str(t) for t in PARALLEL_LENGTHS)
    studies.add_argument(
        "--parallel-study",
        action="store_true",
        help="instead of the comparison, time eqrnn's parallel-in-time cells "
        f"({', '.join(LINEAR_CELLS)}) in every --scan-modes next to eqrnn's GRUCell "
        f"at each of --lengths (default {lengths}), B={PARALLEL_BATCH} "
        f"(--batch-size), I=H={PARALLEL_HIDDEN} (--hidden-size): fwd and fwd+bwd "
        "(--mode) ms, tokens/s, speedup over GRUCell, compile time, peak memory. "
        "Any cell can be named in --cells (mlstm runs in every --scan-modes, the "
        "others in their one loop); leave gru out to skip the baseline",
    )
    lengths = " ".join(str(t) for t in LONG_LENGTHS)
    studies.add_argument(
        "--long-study",
        action="store_true",
        help="instead of the comparison, run fwd+bwd of every eqrnn cell with "
        f"checkpoint=True and checkpoint=False at each of --lengths (default "
        f"{lengths}), B={LONG_BATCH} (--batch-size), I=H={LONG_HIDDEN} "
        "(--hidden-size), each configuration in a fresh process: time, XLA's "
        "planned peak, the process's peak resident memory, and whether the loss "
        "and gradients are finite",
    )
    parser.add_argument(
        "--lengths",
        nargs="+",
        type=positive_int,
        default=None,
        metavar="T",
        help="studies only: the sequence lengths",
    )
    parser.add_argument(
        "--scan-modes",
        nargs="+",
        choices=("auto", *SCAN_MODES, *NEWTON_MODES),
        default=None,
        help="studies only: how the parallel-in-time cells run over time "
        "(scan_all_hidden's mode=; default: all three for --parallel-study, auto "
        "for --long-study); the newton ones run the step-by-step cells by Newton's "
        "method (newton-full/-blocks/-diagonal: eqrnn.Newton's linearisation), "
        "next to their default",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help=f"studies only: sequences per batch (default {PARALLEL_BATCH}; "
        f"--long-study {LONG_BATCH})",
    )
    parser.add_argument(
        "--hidden-size",
        type=positive_int,
        default=None,
        help="studies only: the hidden size, also the input size (default "
        f"{PARALLEL_HIDDEN}; --long-study {LONG_HIDDEN})",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="--long-study only: run every configuration in this process (faster; "
        "no per-configuration peak resident memory)",
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=positive_float,
        default=None,
        metavar="GIB",
        help="--long-study only: compile but do not run a configuration for which "
        "XLA plans more than GIB (default 4)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the weights and inputs (default 0)"
    )
    return parser


def run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, command: Sequence[str]
) -> int:
    """Check the options as a whole (a usage error exits with status 2), then run
    the benchmark they describe; `command` is recorded in the JSON report."""
    error = parser.error
    parallel, long = args.parallel_study, args.long_study
    study_name = "--parallel-study" if parallel else "--long-study"
    if (parallel or long) and (args.sizes or args.size is not None):
        error(
            f"{study_name} takes --lengths, --batch-size and --hidden-size, not "
            "--sizes or --size T,B,I,H"
        )
    if args.checkpoint_study and args.sizes:
        error("--checkpoint-study takes --size T,B,I,H, not --sizes")
    if (parallel or long) and (args.unroll != "auto" or args.checkpoint is not False):
        error(
            f"--unroll and --checkpoint do not apply to {study_name} (--long-study "
            "runs checkpoint=True and checkpoint=False)"
        )
    if not (parallel or long):
        for option in ("lengths", "scan_modes", "batch_size", "hidden_size"):
            if getattr(args, option) is not None:
                error(
                    f"--{option.replace('_', '-')} applies to --parallel-study and "
                    "--long-study only"
                )
    if not long:
        if args.in_process:
            error("--in-process applies to --long-study only")
        if args.memory_limit_gib is not None:
            error("--memory-limit-gib applies to --long-study only")
    cells = tuple(dict.fromkeys(args.cells)) if args.cells else None
    allowed = ALL_CELLS if parallel else LONG_CELLS if long else CELLS
    if cells is not None and not set(cells) <= set(allowed):
        what = study_name if parallel or long else "the comparison"
        if args.checkpoint_study:
            what = "--checkpoint-study"
        bad = " ".join(c for c in cells if c not in allowed)
        error(f"{what} takes --cells among {' '.join(allowed)}, not {bad}")
    if args.sizes is None and args.size is None and not args.checkpoint_study:
        names = [] if parallel or long else list(SIZES)
    else:
        names = args.sizes or []
    sizes = [SIZES[name] for name in dict.fromkeys(names)]
    if args.size is not None:
        sizes.append(Size("custom", *args.size))
    passes = {"both": ("fwd", "fwd_bwd"), "fwd": ("fwd",), "fwd+bwd": ("fwd_bwd",)}
    if parallel:
        reps, warmup = PARALLEL_REPS, STUDY_WARMUP
    elif long:
        reps, warmup = LONG_REPS, STUDY_WARMUP
    else:
        reps, warmup = 10, 2
    config = BenchConfig(
        cells=cells or (() if parallel or long else CELLS),
        sizes=tuple(sizes),
        peers=tuple(dict.fromkeys(args.peers)),
        passes=("fwd_bwd",) if long else passes[args.mode],
        reps=args.reps or reps,
        warmup=args.warmup or warmup,
        unroll=args.unroll,
        checkpoint=args.checkpoint,
        checkpoint_study=args.checkpoint_study,
        parallel_study=parallel,
        long_study=long,
        lengths=tuple(dict.fromkeys(args.lengths or ())),
        scan_modes=tuple(dict.fromkeys(args.scan_modes or ())),
        batch_size=args.batch_size,
        hidden_size=args.hidden_size,
        in_process=args.in_process,
        memory_limit_gib=args.memory_limit_gib or 4.0,
        json_path=args.json,
        seed=args.seed,
        command=tuple(command),
    )
    run_bench(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
