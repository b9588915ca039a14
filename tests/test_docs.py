"""The examples in the README and in docstrings run, and print what they say."""

import doctest
import re
from pathlib import Path

import pytest

import eqrnn
from eqrnn import _layers, _sequences


README = Path(__file__).parent.parent / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


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
