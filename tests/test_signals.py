"""Every evaluation error names its cause (issue 12 item 3): a decimal signal in a formula
(division by zero, an invalid operation, an overflow, a figure too long to write) is an
EvaluationError at the formula's file:line AND the JSON path of the fact it read; never
an uncaught exception (the CLI's exit 70, the service's 500)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from engine import EvaluationError, FactsError, value
from engine.api import claim, load_rules
from tests.conftest import ROOT, line_of, load_mini, mini, repo, run_cli, shipment

MARGIN = "  margin: (invoice + freight) * margin_rate\n"
TIV = "  tiv: round(invoice + freight + margin + duties)\n"


def _error(pack: str, facts: dict[str, object], **replace: str) -> EvaluationError:
    rules = load_mini(replace=replace)
    with pytest.raises(EvaluationError) as caught:
        value(rules, facts, policy="mini")
    return caught.value


def test_division_by_zero_names_the_formula_and_the_facts_it_read() -> None:
    # margin = invoice / (freight - freight): freight - freight is 0 whatever the charges.
    replaced = "  margin: invoice / (freight - freight)\n"
    facts = shipment(charges=[{"type": "ocean_freight", "amount": "5"}])
    error = _error("mini", facts, **{MARGIN: replaced})
    (problem,) = error.problems
    assert problem.code == "formula.division_by_zero"
    assert problem.location.file == "policies/mini/1.0.0.yaml"
    assert problem.location.line == line_of(mini(replace={MARGIN: replaced}), "margin: invoice /")
    # invoice is shipment.invoice.amount; freight sums the main carriage, origin and
    # destination charges: charges[0] is ocean freight.
    assert problem.location.path == "invoice.amount"
    assert "it reads the facts invoice.amount, charges[0].amount" in problem.message


def test_an_overflow_names_the_formula_and_the_fact() -> None:
    # (10^19)^(12^5) = 10^(19 x 248832), far beyond the context's 10^999999; through four
    # formulas, each within the bound of ** (a literal exponent up to 12).
    replaced = (
        "  m1: invoice ** 12\n  m2: m1 ** 12\n  m3: m2 ** 12\n  m4: m3 ** 12\n  margin: m4 ** 12\n"
    )
    error = _error(
        "mini",
        shipment(invoice={"amount": "10000000000000000000"}),
        **{MARGIN: replaced},
    )
    (problem,) = error.problems
    assert problem.code == "formula.overflow"
    assert problem.location.line == line_of(mini(replace={MARGIN: replaced}), "margin: m4")
    assert problem.location.path == "invoice.amount"


def test_a_figure_too_long_to_write_is_an_error_at_its_formula() -> None:
    # No round() in tiv: invoice x invoice = (10^19)^2 = 10^38, 39 digits before the point,
    # more than 34 significant digits with 2 places can hold.
    replace = {
        MARGIN: "  margin: invoice * invoice\n",
        TIV: "  tiv: invoice + freight + margin + duties\n",
    }
    error = _error("mini", shipment(invoice={"amount": "10000000000000000000"}), **replace)
    (problem,) = error.problems
    assert problem.code == "formula.too_large"
    assert problem.location.line == line_of(mini(replace=replace), "tiv: invoice")
    assert problem.location.path == "invoice.amount"
    assert "39 digits before the decimal point" in problem.message


def test_declared_duties_and_charge_groups_are_named_by_their_own_paths() -> None:
    # duties = declared_duties.total / 0: each declared duty's amount is read.
    duties = "  duties: declared_duties.total if exists(declared_duties.total) else 0\n"
    replaced = "  duties: declared_duties.total / (invoice - invoice)\n"
    facts = shipment(
        charges=[
            {"type": "detention", "amount": "3"},  # excluded: not read
            {"type": "origin_charges", "amount": "2"},
        ],
        duties=[{"type": "tax", "amount": "7"}, {"type": "import_duty", "amount": "1"}],
    )
    error = _error("mini", facts, **{duties: replaced})
    (problem,) = error.problems
    assert problem.code == "formula.division_by_zero"
    assert "duties[0].amount, duties[1].amount, invoice.amount" in problem.message
    # tiv reads freight (charges of the three groups): origin_charges is charges[1]; the
    # excluded detention charge is in no group, so it is not named.
    tiv_error = _error(
        "mini",
        facts,
        **{MARGIN: "  margin: freight / (freight - freight)\n"},
    )
    assert tiv_error.problems[0].location.path == "charges[1].amount"
    assert "charges[0]" not in tiv_error.problems[0].message


CLAIMS = textwrap.dedent("""\
    claims:
      formulas:
        damage: loss.damage_percent / (loss.damage_percent - loss.damage_percent)
        indemnity: round(tiv * damage)
      result:
        indemnity: indemnity
        components: [damage]
    """)


def test_a_claims_formula_names_the_loss_it_read() -> None:
    rules = load_rules(files=repo(mini() + CLAIMS))  # type: ignore[arg-type]
    with pytest.raises(EvaluationError) as caught:
        claim(rules, shipment(), {"kind": "partial", "damage_percent": "25"}, policy="mini")
    (problem,) = caught.value.problems
    assert problem.code == "formula.division_by_zero"
    assert problem.location.path == "loss.damage_percent"
    assert problem.location.line == line_of(mini() + CLAIMS, "damage: loss")


def test_the_cli_exits_4_not_70(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for name, text in repo(
        mini(replace={MARGIN: "  margin: invoice / (invoice - invoice)\n"})
    ).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps(shipment()), encoding="utf-8")
    ran = run_cli("--rules", root, "value", facts, "--policy", "mini")
    assert ran.returncode == 4, ran.stderr
    assert "policies/mini/1.0.0.yaml:" in ran.stderr and "invoice.amount" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    ("loss", "path", "says"),
    [
        ({"kind": "partial", "damage_percent": 25.0}, "loss.damage_percent", "binary float"),
        (
            {"kind": "partial", "gross_sound_value": "1e5", "gross_damaged_value": "1"},
            "loss.gross_sound_value",
            "not a decimal number",
        ),
        (
            {"kind": "partial", "gross_sound_value": "1" + "0" * 25, "gross_damaged_value": "1"},
            "loss.gross_sound_value",
            "at most 20 digits",
        ),
    ],
)
def test_a_loss_is_bounded_and_exact_like_the_facts(
    loss: dict[str, object], path: str, says: str
) -> None:
    rules = load_rules(ROOT)
    with pytest.raises(FactsError) as caught:
        claim(rules, shipment(), loss, policy="blue-harbour")
    (problem,) = caught.value.problems
    assert problem.location.path == path and says in problem.message
