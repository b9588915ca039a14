"""Test configuration.

pytest's `addopts` turn on jaxtyping + beartype run-time checking for the whole
`eqrnn` package (`--jaxtyping-packages=eqrnn,beartype.beartype`) and `filterwarnings`
makes every warning an error. float64 is enabled so references can be compared to
1e-10; tests that need float32 ask for it explicitly.

Matmul precision: every comparison is made at `jax_default_matmul_precision =
"highest"`, full float32 (and float64) products. That is what the CPU computes
anyway; on NVIDIA GPUs JAX's default multiplies float32 in TF32 (10-bit mantissas),
which differs from PyTorch's float32 by ~1e-4 after a few steps, so without it the
float32 parity tests (1e-5) would fail there. docs/robustness.md says what TF32 does
to long sequences.

Platform paths: the scan helpers choose by platform (`eqrnn.tuned_for`). Test
modules that hold eqrnn to a reference use the `each_platform` fixture
(`pytestmark = pytest.mark.usefixtures("each_platform")`), so that each of their
tests runs under the CPU's choices and under the GPU's (the input projection
hoisted out of the loop, unroll 8 or 16, associative linear scans).

Hypothesis profiles (pick one with Hypothesis's own `--hypothesis-profile=NAME`):

- `ci`, the default (a plain `python -m pytest`): derandomised, so every run draws
  the same examples; no deadline (first calls compile); no example database; 8
  examples (besides the explicit `@example`s) per test where the test does not set
  `max_examples` itself
  (test_differential.py does not, test_scan.py's property does).
- `nightly`: 400 fresh random examples, no deadline, for the randomised differential
  test against PyTorch: `python -m pytest -m differential --hypothesis-profile=nightly`.
"""

import os
import random
import zlib

import jax
import jax.random as jr
import jaxtyping
import pytest
from hypothesis import HealthCheck, settings

import eqrnn


# The paths `each_platform` runs: the TPU's choices are the GPU's.
PLATFORMS = ["cpu", "gpu"]


jax.config.update("jax_enable_x64", True)
# Keras (the ConvLSTM reference) runs on JAX; test modules import it after this.
os.environ.setdefault("KERAS_BACKEND", "jax")
jax.config.update("jax_default_matmul_precision", "highest")
# As Equinox's tests do: no implicit promotion between dtypes (float32 with float64,
# bfloat16 with float32, ...), so that a silent cast in the library fails a test.
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    max_examples=8,
    # `each_platform` is function-scoped: it enters a context for the whole test,
    # which is the same for every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "nightly",
    deadline=None,
    print_blob=True,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def pytest_configure(config: pytest.Config) -> None:
    # `ci` unless `--hypothesis-profile` names another (Hypothesis's plugin loads
    # that one too; loading it here as well keeps the order of the two irrelevant).
    settings.load_profile(config.getoption("--hypothesis-profile", None) or "ci")


@pytest.fixture
def getkey(request):
    """A function returning a fresh key each call; the seed shows in failures.

    The seed is fixed per test (from its name), so CI is reproducible; set
    `EQRNN_TEST_SEED=random` to draw new seeds, or an integer to pick one."""
    choice = os.environ.get("EQRNN_TEST_SEED", "")
    if choice == "random":
        seed = random.randint(0, 2**31 - 1)
    elif choice:
        seed = int(choice)
    else:
        seed = zlib.crc32(request.node.nodeid.encode())
    print(f"getkey seed: {seed}")
    key = jr.key(seed)
    counter = iter(range(10**9))

    def _getkey():
        return jr.fold_in(key, next(counter))

    return _getkey


def _memory_mappings() -> int:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True)
def _standard_promotion_for_optax(request):
    """Tests marked `standard_promotion` train with optax's Adam, whose bias
    correction raises a Python float to an int32 step count, which strict dtype
    promotion refuses; they run under JAX's standard promotion."""
    if request.node.get_closest_marker("standard_promotion") is None:
        yield
        return
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """Drop every compiled program once this process holds many memory mappings.

    XLA's CPU backend maps memory for each compiled kernel and keeps it while the
    program is cached; a test worker that kept the whole suite's programs reached
    Linux's `vm.max_map_count` (65530 by default), and then compilation failed
    ("LLVM compilation error: Cannot allocate memory") and the worker crashed."""
    yield
    if _memory_mappings() > 30_000:
        jax.clear_caches()


@pytest.fixture(params=PLATFORMS)
def each_platform(request):
    """Run the test under each platform's choices (`eqrnn.tuned_for`)."""
    with eqrnn.tuned_for(request.param):
        yield request.param


@pytest.fixture
def tuned(platform):
    """`each_platform` for a test that parametrises `platform` itself (to run some
    of its cases under one platform's choices only)."""
    with eqrnn.tuned_for(platform):
        yield platform


@pytest.fixture
def no_jaxtyping():
    """Switch the test-suite's jaxtyping hook off for a block, to exercise the checks
    the library itself runs for every user (with or without jaxtyping)."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)
