"""The Python examples on the documentation's Markdown pages run, and print what the
pages say they print.

Each page's ```` ```python ```` blocks run in order in one namespace, like a notebook
(a later block may use names from an earlier one), in a fresh Python process: as a
reader would run them, without the test suite's float64 mode or its jaxtyping hook.
A ```` ```text ```` block that follows a Python block (with only blank lines between)
is that block's printed output, compared as doctest compares (`...` matches
anything, runs of whitespace are equal).
"""

import doctest
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


DOCS = Path(__file__).parent.parent / "docs"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)

# Runs in the fresh process: reads the blocks as JSON on stdin, writes one result per
# block as JSON on stdout (the blocks' own prints are captured, not mixed in).
_RUNNER = """
import contextlib, io, json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
results = []
for index, source in enumerate(blocks):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, f"block {index}", "exec"), namespace)
    except BaseException:
        results.append({"stdout": out.getvalue(), "error": traceback.format_exc()})
        break
    results.append({"stdout": out.getvalue(), "error": None})
sys.__stdout__.write(json.dumps(results))
"""


def _blocks(text: str) -> list[tuple[str, str | None, int]]:
    """`(code, expected_output or None, line)` for each Python block of a page."""
    fences = []
    for match in _FENCE.finditer(text):
        language = match.group("info").strip().split(" ")[0].lstrip(".{").rstrip("}")
        body = textwrap.dedent(match.group("body"))
        fences.append((language, body, match.start(), match.end()))
    blocks = []
    for i, (language, body, start, end) in enumerate(fences):
        if language not in ("python", "py"):
            continue
        expected = None
        if i + 1 < len(fences):
            next_language, next_body, next_start, _ = fences[i + 1]
            if next_language == "text" and not text[end:next_start].strip():
                expected = next_body
        blocks.append((body, expected, text.count("\n", 0, start) + 1))
    return blocks


PAGES = {
    str(page.relative_to(DOCS)): page
    for page in sorted(DOCS.rglob("*.md"))
    if _blocks(page.read_text(encoding="utf-8"))
}


def test_pages_with_examples_are_found():
    # The Getting started and "Coming from" pages hold runnable examples.
    assert {"index.md", "coming-from.md"} <= set(PAGES), sorted(PAGES)


def test_a_text_block_after_a_python_block_is_its_output():
    page = textwrap.dedent(
        """
        ```python
        print(1)
        ```

        ```text
        1
        ```

        ```python title="no output shown"
        x = 2
        ```

        Prose between.

        ```text
        not an output
        ```

        !!! example

            ```python
            print(x)
            ```
            ```text
            2
            ```
        """
    )
    assert _blocks(page) == [
        ("print(1)\n", "1\n", 2),
        ("x = 2\n", None, 10),
        ("print(x)\n", "2\n", 22),
    ]


@pytest.mark.parametrize("name", list(PAGES))
def test_markdown_page_examples_run_and_print_what_the_page_shows(name, tmp_path):
    blocks = _blocks(PAGES[name].read_text(encoding="utf-8"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_ENABLE_X64")}
    process = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=json.dumps([code for code, _, _ in blocks]),
        capture_output=True,
        text=True,
        cwd=tmp_path,  # examples that write files write them here
        env=env,
        timeout=300,
    )
    assert process.returncode == 0, f"docs/{name}: the runner failed\n{process.stderr}"
    results = json.loads(process.stdout)
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for (_, expected, line), result in zip(blocks, results, strict=False):
        where = f"docs/{name}, the Python block at line {line}"
        assert result["error"] is None, f"{where} raised:\n{result['error']}"
        if expected is not None:
            assert checker.check_output(expected, result["stdout"], flags), (
                f"{where} printed\n{result['stdout']}\nbut the page shows\n{expected}"
            )
    assert len(results) == len(blocks)
