"""engine.names declares what rule files may read; engine.evaluating.environment fills it
in. The two must name the same things, or a type-checked formula could read a name the
environment never sets (or a set name could never be typed)."""

from __future__ import annotations

from engine import names
from engine.evaluating.environment import build_environment
from engine.explaining.trace import NullTracer
from engine.facts import FactsReference, read_facts
from tests.conftest import ROOT

SEED = ROOT / "examples/shipments/seed-electronics.yaml"


def _environment():  # type: ignore[no-untyped-def]
    from engine import load_rules

    rules = load_rules(ROOT)
    reference = FactsReference(rules.currencies, rules.countries)
    shipment = read_facts(SEED.read_bytes(), reference, name=SEED.name)
    return build_environment(shipment, 2, {}, NullTracer())


def test_shipment_names_are_the_ones_the_environment_sets() -> None:
    env = _environment()
    set_names = {name for name in env.shipment if name.startswith("shipment.")}
    assert set_names == set(names.SHIPMENT)


def test_declared_duty_names_are_the_ones_the_environment_sets() -> None:
    env = _environment()
    set_names = {name for name in env.shipment if name.startswith("declared_duties.")}
    assert set_names == set(names.DECLARED_DUTIES)


def test_line_names_are_the_ones_the_environment_sets() -> None:
    env = _environment()
    assert env.charges and env.goods  # the seed has both, so both kinds are checked
    for line in env.charges:
        assert set(line.env) == set(names.CHARGE)
    for line in env.goods:
        # a goods line sets only the optional facts it was given; none outside GOODS
        assert set(line.env) <= set(names.GOODS)
        assert {"goods.description"} <= set(line.env)


def test_every_name_that_holds_codes_is_a_declared_name() -> None:
    # A name in CODES that rule files cannot read would never be checked.
    declared = {**names.SHIPMENT, **names.CHARGE, **names.GOODS}
    assert set(names.CODES) <= set(declared)
    from engine.compiling.formulas import BUILTINS, TEXT

    # codes are text, or lists of text
    for name in names.CODES:
        symbol = declared[name]
        assert symbol.type == TEXT or symbol.element == TEXT, name
    assert set(names.FUNCTION_CODES) <= {*BUILTINS, "region"}
