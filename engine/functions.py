"""Custom formula functions: how insurers' engineers add their own, and how tiv finds them.

In: Python callables declared with `custom_function(name, version, args, returns)`,
passed to `load_rules(functions=...)` or published under the `tiv.functions` entry-point
group. Out: `Function`s the compiler type-checks calls against, whose name and version
every result that used them records.

A custom function must be pure: the same arguments always give the same value, and it
does no I/O (a valuation must be reproducible from the recorded facts and versions).
tiv cannot prove purity; it checks what it can: argument count and types at load,
and at every call that the value returned has the declared type (a float is refused:
money is Decimal).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from importlib.metadata import entry_points
from typing import Any

from engine.compiling.formulas import ANY, BOOL, BUILTINS, DATE, LIST, NUMBER, TEXT, Function
from engine.errors import EvaluationError, Location, Problem, RulesError

ENTRY_POINT_GROUP = "tiv.functions"
_TYPES: dict[str, tuple[type, ...]] = {
    NUMBER: (Decimal,),
    TEXT: (str,),
    BOOL: (bool,),
    DATE: (datetime.date,),
    LIST: (tuple,),
}


def custom_function(
    name: str, version: str, args: Sequence[str], returns: str, description: str = ""
) -> Callable[[Callable[..., Any]], Function]:
    """Declare a pure function formulas may call: `@custom_function("cbm", "1.0", [...], ...)`."""
    for kind in [*args, returns]:
        if kind not in _TYPES:
            raise ValueError(f"{name}: unknown type {kind!r} (types: {', '.join(_TYPES)})")
    if not version:
        raise ValueError(f"{name}: a custom function needs a version")

    def check(kinds: list[str]) -> str:
        if len(kinds) != len(args):
            raise TypeError(f"takes {len(args)} argument(s): {', '.join(args)}")
        for position, (got, wanted) in enumerate(zip(kinds, args, strict=True), 1):
            if got not in (wanted, ANY):
                raise TypeError(f"argument {position} must be a {wanted}, got a {got}")
        return returns

    def decorate(impl: Callable[..., Any]) -> Function:
        def call(*values: Any) -> Any:
            result = impl(*values)
            if not isinstance(result, _TYPES[returns]) or (
                returns == NUMBER and isinstance(result, bool)
            ):
                raise EvaluationError(
                    Problem(
                        "function.result",
                        f"custom function {name} {version} returned "
                        f"{type(result).__name__}, not the declared {returns}",
                        Location(path=name),
                    )
                )
            return result

        signature = f"{name}({', '.join(args)}) -> {returns}, version {version}"
        return Function(name, check, call, signature=description or signature, version=version)

    return decorate


def discover() -> dict[str, Function]:
    """Functions published by installed packages under the `tiv.functions` entry points."""
    found: dict[str, Function] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        loaded = point.load()
        items = loaded if isinstance(loaded, Iterable) else [loaded]
        for item in items:
            if not isinstance(item, Function):
                raise RulesError(
                    Problem(
                        "function.entry_point",
                        f"entry point {point.name} "
                        f"({point.value}) gives {type(item).__name__}, not a "
                        "tiv Function; declare it with custom_function",
                    )
                )
            found[item.name] = item
    return found


def function_table(
    given: Mapping[str, Function] | Iterable[Function] | None, use_entry_points: bool
) -> dict[str, Function]:
    """Built-ins, then discovered plugins, then those passed in; no name may shadow a built-in."""
    table: dict[str, Function] = {}
    if use_entry_points:
        table.update(discover())
    if given is not None:
        items = given.values() if isinstance(given, Mapping) else given
        table.update({item.name: item for item in items})
    clashes = sorted(set(table) & {*BUILTINS, "exists", "round", "lookup", "region"})
    if clashes:
        raise RulesError(
            Problem(
                "function.clash",
                f"custom functions may not replace built-in ones: {', '.join(clashes)}",
            )
        )
    return {**BUILTINS, **table}
