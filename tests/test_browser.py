"""The HTML report in a real headless browser (Debian's chromium + chromium-driver, driven by selenium):
it loads offline from a file:// URL with no console errors, filters and sorts, opens a failing case's
detail with its maps, and runs nothing an injected string carries. Screenshots go to reports/artifacts/.

Skipped (with the reason) where the browser is missing, unless SEPCONV_REQUIRE_BROWSER=1 (CI): then a
missing browser is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import html_report
from tests.test_html_report import XSS, write_run

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "reports" / "artifacts"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    write_run(folder)
    return html_report.write_report(folder / "out")


@pytest.fixture(scope="module")
def driver(page: Path) -> Iterator[Any]:
    if reason := _missing():
        if os.environ.get("SEPCONV_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SEPCONV_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1500,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # Offline: the page must not need the network, so the browser gets none.
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                      "downloadThroughput": -1,
                                                                      "uploadThroughput": -1})
        browser.get(page.as_uri())
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def fresh(driver: Any, page: Path) -> Any:
    """The page reloaded: filters, sort and detail back to their initial state."""
    driver.get(page.as_uri())
    return driver


def _rows(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#results-body tr")


def _screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path


def test_page_loads_offline_with_no_console_errors(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    assert fresh.current_url.startswith("file://")
    assert fresh.find_element(By.ID, "verdict").text.startswith("DOES NOT CONFORM")
    assert len(_rows(fresh)) == 20
    assert fresh.find_element(By.ID, "shown").text == "20 of 20 results"
    assert fresh.execute_script("return performance.getEntriesByType('resource').length") == 0  # fetched nothing
    errors = [entry for entry in fresh.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    _screenshot(fresh, "report-summary.png")


def test_filters_by_status_backend_dtype_and_text(fresh: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(fresh.find_element(By.ID, "filter-status")).select_by_value("@failing")
    statuses = {row.get_attribute("data-status") for row in _rows(fresh)}
    assert statuses == {"fail", "error", "crash", "timeout"}
    Select(fresh.find_element(By.ID, "filter-backend")).select_by_value("impls.mutants:last_channel_dropped")
    assert len(_rows(fresh)) == 3  # every valid case; the error case passes
    Select(fresh.find_element(By.ID, "filter-dtype")).select_by_value("float16")
    [row] = _rows(fresh)
    assert "NCHW_float16" in row.text
    Select(fresh.find_element(By.ID, "filter-status")).select_by_value("")
    Select(fresh.find_element(By.ID, "filter-backend")).select_by_value("")
    Select(fresh.find_element(By.ID, "filter-dtype")).select_by_value("")
    box = fresh.find_element(By.ID, "filter-text")
    box.send_keys("bold")  # a word of a case description
    _wait(fresh, lambda: len(_rows(fresh)) == 5)
    assert all("n2_h7w6" in row.text for row in _rows(fresh))
    box.clear()
    box.send_keys("SIGABRT")  # a word of a message
    _wait(fresh, lambda: [r.get_attribute("data-status") for r in _rows(fresh)] == ["crash"])
    assert fresh.find_element(By.ID, "shown").text == "1 of 20 results"


def _wait(driver: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 5).until(lambda _: condition())


def _column(driver: Any, key: str) -> list[str]:
    script = ("return [...document.querySelectorAll('#results-head th')]"
              ".findIndex(th => th.dataset.column === arguments[0])")
    index = driver.execute_script(script, key)
    return [row.find_elements("css selector", "td")[index].text for row in _rows(driver)]


def test_sorting_by_a_column_both_ways(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    header = fresh.find_element(By.CSS_SELECTOR, "#results-head th[data-column='error']")
    header.click()  # numbers: largest first
    values = [float(v) for v in _column(fresh, "error") if v]
    assert values == sorted(values, reverse=True) and len(values) >= 10
    assert "sorted-desc" in header.get_attribute("class")
    header.click()
    values = [float(v) for v in _column(fresh, "error") if v]
    assert values == sorted(values)
    assert _column(fresh, "error")[-1] == ""  # results without the metric stay last
    case = fresh.find_element(By.CSS_SELECTOR, "#results-head th[data-column='case']")
    case.click()
    ascending = list(dict.fromkeys(text.splitlines()[0] for text in _column(fresh, "case")))
    case.click()
    descending = list(dict.fromkeys(text.splitlines()[0] for text in _column(fresh, "case")))
    assert len(ascending) == 4 and descending == ascending[::-1]  # each case's results together, both ways
    assert ascending[0].startswith("n1_h5w5") and ascending[-1].startswith("n2_h7w6")


def test_a_failing_case_opens_its_detail_with_maps_and_reproducer(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    fresh.find_element(By.ID, "filter-text").send_keys("last_channel_dropped n2_h7w6")
    _wait(fresh, lambda: len(_rows(fresh)) == 1)
    _rows(fresh)[0].click()
    detail = fresh.find_element(By.ID, "detail")
    _wait(fresh, detail.is_displayed)
    assert "FAIL n2_h7w6_c5" in fresh.find_element(By.ID, "detail-title").text
    pattern = fresh.find_element(By.ID, "pattern").text
    assert "output channels: 1 of 6: 5 (the last only)" in pattern and "rows: all 7" in pattern
    assert len(fresh.find_elements(By.CSS_SELECTOR, "#heatmap rect")) == 7 * 6
    channel_bars = fresh.find_elements(By.CSS_SELECTOR, "#profile-C rect")
    assert [float(b.get_attribute("data-value")) > 1 for b in channel_bars] == [False] * 5 + [True]
    assert fresh.find_elements(By.CSS_SELECTOR, "#histogram rect")
    assert len(fresh.find_elements(By.CSS_SELECTOR, "#worst tbody tr")) == 10
    assert fresh.find_element(By.ID, "reproducer").text.startswith("sepconv-conformance run --cases ")
    assert "--id n2_h7w6_c5" in fresh.find_element(By.ID, "reproducer").text
    assert fresh.current_url.endswith("#result-" + _rows(fresh)[0].get_attribute("data-index"))
    _screenshot(fresh, "report-failure-detail.png")
    fresh.find_element(By.ID, "detail-close").click()
    _wait(fresh, lambda: not detail.is_displayed())


def test_injected_markup_shows_as_text_and_runs_nothing(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    assert fresh.execute_script("return typeof window.__xss") == "undefined"
    injected = "return document.querySelectorAll('img, #results-body script, #detail script').length"
    assert fresh.execute_script(injected) == 0
    fresh.find_element(By.ID, "filter-text").send_keys("evil.py n2_h7w6")
    _wait(fresh, lambda: len(_rows(fresh)) == 1)
    row = _rows(fresh)[0]
    assert XSS in row.text  # the case description, as text
    row.click()
    message = fresh.find_element(By.ID, "detail-message")
    _wait(fresh, message.is_displayed)
    assert '</script><script>window.__xss = 2</script><img src=x onerror="window.__xss = 3">' in message.text
    assert fresh.execute_script("return typeof window.__xss") == "undefined"
    assert fresh.execute_script("return document.querySelectorAll('img').length") == 0
    _screenshot(fresh, "report-escaped-strings.png")
