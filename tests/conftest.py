"""Test configuration.

pytest's `addopts` turn on jaxtyping + beartype run-time checking for the whole
`eqrnn` package (`--jaxtyping-packages=eqrnn,beartype.beartype`) and `filterwarnings`
makes every warning an error. float64 is enabled so references can be compared to
1e-10; tests that need float32 ask for it explicitly.

Hypothesis profiles (pick one with Hypothesis's own `--hypothesis-profile=NAME`):

- `ci`, the default (a plain `python -m pytest`): derandomised, so every run draws
  the same examples; no deadline (first calls compile); no example database; 15
  examples per test where the test does not set `max_examples` itself
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


jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    deadline=None,
    print_blob=True,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow],
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


@pytest.fixture
def no_jaxtyping():
    """Switch the test-suite's jaxtyping hook off for a block, to exercise the checks
    the library itself runs for every user (with or without jaxtyping)."""
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)
