"""The choices `"auto"` stands for on each platform, and `tuned_for` to force them.

The scan helpers make three choices by platform when a function is traced: whether
a step-by-step cell's input projection is made for every step in one matmul before
the loop (`hoists_projection`), how many steps `jax.lax.scan` unrolls
(`auto_unroll`), and which mode runs a cell (`eqrnn.Auto`, in `_modes.py`). The numbers
behind each are in BENCHMARKS.md.
"""

import contextlib
from collections.abc import Iterator
from typing import Any, Literal, TypeAlias

import jax


Platform: TypeAlias = Literal["cpu", "gpu", "tpu"]
Unroll: TypeAlias = int | bool | Literal["auto"]
PLATFORMS = ("cpu", "gpu", "tpu")

# Part of `jax.jit`'s cache key: a function traced under one platform's choices is
# traced again under another's, never served from the cache.
_tuned = jax.make_user_context(default_value=None)


@contextlib.contextmanager
def tuned_for(platform: Platform) -> Iterator[None]:
    """Make the choices of another platform: the code a GPU user runs, run on CPU.

    Inside the block, the scan helpers and layers choose as they would on
    `platform`: on `"gpu"` and `"tpu"` a step-by-step cell's input projection is made
    for all steps in one matmul before the loop, `unroll="auto"` unrolls 8 steps
    (16 from 1024 steps on), and `mode="auto"` runs a linear cell's associative
    scan. On `"cpu"` each step projects its own input, `"auto"` unrolls one step,
    and linear cells run the sequential scan.
    The numbers do not depend on the choice (up to rounding); the tests hold every
    path to the same references.

    The choice is made when a function is traced, and is part of `jax.jit`'s cache
    key, so a jitted function traced under one platform is traced again under
    another.

    !!! example

        ```python
        cell = eqrnn.GRUCell(3, 8, key=jax.random.key(0))
        with eqrnn.tuned_for("gpu"):
            hs = eqrnn.scan_all_hidden(cell, jnp.ones((10, 3)))  # the GPU's path
        ```

    **Arguments:**

    - `platform`: `"cpu"`, `"gpu"` or `"tpu"`.
    """
    if not isinstance(platform, str) or platform not in PLATFORMS:
        raise ValueError(
            f"tuned_for: `platform` must be one of 'cpu', 'gpu' or 'tpu', got "
            f"{platform!r}. Outside the block, the default backend "
            f"({jax.default_backend()!r}) decides."
        )
    with _tuned(platform):
        yield


def platform() -> str:
    """The platform whose choices apply now: `tuned_for`'s, else JAX's default
    backend."""
    forced = _tuned.value
    return jax.default_backend() if forced is None else forced


def hoists_projection() -> bool:
    """Whether a step-by-step cell projects the inputs of all steps in one matmul
    before the loop (off the CPU), rather than each step its own (on the CPU, where
    hoisting materialises a `(batch, time, gates * hidden)` array and was slower)."""
    return platform() != "cpu"


def auto_unroll(num_steps: int) -> int:
    """The steps `jax.lax.scan` unrolls per iteration under `unroll="auto"`.

    On the CPU, one: a step is enough work to hide the loop's cost, and unrolling
    only lengthens compilation. On GPU and TPU each loop iteration costs several
    microseconds whatever the step's size: unrolling 8 steps, 16 from 1024 steps on,
    was measured fastest there while compile time stays short (BENCHMARKS.md).
    """
    if platform() == "cpu":
        return 1
    return max(1, min(num_steps, 8 if num_steps < 1024 else 16))


def check_unroll(unroll: Any, where: str) -> None:
    if isinstance(unroll, str) and unroll == "auto":
        return
    if isinstance(unroll, bool):
        return
    if not isinstance(unroll, int) or unroll < 1:
        raise ValueError(
            f"{where}: `unroll` must be 'auto', a positive int or a bool, got "
            f"{unroll!r}. Use unroll='auto' (the default) for the platform's "
            "measured choice, or e.g. unroll=8."
        )


def resolve_unroll(unroll: Unroll, num_steps: int) -> int | bool:
    """`unroll` as `jax.lax.scan` takes it: `"auto"` made concrete."""
    return auto_unroll(num_steps) if isinstance(unroll, str) else unroll
