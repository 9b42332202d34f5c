"""The workbench in a real headless Chromium: Debian's `chromium` and `chromium-driver`,
driven by selenium, against a real `tiv serve` on loopback.

Without the browser these tests skip, naming the packages to install; with CI=true a
missing browser fails the run. Screenshots go to $TIV_UI_SCREENSHOTS (default: the
test's temporary folder) and each is checked not to be blank.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui_server import KEY_A, UiServer, tamper

pytestmark = pytest.mark.browser

# Debian's paths; the variables point elsewhere (or nowhere, to see the skip).
CHROMIUM = os.environ.get("TIV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TIV_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return f"the browser tests need Debian's chromium and chromium-driver: {INSTALL}"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    running = UiServer(tmp_path_factory.mktemp("ui-browser"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tiv-chromium-", dir=tmp_path_factory.getbasetemp())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER)
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


@pytest.fixture()
def signed_in(driver: Any, server: UiServer) -> Any:
    """The browser, signed in as insurer A (through the login form, as a person would)."""
    from selenium.webdriver.common.keys import Keys

    driver.get(server.url + "/ui")
    if driver.get_cookie("tiv_ui_key") is None:
        wait_for(driver, "#key").send_keys(KEY_A, Keys.ENTER)
        wait_for(driver, "#packs")
    return driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    folder = Path(os.environ.get("TIV_UI_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)

    def take(driver: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        driver.save_screenshot(str(path))
        assert_not_blank(path)
        return path

    return take


def assert_not_blank(path: Path) -> None:
    """A rendered page has text, rules and colour: many distinct colours, not one."""
    from PIL import Image

    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{path.name}: {len(colours)} colours, a blank page"
    most = max(count for count, _ in colours)
    assert most < 0.97 * sum(count for count, _ in colours), f"{path.name} is nearly blank"


def wait_for(driver: Any, css: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def find(driver: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def click_and_wait(driver: Any, element: Any) -> None:
    """Click something that loads a page, and wait until the old page is gone."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = find(driver, "html")
    element.click()
    WebDriverWait(driver, 60).until(ec.staleness_of(old))


def fill(driver: Any, fields: dict[str, str]) -> None:
    for name, text in fields.items():
        element = find(driver, f'[name="{name}"]')
        if element.tag_name == "select":
            from selenium.webdriver.support.ui import Select

            Select(element).select_by_value(text)
        else:
            element.clear()
            element.send_keys(text)


def page_width(driver: Any) -> tuple[int, int]:
    """(the document's width, the window's): equal when nothing scrolls sideways."""
    script = "return [document.documentElement.scrollWidth, window.innerWidth]"
    wide, window = driver.execute_script(script)
    return int(wide), int(window)


# The seed shipment (examples/shipments/seed-electronics.yaml), as a person types it.
SEED_FORM = {
    "id": "SEED-0001",
    "date": "2025-03-14",
    "currency": "USD",
    "mode": "ocean",
    "incoterm": "FOB",
    "origin.country": "CN",
    "origin.port": "CNSZX",
    "destination.country": "US",
    "destination.port": "USLAX",
    "expected_transit_days": "21",
    "invoice.amount": "500000.00",
    "goods[0].description": "Laptop computers",
    "goods[0].hs_code": "847130",
    "goods[0].quantity": "2000",
    "goods[0].weight_kg": "5200",
    "goods[0].value": "500000.00",
    "goods[0].category": "electronics",
    "charges[0].type": "ocean_freight",
    "charges[0].amount": "8000.00",
    "charges[1].type": "origin_charges",
    "charges[1].amount": "650.00",
    "charges[2].type": "destination_charges",
    "charges[2].amount": "420.00",
    "charges[3].type": "demurrage",
    "charges[3].amount": "1500.00",
    "charges[4].type": "detention",
    "charges[4].amount": "300.00",
    "duties_mode": "declared",
    "duties[0].type": "customs_fee",
    "duties[0].amount": "1732.00",
}


# --- pages ----------------------------------------------------------------------------


def test_sign_in_by_keyboard_and_see_the_rules(driver: Any, server: UiServer, shots: Any) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(server.url + "/ui")
    driver.delete_all_cookies()  # signed out, whatever ran before
    driver.get(server.url + "/ui")
    field = wait_for(driver, "#key")
    assert find(driver, 'label[for="key"]').text == "API key"
    shots(driver, "login")
    field.send_keys(KEY_A, Keys.ENTER)  # Enter submits: no mouse needed
    wait_for(driver, "#packs")
    assert driver.current_url.endswith("/ui")
    body = find(driver, "main").text
    assert "standard@1.0.0" in body and "forwarder-all-risks@2.0.0" in body
    assert "blue-harbour" not in body  # another tenant's pack
    assert "locked" in body
    shots(driver, "rules")


def test_a_pack_page_links_each_line_to_the_file_view(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/packs/standard/1.0.0")
    wait_for(driver, "#parameters")
    assert "Institute Cargo Clauses practice" in find(driver, "#parameters + div").text
    shots(driver, "pack")
    link = find(driver, "#parameters + div a.src")
    target = link.text  # policies/standard/1.0.0.yaml:N
    link.click()
    line = target.rsplit(":", 1)[1]
    row = wait_for(driver, f"tr#L{line}")
    assert driver.current_url.endswith(f"#L{line}")
    assert "margin_rate" in row.text
    # The linked line is highlighted (:target), not just scrolled to.
    colour = row.value_of_css_property("background-color")
    assert colour not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)"), colour
    shots(driver, "file")


def test_the_simulator_values_the_seed_shipment(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/simulate")
    wait_for(driver, "form.sim")
    # Every input has a label.
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"
    )
    assert unlabelled == []
    fill(driver, {"pack": "standard", "compare_pack": "acme-marine", **SEED_FORM})
    find(driver, 'button[value="form"]').click()
    tiv = wait_for(driver, '[data-figure="tiv"]')
    # TIV = 500,000.00 + 9,070.00 + 50,907.00 + 1,732.00 = 561,709.00 (the worked example)
    assert tiv.text == "561,709.00 USD"
    results = driver.find_elements("css selector", "section.result")
    assert len(results) == 2  # side by side with acme-marine
    assert "Demurrage is a penalty" in results[0].text
    assert find(driver, "section.result svg.chart").is_displayed()
    shots(driver, "simulator")


def test_a_bad_amount_shows_its_error_next_to_its_field(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/simulate")
    wait_for(driver, "form.sim")
    fill(driver, {"pack": "standard", **SEED_FORM, "charges[1].amount": "6,50x"})
    find(driver, 'button[value="form"]').click()
    error = wait_for(driver, "#f-charges-1-amount-error")
    assert "decimal" in error.text
    field = find(driver, "#f-charges-1-amount")
    assert field.get_attribute("aria-invalid") == "true"
    assert field.get_attribute("aria-describedby") == "f-charges-1-amount-error"
    # Next to it: the error sits in the same field box, right under the input.
    assert error.find_element("xpath", "..") == field.find_element("xpath", "..")
    assert 0 <= error.location["y"] - field.location["y"] < 80
    shots(driver, "simulator-error")


def test_the_diff_page_shows_what_changed(signed_in: Any, server: UiServer, shots: Any) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/diff")
    wait_for(driver, "#f-before")
    fill(driver, {"before": "forwarder-all-risks@1.0.0", "after": "forwarder-all-risks@2.0.0"})
    find(driver, "form.inline button").click()
    wait_for(driver, "table.diff")
    text = find(driver, "main").text
    assert "forwarder-all-risks@1.0.0 → forwarder-all-risks@2.0.0" in text
    assert find(driver, "table.diff a.src").get_attribute("href").split("#")[1].startswith("L")
    shots(driver, "diff")


def test_the_impact_page_shows_the_flips(signed_in: Any, server: UiServer, shots: Any) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/impact")
    wait_for(driver, "#impact-form")
    shots(driver, "impact-form")
    fill(driver, {"before": "standard@1.0.0", "after": "acme-marine@1.0.0"})
    fill(driver, {"count": "200", "seed": "1"})
    find(driver, "#impact-form button.primary").click()
    flips = wait_for(driver, "#flips + table", timeout=120)
    assert "accept → refer" in flips.text
    assert driver.find_elements("css selector", "svg.chart")  # the histograms
    shots(driver, "impact")


def test_a_long_impact_run_shows_progress_and_cancels(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    driver.get(server.url + "/ui/impact")
    wait_for(driver, "#impact-form")
    fill(driver, {"before": "standard@1.0.0", "after": "acme-marine@1.0.0"})
    fill(driver, {"count": "20000", "seed": "2"})
    find(driver, "#impact-form button.primary").click()
    progress = wait_for(driver, "#progress")
    deadline = time.monotonic() + 60
    while int(progress.get_attribute("value") or 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # the page polls and moves the bar on its own
    assert int(progress.get_attribute("value")) > 0
    shots(driver, "impact-progress")
    find(driver, "#cancel").click()
    status = wait_for(driver, "p.notice")
    assert status.text.startswith("Cancelled after")


def test_the_audit_pages_show_a_tampered_record(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    first = server.value_seed()
    second = server.value_seed()
    driver.get(server.url + "/ui/audit")
    assert "Chain verified" in wait_for(driver, "#chain-status").text
    fill(driver, {"shipment": "SEED"})
    click_and_wait(driver, find(driver, "form.inline button"))
    assert "shipment=SEED" in driver.current_url
    assert first in driver.page_source and second in driver.page_source
    driver.get(server.url + f"/ui/audit/{first}")
    assert "identical" in wait_for(driver, "#replay").text
    shots(driver, "record")
    change = "UPDATE records SET body = replace(body, '561709.00', '561000.00') WHERE id = ?"
    tamper(server.audit, change, (second,))
    driver.get(server.url + "/ui/audit")
    assert "Chain broken at record" in wait_for(driver, "#chain-status").text
    shots(driver, "audit")
    driver.get(server.url + f"/ui/audit/{second}")
    banner = wait_for(driver, "#tampered")
    assert "This record does not verify" in banner.text
    assert banner.location["y"] < 300  # at the top of the page, where it cannot be missed
    shots(driver, "record-tampered")


def test_docs_render_offline_from_the_vendored_assets(
    signed_in: Any, server: UiServer, shots: Any
) -> None:
    driver = signed_in
    driver.get(server.url + "/docs")
    title = wait_for(driver, ".swagger-ui .info .title", timeout=60)
    assert "tiv valuation service" in title.text
    shots(driver, "docs")


def test_pages_fit_a_phone(signed_in: Any, server: UiServer, shots: Any) -> None:
    driver = signed_in
    driver.set_window_size(390, 844)
    try:
        for name, path in (
            ("rules", "/ui"),
            ("pack", "/ui/packs/standard/1.0.0"),
            ("simulator", "/ui/simulate?pack=standard&example=0"),
            ("impact", "/ui/impact"),
            ("audit", "/ui/audit"),
            ("file", "/ui/files/policies/standard/1.0.0.yaml#L30"),
            ("diff", "/ui/diff?before=forwarder-all-risks@1.0.0&after=forwarder-all-risks@2.0.0"),
        ):
            driver.get(server.url + path)
            wait_for(driver, "main h1")
            shots(driver, f"phone-{name}")
            wide, window = page_width(driver)
            assert window < 500, f"the window did not narrow: {window} px"
            assert wide <= window + 1, f"{path} is {wide} px wide in a {window} px window"
    finally:
        driver.set_window_size(1280, 800)


def test_the_skip_link_comes_first_for_the_keyboard(signed_in: Any, server: UiServer) -> None:
    driver = signed_in
    from selenium.webdriver.common.keys import Keys

    driver.get(server.url + "/ui/simulate")
    wait_for(driver, "form.sim")
    find(driver, "body").send_keys(Keys.TAB)
    focused = driver.switch_to.active_element
    assert focused.text == "Skip to content"
    focused.send_keys(Keys.ENTER)
    assert driver.current_url.endswith("#main")
