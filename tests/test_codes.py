"""Typed codes in rule files (engine/compiling/vocabulary.py): a literal compared with, listed
for or looked up by a field that holds codes must be a value of that field, checked at load
against rules/reference/ and the facts contract, with file:line:col and "did you mean"."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import RulesError, RuleSet, load_rules, value
from engine.errors import Problem
from tests.conftest import ROOT, line_of, mini, repo, run_cli, shipment


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RulesError) as info:
        load_rules(files=repo(text))
    return list(info.value.problems)


def only_problem(text: str) -> Problem:
    (problem,) = problems_of(text)
    return problem


def with_parameters(extra: str, rules: str = "", regions: str = "") -> str:
    return mini(
        rules,
        replace={"  margin_rate: 0.10\n": "  margin_rate: 0.10\n" + extra + regions},
    )


def rule(when: str, scope: str = "shipment") -> str:
    return f"""\
    - id: r
      for: {scope}
      when: {when}
      decide: refer
      reason: x
    """


def column_of(text: str, fragment: str, token: str) -> int:
    """1-based column of `token` on the only line holding `fragment`."""
    line = text.splitlines()[line_of(text, fragment) - 1]
    return line.index(token) + 1


def test_the_shipped_packs_name_only_valid_codes(shipped: RuleSet) -> None:
    assert shipped.packs  # load_rules would have raised on any unknown code


def test_a_parameter_list_takes_its_kind_from_what_it_is_compared_with() -> None:
    text = with_parameters(
        "  sanctioned_countries: [UK, IRN]\n",
        rule("shipment.destination.country in sanctioned_countries"),
    )
    uk, irn = problems_of(text)
    line = line_of(text, "sanctioned_countries: [UK, IRN]")
    assert (uk.code, uk.location.line, uk.location.col) == (
        "pack.unknown_code",
        line,
        column_of(text, "[UK, IRN]", "UK"),
    )
    assert "`UK` is not a country code" in uk.message
    assert "did you mean `GB`?" in uk.message  # from the aliases in countries.yaml
    assert irn.location.col == column_of(text, "[UK, IRN]", "IRN")
    assert "did you mean `IR`?" in irn.message


def test_an_unused_parameter_has_no_kind_and_is_not_checked() -> None:
    load_rules(files=repo(with_parameters("  notes_list: [UK, IRN]\n")))


def test_a_mode_literal_with_did_you_mean_and_the_allowed_modes() -> None:
    text = mini(rule('shipment.mode == "sea"'))
    problem = only_problem(text)
    assert problem.location.line == line_of(text, 'shipment.mode == "sea"')
    assert problem.location.col == column_of(text, 'shipment.mode == "sea"', '"sea"')
    assert "did you mean `ocean`?" in problem.message
    assert "(allowed: air, courier, multimodal, ocean, rail, road)" in problem.message


def test_an_incoterm_literal() -> None:
    problem = only_problem(mini(rule('shipment.incoterm != "DAPP"')))
    assert "`DAPP` is not an Incoterm" in problem.message
    assert "did you mean `DAP`?" in problem.message
    assert "DDP" in problem.message  # the eleven terms are listed


def test_in_lists_payment_methods_currencies_and_lowercase() -> None:
    text = mini(
        rule(
            'shipment.payment_method in ["prepayed"] and shipment.currency == "usd" '
            'and "XX" in shipment.transit_countries'
        )
    )
    prepayed, usd, xx = problems_of(text)
    assert "did you mean `prepaid`?" in prepayed.message
    assert "`usd` is not a currency code" in usd.message and "did you mean `USD`?" in usd.message
    assert "`XX` is not a country code" in xx.message


def test_a_goods_category_synonym_in_a_pack_reads_as_its_category_as_in_facts() -> None:
    # Facts read `art` as `fine_art`; the pack's `"art"` must mean the same category, or the
    # rule would silently never hold. Both spellings, in facts and in the pack, refer.
    rules = load_rules(files=repo(mini(rule('goods.category in ["art", "toys"]', scope="goods"))))
    for written in ("art", "fine_art"):
        goods = [{"description": "a painting", "value": "1000.00", "category": written}]
        result = value(rules, shipment(goods=goods), policy="mini")
        assert result.decision == "refer", written
        (step,) = [s for s in result.trace if s.kind == "rule"]
        assert step.expression == 'goods.category in ["fine_art", "toys"]'
    other = [{"description": "a toaster", "value": "1000.00", "category": "electronics"}]
    assert value(rules, shipment(goods=other), policy="mini").decision == "accept"


def test_a_synonym_also_used_as_other_text_or_in_a_table_is_refused() -> None:
    # `"art"` is also compared with a description here, so it is not rewritten.
    text = mini(rule('goods.category == "art" or goods.description == "art"', scope="goods"))
    problem = only_problem(text)
    assert "`art` is not a goods category" in problem.message
    assert "synonym of `fine_art`" in problem.message


def test_charge_types_and_groups_come_from_the_pack() -> None:
    text = mini(
        """\
        - id: c
          for: charge
          when: charge.type == "ocean_fright" or charge.group == "main_carriag"
          exclude_charge: true
          reason: x
        """
    )
    fright, carriag = problems_of(text)
    assert "did you mean `ocean_freight`?" in fright.message
    assert "air_freight, demurrage, destination_charges" in fright.message
    assert "did you mean `main_carriage`?" in carriag.message


def test_a_declared_kind_is_checked_even_before_a_use() -> None:
    problem = only_problem(with_parameters("  home_currency: {value: EURO, codes: currency}\n"))
    assert problem.location.path == "parameters.home_currency.value"
    assert "`EURO` is not a currency code" in problem.message


def test_a_parameter_used_as_two_kinds_is_refused() -> None:
    text = with_parameters(
        "  home: {value: USD, codes: currency}\n", rule("shipment.origin.country == home")
    )
    problem = only_problem(text)
    assert problem.code == "pack.code_kind"
    assert "declares currency codes" in problem.message


def test_a_formula_has_the_kind_it_returns() -> None:
    # `main` returns a category, so the literal in its other branch and the comparison
    # with it are checked too.
    text = mini(
        rule('main == "pharma"'),
        replace={
            "  tiv: round(": "  main: 'shipment.goods.main_category if "
            'exists(shipment.goods.main_category) else "general_carg"\'\n  tiv: round('
        },
    )
    # "pharma" is a synonym: it reads as "pharmaceuticals", as in facts (no problem).
    carg = only_problem(text)
    assert "did you mean `general_cargo`?" in carg.message


def test_regions_hold_countries_and_region_names_are_the_packs() -> None:
    text = with_parameters(
        "",
        rule('region(shipment.origin.country) == "europa"'),
        regions="regions:\n  europe: [DE, UK]\n",
    )
    uk, europa = sorted(problems_of(text), key=lambda p: p.location.line)
    assert uk.location.path == "regions.europe[1]"
    assert "did you mean `GB`?" in uk.message
    assert "did you mean `europe`?" in europa.message
    assert "(allowed: europe, rest_of_world)" in europa.message


def test_table_cells_are_checked_against_the_column_key() -> None:
    text = mini(
        replace={
            "  tiv: round(invoice": '  rate: lookup("by_mode")\n  tiv: round(invoice',
            "result:": """tables:
  by_mode:
    match: first
    on_gap: error
    keys: {mode: shipment.mode}
    rows:
      - [ocean, 0.1]
      - [sea, 0.2]
      - ["*", 0.3]
result:""",
        }
    )
    problem = only_problem(text)
    assert problem.location.path == "tables.by_mode.rows[1][0]"
    assert problem.location.line == line_of(text, "- [sea, 0.2]")
    assert "column `mode` of table `by_mode`" in problem.message
    assert "did you mean `ocean`?" in problem.message


def test_from_currency_takes_a_currency_code() -> None:
    problem = only_problem(mini(rule('from_currency(45, "US$") > 0')))
    assert "given to from_currency()" in problem.message


def test_tiv_validate_exits_3_naming_file_line_col(tmp_path: Path) -> None:
    text = mini(rule('shipment.mode == "sea"'))
    for path, body in repo(text).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(body)
    ran = run_cli("--rules", str(tmp_path), "validate")
    code, out, err = ran.returncode, ran.stdout, ran.stderr
    line = line_of(text, 'shipment.mode == "sea"')
    col = column_of(text, 'shipment.mode == "sea"', '"sea"')
    assert code == 3
    assert f"policies/mini/1.0.0.yaml:{line}:{col}:" in out + err
    assert "did you mean `ocean`?" in out + err


def test_the_vocabulary_comes_from_the_reference_files() -> None:
    # Take DE out of countries.yaml: the shipped pack naming DE no longer loads.
    files = repo(mini(rule('shipment.destination.country == "DE"')))
    countries = files["rules/reference/countries.yaml"]
    files["rules/reference/countries.yaml"] = countries.replace('  "DE": {name: Germany}\n', "")
    assert files["rules/reference/countries.yaml"] != countries
    with pytest.raises(RulesError) as info:
        load_rules(files=files)
    (problem,) = info.value.problems
    assert "`DE` is not a country code" in problem.message
    assert (ROOT / "rules/reference/countries.yaml").read_text() == countries


def test_cells_of_a_table_with_a_header_row_are_checked_by_column_name() -> None:
    # The header names the columns in another order than `keys`: the cell under `mode`
    # (the second column) is the one checked against the transport modes.
    text = mini(
        replace={
            "  tiv: round(invoice": '  rate: lookup("by_mode")\n  tiv: round(invoice',
            "result:": """tables:
  by_mode:
    match: first
    on_gap: error
    keys: {mode: shipment.mode, country: shipment.destination.country}
    result: rate
    rows:
      - [country, mode, rate]
      - [US, ocean, 0.1]
      - [DE, sea, 0.2]
result:""",
        }
    )
    problem = only_problem(text)
    assert problem.location.line == line_of(text, "- [DE, sea, 0.2]")
    assert "column `mode` of table `by_mode`" in problem.message
    assert "did you mean `ocean`?" in problem.message
