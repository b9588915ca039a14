"""A release can be cut from a checkout: `python -m build` makes a wheel and an sdist
that `twine check` accepts, with the metadata a user looks for, and the wheel installs
into a fresh virtual environment where `import eqrnn` imports the installed wheel
(not this source tree) and reports the wheel's version.

The build runs without isolation (`--no-isolation`, so offline and in seconds), with
the build backend the test dependencies install; `python -m build` on its own builds
the same files in an isolated environment. The fresh environment gets no copy of
eqrnn's dependencies: a `.pth` file points it at the folders where this
environment's `jax`, `equinox` and `jaxtyping` live, and the wheel is installed into
it with `pip install --no-deps --no-index`.

The wheel holds the package only; the sdist adds what a rebuild, the tests and the
docs need, the examples, the notebooks and the benchmark scripts, but not the
benchmarks' JSON results. The demo and the benchmarks are scripts of the repository
(`examples/digits.py`, `benchmarks/bench.py`), not modules or commands of the package.
"""

import email.parser
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
NAME = PYPROJECT["project"]["name"]
VERSION = PYPROJECT["project"]["version"]
TIMEOUT = 120
# The command-line tools that moved out of the package (issue #17).
TOOLING = ("eqrnn/_bench.py", "eqrnn/_cli.py", "eqrnn/_demo.py", "eqrnn/__main__.py")


def _run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    process = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert process.returncode == 0, (
        f"`{' '.join(map(str, args))}` failed ({process.returncode}):\n"
        f"{process.stdout}\n{process.stderr}"
    )
    return process.stdout


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let the fresh environment
    see this source tree or this environment's packages."""
    drop = (
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "VIRTUAL_ENV",
    )
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    _run(
        sys.executable,
        "-m",
        "build",
        "--no-isolation",
        "--outdir",
        out,
        ROOT,
        cwd=out,
    )
    wheels = list(out.glob("*.whl"))
    sdists = list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_build_makes_a_wheel_and_an_sdist_named_after_the_version(dist):
    assert dist["wheel"].name == f"{NAME}-{VERSION}-py3-none-any.whl"
    assert dist["sdist"].name == f"{NAME}-{VERSION}.tar.gz"


def test_twine_check_accepts_both(dist):
    output = _run(
        sys.executable,
        "-m",
        "twine",
        "check",
        "--strict",
        dist["wheel"],
        dist["sdist"],
        cwd=dist["wheel"].parent,
    )
    assert output.count("PASSED") == 2, output


def test_wheel_holds_the_package_and_only_the_package(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
    for required in (
        "eqrnn/__init__.py",
        "eqrnn/py.typed",
        "eqrnn/interop/__init__.py",
        f"{NAME}-{VERSION}.dist-info/licenses/LICENSE",
    ):
        assert required in names, f"{required} missing from the wheel"
    stray = sorted(
        n for n in names if not n.startswith(("eqrnn/", f"{NAME}-{VERSION}.dist-info/"))
    )
    assert not stray, f"the wheel holds files outside the package: {stray}"
    tooling = sorted(n for n in names if n in TOOLING)
    assert not tooling, f"the wheel holds the command-line tools: {tooling}"
    results = sorted(n for n in names if n.endswith(".json"))
    assert not results, f"the wheel holds JSON files: {results}"
    # No console script: the package has no command line.
    assert f"{NAME}-{VERSION}.dist-info/entry_points.txt" not in names


def test_sdist_holds_what_a_rebuild_and_the_tests_need(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for required in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "eqrnn/__init__.py",
        "eqrnn/py.typed",
        "tests/conftest.py",
        "tests/test_bench.py",
        "tests/test_digits_example.py",
        "mkdocs.yml",
        "docs/index.md",
        "examples/digits.py",
        "examples/hidden_states.py",
        "notebooks/02_training.ipynb",
        "benchmarks/README.md",
        "benchmarks/bench.py",
        "benchmarks/_harness.py",
        "benchmarks/allocator_study.py",
        "BENCHMARKS.md",
    ):
        assert required in names, f"{required} missing from the sdist"
    results = sorted(
        n for n in names if n.startswith("benchmarks/") and n.endswith(".json")
    )
    assert not results, f"the sdist holds benchmark results: {results}"
    tooling = sorted(n for n in names if n in TOOLING)
    assert not tooling, f"the sdist holds the command-line tools: {tooling}"


def test_wheel_metadata_says_what_a_user_looks_for(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        text = wheel.read(f"{NAME}-{VERSION}.dist-info/METADATA").decode()
    metadata = email.parser.Parser().parsestr(text)
    assert metadata["Name"] == NAME and metadata["Version"] == VERSION
    assert metadata["Summary"], "no description"
    assert metadata["License-Expression"], "no licence"
    assert metadata["Requires-Python"], "no supported Python versions"
    content_type = metadata["Description-Content-Type"] or ""
    assert content_type.startswith("text/markdown"), "README not Markdown"
    assert "eqrnn" in metadata.get_payload(), "no long description (README)"
    classifiers = metadata.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3" in classifiers, classifiers
    requires = metadata.get_all("Requires-Dist") or []
    for dependency in ("jax", "equinox", "jaxtyping"):
        assert any(r.startswith(dependency) for r in requires), requires
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"test", "docs", "examples"} <= extras, f"extras: {sorted(extras)}"
    for url in metadata.get_all("Project-URL") or []:
        label, _, address = url.partition(", ")
        # An https:// address, or (while the repository's address is unknown) a path
        # relative to the repository root that exists there.
        relative_ok = not re.match(r"^[a-z]+:", address) and (ROOT / address).exists()
        assert label and (address.startswith("https://") or relative_ok), url


@pytest.fixture(scope="module")
def fresh_venv(dist, tmp_path_factory) -> tuple[Path, Path]:
    """A new virtual environment with the wheel installed and eqrnn's dependencies
    borrowed from this environment: `(python, site_packages)`."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site_packages = Path(
        _run(
            python,
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
            cwd=venv.parent,
        ).strip()
    )
    # The folders that hold the dependencies (and theirs, such as numpy). A `.pth`
    # line only adds its folder to `sys.path`: the `.pth` files inside it, such as
    # an editable install's link to this source tree, are not read.
    folders = set()
    for module in ("jax", "jaxlib", "equinox", "jaxtyping", "numpy"):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, module
        folders.add(str(Path(spec.origin).parent.parent))
    folders.discard(str(ROOT))
    (site_packages / "_eqrnn_test_dependencies.pth").write_text(
        "\n".join(sorted(folders)) + "\n", encoding="utf-8"
    )
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "--no-cache-dir",
        "--disable-pip-version-check",
        dist["wheel"],
        cwd=venv.parent,
        env=_clean_env(),
    )
    return python, site_packages


_PROBE = """
import importlib.metadata, json, sys
import jax.numpy as jnp
import eqrnn
cell = eqrnn.GRUCell(2, 3, key=__import__("jax").random.key(0))
hs = eqrnn.scan_all_hidden(cell, jnp.ones((4, 2)))
print(json.dumps({
    "file": eqrnn.__file__,
    "version": eqrnn.__version__,
    "metadata_version": importlib.metadata.version("eqrnn"),
    "dist_location": str(importlib.metadata.distribution("eqrnn").locate_file("")),
    "path": sys.path,
    "shape": list(hs.shape),
    "public": sorted(eqrnn.__all__),
}))
"""


def test_the_wheel_imports_in_a_fresh_environment(fresh_venv, tmp_path):
    python, site_packages = fresh_venv
    # -I: neither the working directory nor PYTHON* variables reach sys.path.
    result = json.loads(
        _run(python, "-I", "-c", _PROBE, cwd=tmp_path, env=_clean_env())
    )
    assert Path(result["file"]).is_relative_to(site_packages), (
        f"eqrnn was imported from {result['file']}, not from the installed wheel in "
        f"{site_packages}"
    )
    assert Path(result["dist_location"]).resolve() == site_packages.resolve()
    assert str(ROOT) not in result["path"], result["path"]
    assert result["version"] == result["metadata_version"] == VERSION
    assert result["shape"] == [4, 3]
    assert result["public"] == sorted(__import__("eqrnn").__all__)


def test_the_wheel_installs_no_command_line(fresh_venv, tmp_path):
    python, _ = fresh_venv
    scripts = sorted(p.name for p in python.parent.iterdir() if "eqrnn" in p.name)
    assert not scripts, f"the wheel installed scripts: {scripts}"
    process = subprocess.run(
        [python, "-I", "-m", "eqrnn"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert process.returncode != 0, process.stdout
    assert "No module named eqrnn.__main__" in process.stderr, process.stderr
