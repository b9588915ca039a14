"""`benchmarks/bench.py` against PyTorch under each setting of glibc's allocator.

XLA and PyTorch both take their large CPU buffers from the C library's `malloc`.
With glibc's defaults a buffer above the mmap threshold (at most 32 MiB), or one in
a thread's arena that empties, is freshly mapped on every call and returned to the
kernel when freed, so every call pays a page fault per 4 KiB the first time it
touches it (a few ms per 32 MiB here). The glibc tunables below change that, and
they change PyTorch's times far more than XLA's, which decides how a speed
comparison between the two comes out. Each setting runs `bench.py` in a fresh
process (the tunables are read at start-up), settings interleaved over `--rounds`
rounds:

    python benchmarks/allocator_study.py --rounds 2 --reps 5 \\
        --json benchmarks/cpu-2core-allocator.json

For each cell, size and pass it prints eqrnn's and PyTorch's time (the smallest of
the rounds' medians, ms) under each setting and their ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any


# `_harness` and `bench.py` sit next to this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import SIZES, parse_size, positive_int


BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")


# Larger than any heap this machine can hold: freed memory is never trimmed.
_NEVER = str(2**36)
SETTINGS = {
    "default": "",
    # Transparent huge pages for mmapped buffers: a fault per 2 MiB, not per 4 KiB.
    "hugetlb": "glibc.malloc.hugetlb=1",
    # Freed memory stays mapped and the next call reuses it: one arena (a thread's
    # own arena is a 64 MiB heap that is unmapped whenever it empties), no mmap for
    # large buffers, no trimming (eqrnn's LSTM at mid size: no page fault per call,
    # against 6500 forward and 16400 forward+backward with the defaults).
    "keep": (
        f"glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
        f"glibc.malloc.trim_threshold={_NEVER}"
    ),
}


def run_bench(tunables: str, bench_args: list[str]) -> dict[str, Any]:
    """One `bench.py` process with `GLIBC_TUNABLES=tunables`; its JSON report."""
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        argv = [sys.executable, BENCH, *bench_args, "--json", path]
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def best_medians(reports: list[dict[str, Any]]) -> dict[tuple[str, ...], float]:
    """(cell, size, pass, implementation) -> the smallest median over `reports`."""
    best: dict[tuple[str, ...], float] = {}
    for report in reports:
        for record in report["results"]:
            for pass_ in ("fwd", "fwd_bwd"):
                if not record.get(pass_):
                    continue
                key = (record["cell"], record["size"]["name"], pass_)
                key = (*key, record["implementation"])
                ms = record[pass_]["median_ms"]
                best[key] = min(best.get(key, ms), ms)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=str(__doc__).splitlines()[0])
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--reps", type=positive_int, default=5)
    parser.add_argument(
        "--cells", nargs="+", choices=["lstm", "gru"], default=["lstm", "gru"]
    )
    parser.add_argument(
        "--sizes", nargs="+", choices=list(SIZES), default=["mid", "large"]
    )
    parser.add_argument(
        "--size", type=parse_size, help="T,B,I,H: a custom size instead of --sizes"
    )
    parser.add_argument(
        "--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS)
    )
    parser.add_argument("--json", help="also write every report to this path")
    args = parser.parse_args()
    bench_args = ["--cells", *args.cells, "--peers", "torch"]
    bench_args += ["--reps", str(args.reps)]
    if args.size:
        bench_args += ["--size", ",".join(map(str, args.size))]
    else:
        bench_args += ["--sizes", *args.sizes]

    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in args.settings}
    for _ in range(args.rounds):
        for name in args.settings:
            reports[name].append(run_bench(SETTINGS[name], bench_args))
    best = {name: best_medians(runs) for name, runs in reports.items()}

    print(
        f"bench.py {' '.join(bench_args)}, one process per setting and round, "
        f"{args.rounds} round(s) interleaved; ms = smallest median of the rounds"
    )
    for name in args.settings:
        print(f"  {name}: GLIBC_TUNABLES={SETTINGS[name] or '(unset)'}")
    header = f"{'cell size pass':<20}" + "".join(
        f"{name + ' eqrnn|torch|ratio':>34}" for name in args.settings
    )
    print(header)
    rows = sorted(k[:3] for k in best[args.settings[0]] if k[3] == "eqrnn")
    for cell, size, pass_ in rows:
        cols = []
        for name in args.settings:
            mine = best[name][cell, size, pass_, "eqrnn"]
            torch = best[name][cell, size, pass_, "torch"]
            cols.append(f"{mine:9.1f} {torch:9.1f} {mine / torch:6.2f}x")
        print(f"{f'{cell} {size} {pass_}':<20}" + "".join(f"{c:>34}" for c in cols))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": SETTINGS, "reports": reports}, f, indent=1)


if __name__ == "__main__":
    main()
