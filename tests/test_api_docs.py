"""The API reference covers every public name, and every documented object says what
it is, describes each of its arguments (and no others), and has examples that run.

The reference pages in `docs/api/` are built by mkdocstrings from `::: eqrnn.<name>`
directives; `mkdocs build --strict` fails for a directive that names nothing, and this
file fails for a public name that has no directive, so a new public name cannot be
left out of the reference.
"""

import inspect
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import eqrnn
import eqrnn.interop


DOCS = Path(__file__).parent.parent / "docs"
PUBLIC_MODULES = (eqrnn, eqrnn.interop)
_MISSING = object()


def _directives() -> dict[str, list[str] | None]:
    """`{path: members}` for every `::: path` directive in docs/; `members` is the
    list given in its options (None where it gives none, `[]` for `false`)."""
    found: dict[str, list[str] | None] = {}
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            match = re.fullmatch(r":::\s+(\S+)\s*", line)
            if match is None:
                continue
            members: list[str] | None = None
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j]):
                option = re.fullmatch(r"\s+members:\s*(\S*)\s*", lines[j])
                if option and option.group(1) == "false":
                    members = []
                elif option:
                    members = []
                    while j + 1 < len(lines) and re.fullmatch(
                        r"\s+-\s+\S+\s*", lines[j + 1]
                    ):
                        j += 1
                        members.append(lines[j].split("-", 1)[1].strip())
                j += 1
            found[match.group(1)] = members
    return found


DIRECTIVES = _directives()


def _public_names() -> list[str]:
    return [
        f"{module.__name__}.{name}"
        for module in PUBLIC_MODULES
        for name in module.__all__
    ]


def _resolve(path: str) -> Any:
    module_name, _, name = path.rpartition(".")
    for module in PUBLIC_MODULES:
        if module.__name__ == module_name:
            return getattr(module, name)
    raise LookupError(path)


def _documented_objects() -> Iterator[tuple[str, Any]]:
    """Every public function and class, and every member its directive shows."""
    for path in _public_names():
        obj = _resolve(path)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        yield path, obj
        if inspect.isclass(obj):
            for member in DIRECTIVES.get(path) or []:
                yield f"{path}.{member}", inspect.getattr_static(obj, member, _MISSING)


DOCUMENTED = dict(_documented_objects())


def test_every_public_name_is_in_the_reference():
    missing = [p for p in _public_names() if p not in DIRECTIVES]
    assert not missing, (
        f"public names with no `::: <name>` directive in docs/: {missing}. Add each "
        "to the API reference page of its family in docs/api/."
    )


def test_the_reference_documents_only_public_names():
    public = set(_public_names()) | {m.__name__ for m in PUBLIC_MODULES}
    stray = [p for p in DIRECTIVES if p not in public]
    assert not stray, f"directives in docs/ for names that are not public: {stray}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_modules_have_a_summary(module):
    doc = inspect.cleandoc(module.__doc__ or "")
    assert doc and not doc.startswith("**"), f"{module.__name__}: no summary line"


def _function(obj: Any) -> Callable[..., Any] | None:
    """The function behind a documented object, if it takes arguments."""
    if isinstance(obj, staticmethod | classmethod):
        return obj.__func__
    if isinstance(obj, property):
        return None
    function = inspect.unwrap(obj)
    assert inspect.isfunction(function), f"cannot check the arguments of {obj!r}"
    return function


def _parameters(function: Callable[..., Any]) -> list[str]:
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if name not in ("self", "cls")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _doc(obj: Any) -> str:
    doc = obj.__doc__ if not isinstance(obj, property) else obj.fget.__doc__
    return inspect.cleandoc(doc or "")


def _listed_arguments(doc: str) -> list[str]:
    """The names in the bullets of a docstring's `**Arguments:**` section."""
    match = re.search(r"\*\*Arguments:\*\*\n(.*?)(?=\n\*\*\w[^*]*:\*\*|\Z)", doc, re.S)
    if match is None:
        return []
    names: list[str] = []
    for bullet in re.findall(r"^- (.*?):", match.group(1), re.M):
        names += re.findall(r"`(\w+)`", bullet)
    return names


def test_listed_arguments_reads_the_bullets_of_the_arguments_section():
    doc = (
        "Summary, with `x`: not an argument.\n\n**Arguments:**\n\n- `a`: one: two.\n"
        "- `b`, `c`: as for `d`.\n    - `nested`: not read.\n\n**Returns:**\n\n"
        "- `e`: not an argument."
    )
    assert _listed_arguments(doc) == ["a", "b", "c"]


@pytest.mark.parametrize("path", list(DOCUMENTED))
def test_docstring_has_a_summary_and_describes_every_argument(path):
    obj = DOCUMENTED[path]
    name = path.rpartition(".")[2]
    assert obj is not _MISSING, (
        f"a directive in docs/ lists {path}, which does not exist"
    )
    doc = _doc(obj)
    assert doc.strip(), f"{path} has no docstring"
    # Equinox style: `__init__` and `__call__` may open with **Arguments:**, as
    # the class docstring says what the object is.
    if name not in ("__init__", "__call__"):
        summary = doc.strip().splitlines()[0]
        assert not summary.startswith("**"), (
            f"{path}: the docstring must open with a one-line summary, got {summary!r}"
        )
    if inspect.isclass(obj):
        function, doc = obj.__init__, doc + "\n" + _doc(obj.__init__)
        where = f"{path} (class and `__init__` docstrings)"
    else:
        function, where = _function(obj), path
    if function is None:
        return
    parameters = _parameters(function)
    undocumented = [p for p in parameters if f"`{p}`" not in doc]
    assert not undocumented, (
        f"{where}: the docstring does not describe the argument(s) {undocumented}; "
        "add a bullet `- `name`: ...` under **Arguments:**"
    )
    # Flax NNX's habit, avoided here: documenting arguments that do not exist.
    stale = [a for a in _listed_arguments(doc) if a not in parameters]
    assert not stale, (
        f"{where}: **Arguments:** describes {stale}, which the signature "
        f"{inspect.signature(function)} does not have"
    )


def _examples() -> dict[str, list[str]]:
    """The Python code blocks in the docstrings of every documented object."""
    examples = {}
    for path, obj in DOCUMENTED.items():
        if obj is _MISSING:
            continue
        blocks = [
            textwrap.dedent(block)
            for block in re.findall(r"```python\n(.*?)```", _doc(obj), re.S)
        ]
        if blocks:
            examples[path] = blocks
    return examples


EXAMPLES = _examples()


# Runs in a fresh process, as a reader would run the examples: without the test
# suite's float64 mode and jaxtyping hook. Reads `{path: [block, ...]}` as JSON on
# stdin and writes `{path: error or None}` as JSON on stdout.
_RUNNER = """
import contextlib, doctest, io, json, sys, traceback

import equinox, jax, jax.numpy as jnp, numpy as np
import eqrnn

results = {}
for path, blocks in json.load(sys.stdin).items():
    namespace = {"eqrnn": eqrnn, "eqx": equinox, "equinox": equinox, "jax": jax,
                 "jnp": jnp, "np": np}
    source = "".join(blocks)
    error = None
    try:
        # Test dependencies, named by the interop examples without an import.
        if "torch." in source:
            import torch
            namespace["torch"] = torch
        if "nnx." in source:
            from flax import nnx
            namespace["nnx"] = nnx
        for index, block in enumerate(blocks):
            name = f"{path} docstring example {index}"
            if block.lstrip().startswith(">>>"):
                test = doctest.DocTestParser().get_doctest(
                    block, namespace, name, None, 0
                )
                runner = doctest.DocTestRunner(
                    optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
                )
                report = []
                if runner.run(test, out=report.append).failed:
                    error = "".join(report)
                    break
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(block, name, "exec"), namespace)
    except BaseException:
        error = traceback.format_exc()
    results[path] = error
sys.__stdout__.write(json.dumps(results))
"""


@pytest.fixture(scope="module")
def example_errors(tmp_path_factory) -> dict[str, str | None]:
    process = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps(EXAMPLES),
        capture_output=True,
        text=True,
        cwd=tmp_path_factory.mktemp("examples"),  # examples that write files
        timeout=600,
    )
    assert process.returncode == 0, f"the example runner failed:\n{process.stderr}"
    return json.loads(process.stdout)


def test_docstring_examples_exist():
    assert len(EXAMPLES) >= 10, sorted(EXAMPLES)


@pytest.mark.parametrize("path", list(EXAMPLES))
def test_docstring_examples_run(path, example_errors):
    """Each example runs as written, in a fresh process, with `eqrnn`, `jax`, `jnp`,
    `eqx` (`equinox`) and `np` already imported, as the reference pages assume:
    doctest-style blocks (`>>>`) with their printed output checked, the others
    executed. The blocks of one docstring share a namespace."""
    error = example_errors[path]
    assert error is None, f"the example in the docstring of {path} failed:\n{error}"
