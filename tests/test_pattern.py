"""eqrnn's modules follow Equinox's abstract-or-final pattern (equinox
`docs/pattern.md`): abstract classes are named `Abstract...`, concrete classes are
final, no concrete method is overridden; and `_scan.py` names no cell class."""

import ast
import importlib
import inspect
import pathlib
import pkgutil

import equinox as eqx
import pytest

import eqrnn

from .registry import REGISTERED


def _eqrnn_modules() -> list[type]:
    """Every `eqx.Module` subclass defined inside eqrnn."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(eqrnn.__path__, "eqrnn."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, eqx.Module) and obj.__module__.startswith("eqrnn"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


CLASSES = _eqrnn_modules()


def test_the_walk_finds_the_cells():
    names = {cls.__name__ for cls in CLASSES}
    assert {"AbstractCell", "LSTMCell", "MinGRU", "CallableCell", "RNN"} <= names


def test_abstract_classes_are_named_abstract_and_concrete_ones_are_final():
    for cls in CLASSES:
        abstract = any(
            getattr(cls, name, ())
            for name in (
                "__abstractmethods__",
                "__abstractvars__",
                "__abstractclassvars__",
            )
        )
        assert abstract == cls.__name__.startswith("Abstract"), cls
        if not abstract:
            subclasses = [c for c in CLASSES if c is not cls and issubclass(c, cls)]
            assert not subclasses, (cls, subclasses)


def test_no_concrete_method_is_overridden():
    for cls in CLASSES:
        for base in cls.__mro__[1:]:
            if base not in CLASSES:
                continue
            abstract = getattr(base, "__abstractmethods__", frozenset())
            for name, attr in vars(base).items():
                if name.startswith("__") or name in abstract:
                    continue
                if not (inspect.isfunction(attr) or isinstance(attr, property)):
                    continue
                mine = inspect.getattr_static(cls, name)
                assert mine is attr, f"{cls.__name__}.{name} overrides {base.__name__}"


def test_the_scan_asks_no_cell_what_it_is():
    """`_scan.py`'s code names no cell class but the interface, `AbstractCell`
    (messages and docstrings may), and never asks a cell for its type."""
    tree = ast.parse(pathlib.Path(eqrnn.__file__).with_name("_scan.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {
        alias.asname or alias.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        for alias in n.names
    }
    cells = {cls.__name__ for cls in CLASSES if issubclass(cls, eqrnn.AbstractCell)}
    assert names & cells == {"AbstractCell"}
    assert not names & {"hasattr", "fused_step", "linear_coefficients"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            assert ast.unparse(node.args[0]) not in ("cell", "self"), ast.unparse(node)


# The modules that run a mode's loop (and the engine they share).
STRATEGIES = {
    "_sequential",
    "_linear_form",
    "_chunkwise",
    "_newton",
    "_strategy",
    "_linear_scan",
    "_scan",
}


def _imports(module: str) -> set[str]:
    path = pathlib.Path(eqrnn.__file__).with_name(f"{module}.py")
    tree = ast.parse(path.read_text())
    return {
        (n.module or "").lstrip(".")
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level == 1
    }


@pytest.mark.parametrize("interface", ["_cell", "_linear_cell", "_loop", "_jacobians"])
def test_the_interfaces_import_no_strategy(interface):
    assert not _imports(interface) & STRATEGIES, _imports(interface)


def test_every_exported_cell_is_registered():
    """A new cell's tests come from its entry in `tests/registry.py`."""
    exported = {
        obj
        for obj in vars(eqrnn).values()
        if isinstance(obj, type)
        and issubclass(obj, eqrnn.AbstractCell)
        and not obj.__name__.startswith("Abstract")
        and obj is not eqrnn.CallableCell
    }
    assert exported == set(REGISTERED)
