"""A griffe extension for the API reference: write out eqrnn's private type aliases.

eqrnn's signatures use short aliases from `eqrnn._custom_types` (`Inputs`, `Hidden`,
`Length`, ...) to stay readable in the source. A reader of the reference cannot
follow them into a private module, so here every annotation that names a private
`TypeAlias` of eqrnn (or a private string constant, used for an axis-name string)
is replaced by what it stands for, e.g. `inputs: Inputs` is
shown as `inputs: Float[ArrayLike, 'time input_size']`: the jaxtyping dtype, array
type and axis names a user needs.
"""

import dataclasses
from typing import Any

import griffe


class ExpandPrivateTypeAliases(griffe.Extension):
    """Replace names of private eqrnn type aliases in annotations by their values."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "eqrnn":
            return
        self._pkg = pkg
        self._visit(pkg, seen=set())

    def _visit(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if isinstance(obj, griffe.Function):
            for parameter in obj.parameters:
                parameter.annotation = self._expand(parameter.annotation)
            obj.returns = self._expand(obj.returns)
        elif isinstance(obj, griffe.Attribute) and not _is_type_alias(obj):
            obj.annotation = self._expand(obj.annotation)
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member, seen)  # pyright: ignore[reportArgumentType]

    def _expand(self, expr: Any, depth: int = 0) -> Any:
        if depth > 20 or not isinstance(expr, griffe.Expr):
            return expr
        if isinstance(expr, griffe.ExprName):
            target = self._private_alias(expr)
            if target is None:
                return expr
            return self._expand(target.value, depth + 1)
        changes = {}
        for field in dataclasses.fields(expr):  # pyright: ignore[reportArgumentType]
            value = getattr(expr, field.name)
            if isinstance(value, griffe.Expr):
                changes[field.name] = self._expand(value, depth + 1)
            elif isinstance(value, list):
                changes[field.name] = [self._expand(v, depth + 1) for v in value]
        return dataclasses.replace(expr, **changes)  # pyright: ignore[reportArgumentType]

    def _private_alias(self, name: griffe.ExprName) -> griffe.Attribute | None:
        try:
            path = name.canonical_path
        except Exception:
            return None
        parts = path.split(".")
        if parts[0] != "eqrnn" or not any(p.startswith("_") for p in parts[1:]):
            return None
        try:
            target = self._pkg[".".join(parts[1:])]
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        if target.is_alias:
            try:
                target = target.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                return None
        if isinstance(target, griffe.Attribute) and (
            _is_type_alias(target) or _is_private_string_constant(target)
        ):
            return target
        return None


def _is_private_string_constant(attribute: griffe.Attribute) -> bool:
    # e.g. `_TIME_STATE = "time *state"`, used in jaxtyping annotations.
    value = attribute.value
    return (
        attribute.name.startswith("_")
        and isinstance(value, str)
        and len(value) >= 2
        and value[0] == value[-1]
        and value[0] in "'\""
    )


def _is_type_alias(attribute: griffe.Attribute) -> bool:
    annotation = attribute.annotation
    name = annotation.name if isinstance(annotation, griffe.ExprName) else annotation
    return name == "TypeAlias" and attribute.value is not None
