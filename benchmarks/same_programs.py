"""Hash the compiled forward+backward program of each built-in cell's default path
(vmapped `scan_all_hidden`, loss = sum of every state), under the CPU's and the GPU's
choices, with source locations stripped: two trees that print the same hashes compile
the same programs, so they run at the same speed.

    PYTHONPATH=<tree> python benchmarks/same_programs.py > hashes.txt
    diff hashes-before.txt hashes-after.txt   # nothing: the same programs
"""

import argparse
import hashlib
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp

import eqrnn


BATCH, STEPS, IN, HIDDEN = 4, 16, 8, 8


def cells(only: list[str] | None = None) -> dict[str, Any]:
    key = jax.random.key(0)
    found = {}
    for name in sorted(eqrnn.__all__):
        if only and name not in only:
            continue
        obj: Any = getattr(eqrnn, name)
        if not (isinstance(obj, type) and issubclass(obj, eqrnn.AbstractCell)):
            continue
        if name.startswith("Abstract") or name in ("CallableCell", "ConvLSTMCell"):
            continue
        make: Any = obj  # a built-in cell class: (input_size, hidden_size, *, key)
        found[name] = make(IN, IN if name == "RGLRU" else HIDDEN, key=key)
    return found


def strip(text: str) -> str:
    """The program without where it came from: the stack-frame tables, the
    metadata and the frame ids."""
    lines = text.splitlines()
    kept, skipping = [], False
    for line in lines:
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            skipping = True
            continue
        if skipping and (line == "" or line[0].isdigit()):
            continue
        skipping = False
        kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r", metadata=\{[^}]*\}", "", text)
    return re.sub(r",? ?stack_frame_id=\d+", "", text)


def program(cell: Any, platform: Any, mode: Any) -> str:
    xs = jnp.ones((BATCH, STEPS, IN), cell.dtype)

    def loss(cell, xs):
        hs = jax.vmap(lambda x: eqrnn.scan_all_hidden(cell, x, mode=mode))(xs)
        return sum(jnp.sum(h) for h in jax.tree.leaves(hs))

    with eqrnn.tuned_for(platform):
        lowered = jax.jit(jax.grad(loss)).lower(cell, xs)
    return strip(lowered.compile().as_text() or "")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cells", help="comma-separated cell names (default all)")
    args = parser.parse_args()
    only = args.cells.split(",") if args.cells else None
    for name, cell in cells(only).items():
        for platform in ("cpu", "gpu"):
            for mode in ("auto", "sequential"):
                digest = hashlib.sha256(
                    program(cell, platform, mode).encode()
                ).hexdigest()
                print(name, platform, mode, digest[:16])
                sys.stdout.flush()


if __name__ == "__main__":
    main()
