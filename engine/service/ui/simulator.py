"""The simulator's form and the shipment facts it stands for, both ways.

Each input is named by the JSON path of the fact it holds (`invoice.amount`,
`charges[2].amount`), so a FactsError's path names the very field to mark. The fx
rates are the exception: a rate is a mapping entry (`fx.EUR`), so the form has rows of
currency and rate, and `fx.EUR` is marked on the row whose currency is EUR.

Amounts stay text from the form to the facts reader, which reads them as Decimal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

ROWS = {"goods": 3, "charges": 6, "duties": 3, "fx": 3}
GOODS = ("description", "hs_code", "quantity", "weight_kg", "value", "currency", "category")
CHARGES = ("type", "amount", "currency")
DUTIES = ("type", "amount", "currency")
SCALARS = (
    "id",
    "date",
    "currency",
    "incoterm",
    "mode",
    "origin.country",
    "origin.port",
    "destination.country",
    "destination.port",
    "payment_method",
    "expected_transit_days",
    "invoice.amount",
    "invoice.currency",
    "sum_insured",
)
_WHOLE = {"expected_transit_days", "quantity"}  # counts, not amounts: whole numbers
_PART = re.compile(r"([a-z_]+)(?:\[(\d+)\])?")


@dataclass(frozen=True)
class Problem:
    field: str  # the form field it belongs to ("" when none: shown above the form)
    path: str
    message: str


def facts_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The facts the filled fields give; blank fields are absent facts."""
    facts: dict[str, Any] = {}
    for name, raw in form.items():
        text = raw.strip()
        if not text or name.startswith("fx[") or not is_fact(name):
            continue
        last = name.rsplit(".", 1)[-1]
        _put(facts, name, int(text) if last in _WHOLE and text.isdigit() else text)
    if form.get("duties_mode") == "estimate":
        facts.pop("duties", None)
    elif form.get("duties_mode") == "declared":
        facts.setdefault("duties", [])
    rates = {}
    for index in range(ROWS["fx"]):
        code = form.get(f"fx[{index}].currency", "").strip()
        rate = form.get(f"fx[{index}].rate", "").strip()
        if code or rate:
            rates[code] = rate
    if rates:
        facts["fx"] = rates
    return facts


def is_fact(name: str) -> bool:
    """Whether a form field holds a fact (the pack choices and the pasted text do not)."""
    head = name.split("[", 1)[0].split(".", 1)[0]
    return name in SCALARS or head in ("goods", "charges", "duties", "fx")


def _put(target: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = target
    for depth, part in enumerate(parts):
        match = _PART.fullmatch(part)
        if match is None:
            return
        name, index = match[1], match[2]
        final = depth == len(parts) - 1
        if index is None:
            if final:
                node[name] = value
            else:
                node = node.setdefault(name, {})
            continue
        rows = node.setdefault(name, [])
        while len(rows) <= int(index):
            rows.append({})
        if final:
            rows[int(index)] = value
        else:
            node = rows[int(index)]


def form_from_facts(facts: Mapping[str, Any]) -> dict[str, str]:
    """Field values showing `facts` (a shipment read from JSON or YAML)."""
    form: dict[str, str] = {}
    for name in SCALARS:
        value = _lookup(facts, name)
        if value is not None:
            form[name] = str(value)
    for kind, columns in (("goods", GOODS), ("charges", CHARGES), ("duties", DUTIES)):
        rows = facts.get(kind)
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            for column in columns:
                if isinstance(row, Mapping) and row.get(column) is not None:
                    form[f"{kind}[{index}].{column}"] = str(row[column])
    form["duties_mode"] = "estimate" if facts.get("duties") is None else "declared"
    rates = facts.get("fx")
    pairs = rates.items() if isinstance(rates, Mapping) else []
    for index, (code, rate) in enumerate(pairs):
        form[f"fx[{index}].currency"] = str(code)
        form[f"fx[{index}].rate"] = str(rate)
    return form


def _lookup(facts: Mapping[str, Any], path: str) -> Any:
    node: Any = facts
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, Mapping | list) else node


class _TextLoader(yaml.SafeLoader):
    """YAML (and so JSON) with numbers kept as their text: no amount becomes a float."""


def _as_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


for _tag in ("float", "int", "timestamp"):
    _TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _as_text)


def parse_pasted(text: str) -> dict[str, Any] | None:
    """Pasted JSON or YAML as a mapping (numbers and dates as text); None if it is not one."""
    try:
        data = yaml.load(text, Loader=_TextLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def field_of(path: str, form: Mapping[str, str]) -> str:
    """The form field a facts path belongs to: itself, its row's fx field, or its parent."""
    if path.startswith("fx."):
        code = path.split(".", 1)[1]
        for index in range(ROWS["fx"]):
            if form.get(f"fx[{index}].currency", "").strip() == code:
                return f"fx[{index}].rate"
        return ""
    known = set(SCALARS) | {
        f"{kind}[{i}].{c}"
        for kind, columns in (("goods", GOODS), ("charges", CHARGES), ("duties", DUTIES))
        for i in range(max(ROWS[kind], 50))
        for c in columns
    }
    candidate = path
    while candidate:
        if candidate in known:
            return candidate
        if "." not in candidate:
            break
        candidate = candidate.rsplit(".", 1)[0]
    return ""
