"""Masking: paths into the facts whose values an audit store keeps out.

A store can be created with a list of paths into the facts (`id`, `goods[*].description`,
`fx.*`, `charges[0].amount`). Their values are stored as `MASK_MARKER`, and so is any text
in the result equal to a masked value (the shipment id, a figure the trace repeats). The
record lists the concrete paths masked, so a replay says which fields it could not use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from engine.compliance.audit.record import canonical_json
from engine.errors import json_path

MASK_MARKER = "<masked>"
_MASK_TOKEN = re.compile(r"(?:^|\.)([A-Za-z_][A-Za-z0-9_]*|\*)|\[(\*|[0-9]+)\]")


def parse_mask(pattern: str) -> tuple[str | int, ...]:
    """`goods[*].description` -> ("goods", "*", "description"); ValueError if malformed."""
    parts: list[str | int] = []
    position = 0
    for match in _MASK_TOKEN.finditer(pattern):
        if match.start() != position or (match.group(0).startswith(".") and not parts):
            break
        name, index = match.groups()
        parts.append(name if name is not None else ("*" if index == "*" else int(index)))
        position = match.end()
    if not parts or position != len(pattern):
        raise ValueError(
            f"{pattern!r} is not a mask path: write e.g. id, origin.port, goods[*].description"
        )
    return tuple(parts)


def apply_mask(
    facts: Mapping[str, Any], patterns: Sequence[str]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """The facts with masked values replaced, the concrete paths masked, the values hidden."""
    data = json.loads(canonical_json(facts))
    masked: set[str] = set()
    secrets: set[str] = set()
    for pattern in patterns:
        _mask(data, parse_mask(pattern), (), masked, secrets)
    return data, sorted(masked), secrets


def _mask(
    node: Any,
    parts: tuple[str | int, ...],
    here: tuple[str | int, ...],
    masked: set[str],
    secrets: set[str],
) -> None:
    head, rest = parts[0], parts[1:]
    keys: list[str | int]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list):
        keys = list(range(len(node))) if head == "*" else [head]
        keys = [k for k in keys if isinstance(k, int) and k < len(node)]
    else:
        return
    for key in keys:
        value = node[key]
        if rest:
            _mask(value, rest, (*here, key), masked, secrets)
        elif value is not None and value != MASK_MARKER:
            _leaves(value, secrets)
            node[key] = MASK_MARKER
            masked.add(json_path((*here, key)))


def mask_facts(
    kind: str, facts: Mapping[str, Any], patterns: Sequence[str]
) -> tuple[dict[str, Any], list[str], set[str]]:
    """apply_mask on the shipment facts, which a claim's facts hold under `shipment`."""
    inner = facts.get("shipment") if kind == "claim" else None
    if not isinstance(inner, Mapping):
        return apply_mask(facts, patterns)
    shipment, masked, secrets = apply_mask(inner, patterns)
    stored = json.loads(canonical_json(facts))
    stored["shipment"] = shipment
    return stored, [f"shipment.{path}" for path in masked], secrets


def _leaves(value: Any, out: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, out)
    elif isinstance(value, str) and value:
        out.add(value)


def scrub(value: Any, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str) and value in secrets:
        return MASK_MARKER
    return value


# --- the store ----------------------------------------------------------------------
