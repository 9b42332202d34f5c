"""The workbench over real HTTP (no browser): tenants, login, pages, /docs offline; and its
parts on their own: form <-> facts, SVG charts. tests/test_ui_browser.py drives Chromium."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.service.ui import charts, simulator
from tests.ui_server import KEY_A, KEY_B, SEED, UiServer, tamper


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    running = UiServer(tmp_path_factory.mktemp("ui"))
    yield running
    running.stop()


# --- access -------------------------------------------------------------------------


def test_without_a_key_every_page_sends_the_browser_to_the_login_form(server: UiServer) -> None:
    for path in ("/ui", "/ui/simulate", "/ui/diff", "/ui/impact", "/ui/audit"):
        response = server.get(path, key=None, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/ui/login?next={path}"


def test_login_sets_a_strict_httponly_cookie_and_refuses_an_unknown_key(server: UiServer) -> None:
    bad = server.post("/ui/login", {"key": "not-a-key-at-all", "next": "/ui"}, key=None)
    assert bad.status_code == 401 and "Unknown API key" in bad.text
    good = httpx.post(server.url + "/ui/login", data={"key": KEY_A, "next": "/ui/diff"}, timeout=30)
    assert good.status_code == 303 and good.headers["location"] == "/ui/diff"
    cookie = good.headers["set-cookie"]
    assert cookie.startswith(f"tiv_ui_key={KEY_A};")
    for part in ("HttpOnly", "SameSite=strict", "Path=/ui"):
        assert part.lower() in cookie.lower(), cookie
    # A login never redirects off the workbench.
    away = server.post("/ui/login", {"key": KEY_A, "next": "https://example.org/"}, key=None)
    assert away.status_code == 303 and away.headers["location"] == "/ui"


def test_a_tenant_sees_only_its_own_packs_files_and_records(server: UiServer) -> None:
    rules_a, rules_b = server.get("/ui", key=KEY_A).text, server.get("/ui", key=KEY_B).text
    assert "standard@1.0.0" in rules_a and "blue-harbour@1.0.0" not in rules_a
    assert "blue-harbour@1.0.0" in rules_b and "standard@1.0.0" not in rules_b
    # Country rules are shared reference data: both see them.
    assert "rules/countries/US/" in rules_a and "rules/countries/US/" in rules_b
    assert server.get("/ui/packs/blue-harbour/1.0.0", key=KEY_A).status_code == 404
    assert server.get("/ui/files/policies/blue-harbour/1.0.0.yaml", key=KEY_A).status_code == 404
    assert server.get("/ui/files/policies/standard/1.0.0.yaml", key=KEY_B).status_code == 404
    record = server.value_seed(KEY_A)
    assert server.get(f"/ui/audit/{record}", key=KEY_A).status_code == 200
    assert server.get(f"/ui/audit/{record}", key=KEY_B).status_code == 404
    assert record not in server.get("/ui/audit", key=KEY_B).text
    simulated = server.post("/ui/simulate", {"pack": "blue-harbour", "source": "form"}, KEY_A)
    assert simulated.status_code == 422 and "No policy pack `blue-harbour`" in simulated.text


def test_pages_are_not_cached_framed_or_scripted_from_elsewhere(server: UiServer) -> None:
    headers = server.get("/ui").headers
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]


# --- /docs offline ------------------------------------------------------------------


def test_docs_load_swagger_ui_from_tiv_itself(server: UiServer) -> None:
    page = server.get("/docs", key=None)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", page.text)
    urls += re.findall(r"url: '([^']+)'", page.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        body = server.get(f"/ui/static/swagger-ui/{asset}", key=None)
        assert body.status_code == 200 and len(body.content) > 100_000
    assert server.get("/ui/static/../../pages.py", key=None).status_code == 404


# --- pages --------------------------------------------------------------------------


def test_the_pack_page_shows_parameters_tables_and_links_every_line(server: UiServer) -> None:
    page = server.get("/ui/packs/standard/1.0.0").text
    # margin_rate as written in the file, with its description, source and line.
    lines = (Path(server.root) / "policies/standard/1.0.0.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith("  margin_rate:"))
    assert "<code>0.10</code>" in page
    assert "Institute Cargo Clauses practice, CIF + 10%" in page
    assert f'href="/ui/files/policies/standard/1.0.0.yaml#L{line}"' in page
    assert "Detention is a penalty for keeping a container too long" in page
    file_page = server.get("/ui/files/policies/standard/1.0.0.yaml").text
    assert f'<tr id="L{line}">' in file_page and "margin_rate:" in file_page


def test_a_rate_table_is_a_table_with_its_column_headers(server: UiServer) -> None:
    page = server.get("/ui/packs/blue-harbour/1.0.0", key=KEY_B).text
    assert "<caption>" in page and '<th scope="col">value</th>' in page


def test_the_seed_shipment_values_to_the_worked_example(server: UiServer) -> None:
    page = server.get("/ui/simulate?pack=standard&example=0").text
    fields = dict(re.findall(r'name="([^"]+)" type="[a-z]+" value="([^"]*)"', page))
    form = {k: v.replace("&#34;", '"') for k, v in fields.items() if v}
    choice = (
        r'<select id="[^"]+" name="([^"]+)">\s*(?:<option value="">[^<]*</option>)?'
        r'(?:<option value="[^"]*">[^<]*</option>)*<option value="([^"]*)" selected>'
    )
    selected = dict(re.findall(choice, page))
    assert selected["mode"] == "ocean" and selected["duties_mode"] == "declared"
    form.update(selected)
    form.update({"pack": "standard", "source": "form"})
    result = server.post("/ui/simulate", form)
    assert result.status_code == 200, result.text
    # TIV = 500,000.00 + 9,070.00 + 50,907.00 + 1,732.00 = 561,709.00 (the pack's example)
    assert 'data-figure="tiv">561,709.00 USD' in result.text
    assert "Demurrage is a penalty" in result.text  # an excluded charge with its reason
    assert "<svg" in result.text  # the waterfall


def test_pasted_yaml_values_and_fills_the_form(server: UiServer) -> None:
    text = SEED.read_text(encoding="utf-8")
    page = server.post("/ui/simulate", {"pack": "standard", "source": "paste", "facts_text": text})
    assert page.status_code == 200, page.text
    assert 'data-figure="tiv">561,709.00 USD' in page.text
    assert 'name="invoice.amount" type="text" value="500000.00"' in page.text
    bad = text.replace('amount: "650.00"', 'amount: "6x50"')
    page = server.post("/ui/simulate", {"pack": "standard", "source": "paste", "facts_text": bad})
    assert page.status_code == 422
    assert re.search(r'id="f-charges-1-amount-error"[^>]*>[^<]*decimal', page.text)


def test_two_pinned_versions_side_by_side(server: UiServer) -> None:
    page = server.get("/ui/simulate?pack=standard&example=0").text
    fields = dict(re.findall(r'name="([^"]+)" type="[a-z]+" value="([^"]*)"', page))
    form = {k: v for k, v in fields.items() if v}
    form.update({"mode": "ocean", "duties_mode": "declared", "source": "form"})
    form.update({"version": "standard@1.0.0", "compare_version": "acme-marine@1.0.0"})
    result = server.post("/ui/simulate", form)
    assert result.status_code == 200, result.text
    heads = re.findall(r'<section class="result" aria-label="Result under ([^"]+)"', result.text)
    assert heads == ["standard@1.0.0", "acme-marine@1.0.0"]
    assert 'class="results side-by-side"' in result.text


def test_a_form_over_the_limit_is_refused_whole(server: UiServer) -> None:
    corpus = "x" * (4 * 1024 * 1024 + 1)
    data = {"before": "standard@1.0.0", "after": "acme-marine@1.0.0", "corpus": corpus}
    refused = server.post("/ui/impact", data)
    assert refused.status_code == 413 and "The form is over 4 MiB" in refused.text


def test_a_bad_amount_is_reported_at_its_field(server: UiServer) -> None:
    form = {
        "pack": "standard",
        "source": "form",
        "id": "X-1",
        "date": "2025-03-14",
        "currency": "USD",
        "mode": "ocean",
        "origin.country": "CN",
        "destination.country": "US",
        "invoice.amount": "1000",
        "charges[0].type": "ocean_freight",
        "charges[0].amount": "12,5x",
        "duties_mode": "declared",
    }
    page = server.post("/ui/simulate", form)
    assert page.status_code == 422
    assert 'id="f-charges-0-amount" name="charges[0].amount"' in page.text
    assert re.search(r'<p class="error" id="f-charges-0-amount-error"[^>]*>[^<]*decimal', page.text)


def test_a_tampered_record_carries_the_banner(server: UiServer) -> None:
    record = server.value_seed(KEY_A)
    assert 'id="tampered"' not in server.get(f"/ui/audit/{record}").text
    change = "UPDATE records SET body = replace(body, '561709.00', '1.00') WHERE id = ?"
    tamper(server.audit, change, (record,))
    page = server.get(f"/ui/audit/{record}").text
    assert 'id="tampered"' in page and "This record does not verify" in page
    assert "Chain broken at record" in server.get("/ui/audit").text


# --- parts --------------------------------------------------------------------------


def test_form_fields_are_json_paths_and_errors_find_their_field() -> None:
    form = {
        "id": "A",
        "invoice.amount": "10.50",
        "expected_transit_days": "21",
        "charges[1].type": "air_freight",
        "charges[1].amount": "3",
        "fx[0].currency": "EUR",
        "fx[0].rate": "1.1",
        "duties_mode": "estimate",
    }
    facts = simulator.facts_from_form(form)
    assert facts == {
        "id": "A",
        "invoice": {"amount": "10.50"},
        "expected_transit_days": 21,
        "charges": [{}, {"type": "air_freight", "amount": "3"}],
        "fx": {"EUR": "1.1"},
    }
    assert simulator.field_of("charges[1].amount", form) == "charges[1].amount"
    assert simulator.field_of("fx.EUR", form) == "fx[0].rate"
    assert simulator.field_of("origin.country", form) == "origin.country"
    assert simulator.field_of("origin", form) == ""
    back = simulator.form_from_facts(simulator.parse_pasted("invoice: {amount: 0.10}") or {})
    assert back["invoice.amount"] == "0.10"  # the text as written, not a float's 0.1


def test_the_waterfall_climbs_by_each_component_to_the_tiv() -> None:
    steps = [("invoice", Decimal("500000.00")), ("freight", Decimal("9070.00"))]
    steps += [("margin", Decimal("50907.00")), ("duties", Decimal("1732.00"))]
    svg = charts.waterfall("w", steps, ("TIV", Decimal("561709.00")))
    rects = [
        (Decimal(y), Decimal(h))
        for y, h in re.findall(r'<rect x="[^"]+" y="([^"]+)" width="[^"]+" height="([^"]+)"', svg)
    ]
    # Plot height 300 - 28 - 44 = 228 px for 561,709.00; the TIV bar spans all of it, and
    # the invoice bar 500,000 / 561,709 × 228 = 202.95 px, written as 203.0.
    assert rects[-1] == (Decimal("28.0"), Decimal("228.0"))
    assert rects[0][1] == Decimal("203.0")
    # Each step starts exactly where the previous one ended.
    for (y_prev, _), (y_next, h_next) in itertools.pairwise(rects[:4]):
        assert y_next + h_next == y_prev
    assert "561,709.00" in svg and "<title>w</title>" in svg


@given(st.lists(st.decimals(-(10**6), 10**6, places=2, allow_nan=False), min_size=1, max_size=60))
def test_a_histogram_counts_every_value_once(values: list[Decimal]) -> None:
    svg = charts.histogram("h", values)
    counts = [int(n) for n in re.findall(r": (\d+)</title><rect", svg)]
    assert sum(counts) == len(values)


def test_sources_split_into_file_and_line_and_lock_states_read_plainly() -> None:
    from engine.service.ui.rulebook import lock_state, split_source

    assert split_source("policies/standard/1.0.0.yaml:28") == ("policies/standard/1.0.0.yaml", 28)
    assert split_source("rules/countries/US/1.0.0.yaml:138:5") == (
        "rules/countries/US/1.0.0.yaml",
        138,
    )
    assert split_source("charges[2].amount") is None
    locked = {"a.yaml": "1" * 64}
    assert lock_state(locked, "a.yaml", "1" * 64, "published") == "locked"
    assert lock_state(locked, "a.yaml", "2" * 64, "published") == "changed since locked"
    assert lock_state(locked, "b.yaml", "1" * 64, "published") == "not locked"
    assert lock_state(locked, "b.yaml", "1" * 64, "draft") == "draft (never locked)"
    assert lock_state(None, "a.yaml", "1" * 64, "published") == "no rules.lock"
