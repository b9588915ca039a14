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
        f"{NAME}-{VERSION}.dist-info/entry_points.txt",
    ):
        assert required in names, f"{required} missing from the wheel"
    stray = sorted(
        n for n in names if not n.startswith(("eqrnn/", f"{NAME}-{VERSION}.dist-info/"))
    )
    assert not stray, f"the wheel holds files outside the package: {stray}"


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
        "mkdocs.yml",
        "docs/index.md",
    ):
        assert required in names, f"{required} missing from the sdist"


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


def test_the_wheel_installs_the_command_line(fresh_venv, tmp_path):
    python, _ = fresh_venv
    script = python.parent / ("eqrnn.exe" if os.name == "nt" else "eqrnn")
    assert script.is_file(), f"no `eqrnn` script in {script.parent}"
    output = _run(script, "--help", cwd=tmp_path, env=_clean_env())
    assert "demo" in output and "bench" in output, output
