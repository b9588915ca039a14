"""The examples in the README and in docstrings run, and print what they say; the
README's and the notebooks' commands name what exists and install what they use."""

import doctest
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

import eqrnn
from eqrnn import _layers, _sequences


ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line]


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end == -1 else end]


def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _installed_by(pip_line: str) -> set[str]:
    """The distributions `pip install ...` of this project installs (not their own
    dependencies): the project's, its extras' and the packages named."""
    words = shlex.split(pip_line)
    assert words[:2] == ["pip", "install"], pip_line
    project = PYPROJECT["project"]
    names = {_requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for word in words[2:]:
        if word.startswith("-"):
            continue
        local = re.fullmatch(r"\.(?:\[(.*)\])?", word)
        if local is None:
            names.add(_requirement_name(word))
            continue
        todo = [e.strip() for e in (local.group(1) or "").split(",") if e.strip()]
        while todo:
            for requirement in extras[todo.pop()]:
                nested = re.fullmatch(r"eqrnn\[(.*)\]", requirement)
                if nested:
                    todo += nested.group(1).split(",")
                else:
                    names.add(_requirement_name(requirement))
    return names


@pytest.mark.standard_promotion
def test_readme_python_blocks_run_in_order():
    # Like a notebook: later blocks may use names from earlier ones.
    namespace: dict = {}
    for index, block in enumerate(_python_blocks(README.read_text())):
        exec(compile(block, f"README.md block {index}", "exec"), namespace)


def test_docstring_doctests_pass():
    for module in (_layers, _sequences):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, f"{module.__name__}: {result}"
        assert result.attempted > 0


def test_every_public_name_has_a_docstring():
    for name in eqrnn.__all__:
        if name == "__version__":
            continue
        doc = getattr(eqrnn, name).__doc__
        assert doc and doc.strip(), f"eqrnn.{name} has no docstring"


def test_readme_says_how_long_the_suite_takes_and_gives_a_quick_subset_that_exists():
    # A new user: the README did not say the suite takes over 20 minutes on a busy
    # 2-core machine, and offered nothing shorter to run first.
    quickstart = _section(README.read_text(), "## Quickstart")
    assert re.search(r"about \d+ minutes on CI's two CPU cores", quickstart)
    assert re.search(r"over \d+ when other work shares them", quickstart)
    assert re.search(r"first check in a few minutes \(about \d+", quickstart)
    commands = _bash_lines(quickstart)
    # The Quickstart's own commands are what CI runs; `python -m pytest`, the whole
    # suite, stays one of them.
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && python -m pytest" in commands[:2]
    for command in commands[:2]:
        assert f"{command} || exit 1" in ci, f"{command!r} is not run by .ci/run"
    (subset,) = [c for c in commands[2:] if c.startswith("python -m pytest ")]
    words = shlex.split(subset)[3:]
    markers = {
        m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]
    }
    paths = []
    while words:
        word = words.pop(0)
        if word == "-m":
            names = set(re.findall(r"\w+", words.pop(0))) - {"and", "or", "not"}
            assert names <= markers, (
                f"{subset!r}: unregistered markers {names - markers}"
            )
        elif word in ("-k", "-n"):
            words.pop(0)
        elif not word.startswith("-"):
            paths.append(word)
    for path in paths:
        file = ROOT / path.split("::")[0]
        assert file.is_file() or file.is_dir(), f"{subset!r}: {path} does not exist"
        assert file.resolve() != (ROOT / "tests").resolve(), "that is the whole suite"
    assert paths, f"{subset!r} names no test files: it would run the whole suite"


def test_notebooks_readme_installs_jupyter_and_what_the_notebooks_import():
    # A new user: notebooks/README said to run the notebooks with `jupyter lab` after
    # `pip install -e '.[test]'`, which does not install JupyterLab.
    lines = _bash_lines((ROOT / "notebooks" / "README.md").read_text())
    pip_lines = [line for line in lines if line.startswith("pip install")]
    jupyter_lines = [line for line in lines if line.startswith("jupyter ")]
    assert len(pip_lines) == len(jupyter_lines) == 1, (
        f"notebooks/README.md: expected one `pip install` and one `jupyter` command "
        f"in its bash blocks, found {lines}"
    )
    (pip_line,), (jupyter_line,) = pip_lines, jupyter_lines
    installed = _installed_by(pip_line)
    needs = {"jupyter lab": "jupyterlab", "jupyter notebook": "notebook"}
    (app,) = [app for app in needs if jupyter_line.startswith(app)]
    assert needs[app] in installed, f"{pip_line!r} does not install {needs[app]}"
    # Every package the notebooks import comes with that command.
    imported = set()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                imported |= set(re.findall(r"^(?:import|from) (\w+)", source, re.M))
    imported -= set(sys.stdlib_module_names) | {"eqrnn"}
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(imported):
        names = {_requirement_name(d) for d in distributions[module]}
        assert names & installed, f"{pip_line!r} does not install {module} ({names})"


@pytest.mark.parametrize(
    ("name", "helpers"),
    [
        ("01_hidden_states", ("pad_sequences(",)),
        (
            "03_variable_length_and_bidirectional",
            ("pad_sequences(", "sequence_mask", "masked_mean"),
        ),
        ("04_coming_from_pytorch_and_flax", ("sequence_mask",)),
    ],
)
def test_tutorials_pad_and_pool_with_the_library_helpers(name, helpers):
    # A new user: notebook 03 padded with `jnp.where` and pooled with its own masked
    # mean instead of `pad_sequences`, `sequence_mask` and `masked_mean` (01 and 04
    # built their padding and masks by hand too).
    notebook = ROOT / "notebooks" / f"{name}.ipynb"
    code = "\n".join(
        "".join(cell["source"])
        for cell in json.loads(notebook.read_text())["cells"]
        if cell["cell_type"] == "code"
    )
    for helper in helpers:
        assert f"eqrnn.{helper}" in code, f"{notebook.name} does not use {helper}"
    by_hand = {
        "padding with jnp.where": r"jnp\.where\(",
        "a mask from arange": r"arange\([^)]*\)(\[[^\]]*\])?\s*<",
        "a mean as sum / length": r"\.sum\([^)]*\)\s*/",
    }
    for what, pattern in by_hand.items():
        found = [line for line in code.splitlines() if re.search(pattern, line)]
        assert not found, f"{notebook.name}: {what} by hand: {found}"
