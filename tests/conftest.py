"""Shared fixtures: the shipped repository, in-memory repositories built from pack text, the
one shipment factory, and `run_cli`, which runs `tiv` in this process."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine import RuleSet, load_rules
from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = {
    path: (ROOT / path).read_text(encoding="utf-8")
    for path in (
        "rules/reference/currencies.yaml",
        "rules/reference/countries.yaml",
        "rules/reference/incoterms.yaml",
        "rules/reference/goods_categories.yaml",
    )
}

# A small pack in the standard shape; tests vary it with str.replace or extra rules.
MINI_PACK = """\
kind: policy
schema_version: 1
id: mini
version: 1.0.0
status: published
effective_from: 2020-01-01
title: Mini
description: A test pack.
provenance: {author: a, approver: b, approved_on: 2020-01-01, changelog: c}
parameters:
  margin_rate: 0.10
charge_types:
  ocean_freight: {group: main_carriage}
  air_freight: {group: main_carriage}
  origin_charges: {group: origin}
  destination_charges: {group: destination}
  detention: {excluded: Detention is a penalty}
  demurrage: {excluded: Demurrage is a penalty}
rounding:
  mode: half_up
formulas:
  invoice: shipment.invoice.amount
  freight: charges.main_carriage + charges.origin + charges.destination
  margin: (invoice + freight) * margin_rate
  duties: declared_duties.total if exists(declared_duties.total) else 0
  tiv: round(invoice + freight + margin + duties)
result:
  total_insured_value: tiv
  components: [invoice, freight, margin, duties]
"""


def repo(*packs: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Files of an in-memory repository: the reference data plus the given packs."""
    files = dict(REFERENCE)
    for text in packs:
        pack_id = re.search(r"^id: (.+)$", text, re.M)
        version = re.search(r"^version: (.+)$", text, re.M)
        assert pack_id and version
        files[f"policies/{pack_id[1]}/{version[1]}.yaml"] = text
    files.update(extra or {})
    return files


def mini(rules: str = "", *, replace: dict[str, str] | None = None) -> str:
    text = MINI_PACK
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    if rules:
        text += "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    return text


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the only line of `text` containing `fragment`."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(found) == 1, (fragment, found)
    return found[0]


def load_mini(rules: str = "", **kwargs: object) -> RuleSet:
    return load_rules(files=repo(mini(rules, **kwargs)))  # type: ignore[arg-type]


def shipment(**overrides: Any) -> dict[str, Any]:
    """The one shipment factory: a plain US import by ocean, T-1, 1,000.00 USD, no charges;
    `overrides` replace whole top-level fields."""
    facts: dict[str, Any] = {
        "id": "T-1",
        "date": "2024-01-15",
        "currency": "USD",
        "mode": "ocean",
        "origin": {"country": "CN"},
        "destination": {"country": "US"},
        "invoice": {"amount": "1000.00"},
        "charges": [],
        "duties": [],
    }
    facts.update(overrides)
    return facts


@pytest.fixture(scope="session")
def shipped() -> RuleSet:
    return load_rules(ROOT)


@dataclass(frozen=True)
class Ran:
    """What `tiv` did: the fields of subprocess.CompletedProcess the tests read."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Ran:
    """`tiv ARGS` in this process, through `engine.cli.main(argv)`: the same parser, verbs
    and exit statuses as the console script, without a 1.5 s interpreter start. Tests
    that must see a real process (a kill, a server, the console script) use subprocess."""
    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    saved_stdin = sys.stdin
    try:
        os.environ.update(env or {})
        sys.stdin = io.StringIO(stdin or "")
        with (
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main([os.fspath(a) for a in args])
            except SystemExit as stop:  # argparse: --help, --version, a usage error
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stdin = saved_stdin
        os.environ.clear()
        os.environ.update(saved_env)
    return Ran(code, out.getvalue(), err.getvalue())
