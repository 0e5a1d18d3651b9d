"""The report at scale, in real Chromium: a run of 97 cases against the NumPy backend and eight mutants
(500+ failures, every one with its error maps) against a baseline. The page stays under 1 MB, builds
with no console errors, and nothing overflows the window at 800, 1400 and 1920 px, the failure's detail
included; each result is one line of the table, its long texts whole in the cell's title."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.reporting import html_report
from tests.browser import chromium, console_problems, open_page, screenshot, wait
from tests.conftest import write_large_run

# Every rendered element whose box ends right of the window, and the page's own horizontal overflow. A table
# as wide as its data (a column per backend) may scroll inside its own .wide box, which must fit.
OVERFLOWING = """const width = document.documentElement.clientWidth;
const found = [];
if (document.documentElement.scrollWidth > width) found.push('page: ' + document.documentElement.scrollWidth);
for (const node of document.querySelectorAll(arguments[0])) {
  if (node.parentElement.closest('.wide')) continue;  // scrolls inside its box (checked as the box)
  const box = node.getBoundingClientRect();
  if (box.width && box.right > width + 0.5) {
    found.push(node.tagName + '#' + node.id + '.' + node.className.baseVal + node.className + ': ' + box.right);
  }
}
return found.slice(0, 10);"""
ROW_HEIGHTS = "return [...document.querySelectorAll('#results-body tr')].map((tr) => tr.offsetHeight);"


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out, baseline = write_large_run(tmp_path_factory.mktemp("large"))
    return html_report.write_report(out, baseline)


def test_a_report_of_500_failures_with_every_map_stays_under_1_mb(large: Path) -> None:
    rows = html_report.read_embedded(large.read_text(encoding="utf-8"))["rows"]
    mapped = [r for r in html_report.load_results(large.parent / "results.json")["results"] if r.get("details")]
    assert len([row for row in rows if row["status"] == "fail"]) >= 500
    assert len(mapped) >= 400 and sum("details" in row for row in rows) == len(mapped)  # none left out
    assert "added" in {row.get("change") for row in rows}  # the baseline column is on the page
    assert large.stat().st_size < 1_000_000


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with chromium() as browser:  # one browser, resized per width
        yield browser


@pytest.mark.browser
@pytest.mark.parametrize("width", [800, 1400, 1920])
def test_nothing_overflows_and_each_result_is_one_line(large: Path, driver: Any, width: int) -> None:
    from selenium.webdriver.common.by import By

    rows = len(html_report.read_embedded(large.read_text(encoding="utf-8"))["rows"])
    driver.set_window_size(width, 900)
    open_page(driver, large)  # afresh at this width
    assert width - 16 <= driver.execute_script("return document.documentElement.clientWidth") <= width
    assert console_problems(driver) == []
    assert driver.find_element(By.ID, "shown").text == f"{rows} of {rows} results"
    assert driver.execute_script(OVERFLOWING, "body *") == []
    heights = driver.execute_script(ROW_HEIGHTS)
    assert len(heights) == rows and statistics.median(heights) < 26 and max(heights) < 30
    clipped = driver.execute_script(
        "const td = document.querySelector('#results-body td.col-message');"
        "return [td.scrollWidth > td.clientWidth, td.title === td.textContent, td.textContent.length];")
    assert clipped[1] and clipped[2] > 20  # a long message, whole in its title
    screenshot(driver, f"report-large-{width}px.png")
    driver.execute_script("location.hash = 'result-0'")  # the worst failure: all its maps
    wait(driver, driver.find_element(By.ID, "detail").is_displayed)
    assert driver.find_elements(By.ID, "heatmap")
    assert driver.execute_script(OVERFLOWING, "#detail *") == []
    screenshot(driver, f"report-large-{width}px-detail.png")


@pytest.mark.browser
def test_the_matrix_shows_each_case_once_grouped_and_opens_a_cell(large: Path, driver: Any) -> None:
    """Nine backends: one row per case not passing everywhere, under its failure group's header row; the
    filter widens to every case; a click on a failing cell opens that result's detail."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    matrix = html_report.read_embedded(large.read_text(encoding="utf-8"))["matrix"]
    failing = [row for row in matrix["rows"] if any(c["status"] != "pass" for c in row["cells"].values())]
    driver.set_window_size(1400, 900)
    open_page(driver, large)
    assert driver.find_element(By.ID, "matrix-shown").text == f"{len(failing)} of {len(matrix['rows'])} cases"
    headers = driver.find_elements(By.CSS_SELECTOR, "#matrix-body tr.matrix-group")
    assert headers and headers[0].text.startswith("#1 ")
    Select(driver.find_element(By.ID, "matrix-show")).select_by_value("")
    wait(driver, lambda: driver.find_element(By.ID, "matrix-shown").text.startswith(f"{len(matrix['rows'])} of"))
    cell = driver.find_element(By.CSS_SELECTOR, "#matrix-body td.status-fail")
    cell.click()
    wait(driver, driver.find_element(By.ID, "detail").is_displayed)
    assert driver.execute_script("return location.hash").startswith("#result-")
    assert console_problems(driver) == []
