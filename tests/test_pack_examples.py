"""Examples kept beside the rules can check the deductible and a null figure (issue 11,
item 9): `deductible:`, `premium: null` and `figures: {rate: null}` in `expect`."""

from __future__ import annotations

import textwrap

import pytest

from engine import RulesError, load_rules, run_examples
from tests.conftest import mini, repo

# A rated mini pack: a one-row rate table (ocean only; a gap refers, leaving the rate and
# the premium null), a premium and a deductible of 0.5% of the TIV.
RATED = mini(
    replace={
        "  margin_rate: 0.10\n": "  margin_rate: 0.10\n  deductible_rate: 0.005\n",
        "  tiv: round(invoice + freight + margin + duties)\n": (
            "  tiv: round(invoice + freight + margin + duties)\n"
            '  rate: lookup("mode_rate")\n'
            "  premium: round(tiv * rate)\n"
            "  deductible: round(tiv * deductible_rate)\n"
        ),
        "  components: [invoice, freight, margin, duties]\n": (
            "  components: [invoice, freight, margin, duties]\n"
            "  premium: premium\n"
            "  deductible: deductible\n"
            "  figures: [rate]\n"
        ),
    }
) + textwrap.dedent(
    """\
    tables:
      mode_rate:
        match: first
        on_gap: refer
        gap_reason: No rate for this mode
        keys: {mode: shipment.mode}
        rows:
          - [ocean, 0.004]
    """
)


def shipment_yaml(mode: str) -> str:
    return (
        f'{{id: E-1, date: "2024-01-15", currency: USD, mode: {mode}, origin: {{country: CN}},'
        ' destination: {country: US}, invoice: {amount: "1000.00"}, charges: [], duties: []}'
    )


def with_examples(*examples: tuple[str, str, str]) -> str:
    """RATED with `examples:` (name, mode, the expect mapping in flow style)."""
    lines = ["examples:"]
    for name, mode, expect in examples:
        lines += [f"  - name: {name}", f"    shipment: {shipment_yaml(mode)}"]
        lines += [f"    expect: {expect}"]
    return RATED + "\n".join(lines) + "\n"


def outcomes(text: str) -> dict[str, tuple[str, ...]]:
    rules = load_rules(files=repo(text))
    return {o.name: o.mismatches for o in run_examples(rules, ["mini"])}


# By hand, for the 1,000.00 USD shipment with no charges:
#   TIV = 1,000.00 + 1,000.00 × 0.10 = 1,100.00
#   ocean: rate 0.004, premium = 1,100.00 × 0.004 = 4.40; deductible = 1,100.00 × 0.005 = 5.50
#   air: no row, so rate and premium are null (referred); the deductible needs no rate: 5.50


def test_the_deductible_and_null_figures_are_checked_and_hold() -> None:
    text = with_examples(
        ("ocean", "ocean", '{premium: "4.40", deductible: "5.50", figures: {rate: "0.004"}}'),
        ("air", "air", '{premium: null, deductible: "5.50", figures: {rate: null}}'),
        ("air, only the null premium", "air", "{premium: null}"),
    )
    assert outcomes(text) == {"ocean": (), "air": (), "air, only the null premium": ()}


def test_a_wrong_deductible_or_null_is_a_mismatch_saying_both_sides() -> None:
    text = with_examples(
        ("deductible", "ocean", '{deductible: "5.00"}'),
        ("null expected", "ocean", "{premium: null, figures: {rate: null}}"),
        ("null got", "air", '{premium: "4.40", figures: {rate: "0.004"}}'),
        ("no such figure", "ocean", '{figures: {nope: "1"}}'),
    )
    assert outcomes(text) == {
        "deductible": ("deductible: expected 5.00, got 5.50",),
        "null expected": (
            "premium: expected null, got 4.40",
            "figures.rate: expected null, got 0.004",
        ),
        "null got": (
            "premium: expected 4.40, got null",
            "figures.rate: expected 0.004, got null",
        ),
        "no such figure": ("figures.nope: not a figure of this pack (figures: rate)",),
    }


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("{}", "an example must expect something"),
        ("{error: tables.gap, deductible: null}", "either an error or figures, not both"),
    ],
)
def test_an_expectation_must_check_one_thing(expect: str, message: str) -> None:
    with pytest.raises(RulesError, match=message) as info:
        load_rules(files=repo(with_examples(("bad", "ocean", expect))))
    assert str(info.value.problems[0].location).startswith("policies/mini/1.0.0.yaml:")
