"""The HTML report in a real headless browser (Debian's chromium + chromium-driver, driven by selenium):
it loads offline from a file:// URL with no console errors, filters and sorts, opens a failing case's
detail with its maps, and runs nothing an injected string carries. Screenshots go to reports/artifacts/.
The browser and its waits: tests/browser.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.execution.config import RunConfig
from conformance.execution.session import run_suite
from conformance.reporting import html_report
from tests.browser import chromium, console_problems, expect, open_page, screenshot, wait
from tests.conftest import XSS, write_run

pytestmark = pytest.mark.browser

# report.js rebuilds the table's rows on every filter or sort change (the text filter 150 ms after the
# last key, so renders can still come after a wait's condition first holds): an element handle fetched
# before a render is stale after it. So rows are read in one script, a snapshot of one render, and no
# row handle outlives the call that fetched it.
ROWS = """return [...document.querySelectorAll('#results-body tr')].map((tr) => ({
  index: tr.dataset.index, status: tr.dataset.status, text: tr.innerText,
  cells: [...tr.cells].map((td) => td.innerText), titles: [...tr.cells].map((td) => td.title)}));"""
ROW_CENTRE = """const cell = document.querySelectorAll('#results-body tr')[arguments[0]].cells[0];
cell.scrollIntoView({block: 'center', inline: 'nearest'});
const box = cell.getBoundingClientRect();
return [Math.floor(box.left + box.width / 2), Math.floor(box.top + box.height / 2)];"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    write_run(folder)
    return html_report.write_report(folder / "out")


@pytest.fixture(scope="module")
def driver(page: Path) -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def fresh(driver: Any, page: Path) -> Any:
    """The page reloaded: filters, sort and detail back to their initial state."""
    open_page(driver, page)
    return driver


def _rows(driver: Any) -> list[dict[str, Any]]:
    """The table's rows as one render left them: index, status, text and each cell's text."""
    return list(driver.execute_script(ROWS))


def _click_row(driver: Any, position: int) -> None:
    """A real mouse click on the row at `position`, aimed by viewport coordinates: no row handle to go
    stale, and a render that comes between aiming and clicking puts the same row in the same place."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    x, y = driver.execute_script(ROW_CENTRE, position)
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(x, y).click()
    actions.perform()


def test_page_loads_offline_with_no_console_errors(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    assert fresh.current_url.startswith("file://")
    assert fresh.find_element(By.ID, "verdict").text.startswith("DOES NOT CONFORM")
    assert len(_rows(fresh)) == 20  # built once the data is inflated: no interaction to wait for
    assert fresh.find_element(By.ID, "shown").text == "20 of 20 results"
    assert fresh.execute_script("return performance.getEntriesByType('resource').length") == 0  # fetched nothing
    assert console_problems(fresh) == []
    screenshot(fresh, "report-summary.png")


def test_filters_by_status_backend_dtype_and_text(fresh: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def statuses() -> set[str]:
        return {row["status"] for row in _rows(fresh)}

    Select(fresh.find_element(By.ID, "filter-status")).select_by_value("@failing")
    expect(fresh, statuses, {"fail", "error", "crash", "timeout"})
    backend = Select(fresh.find_element(By.ID, "filter-backend"))
    backend.select_by_value("conformance.impls.mutants:last_channel_dropped")
    expect(fresh, lambda: len(_rows(fresh)), 3)  # every valid case; the error case passes
    # The table shows the part of a spec that tells backends apart; the whole spec is the cell's title.
    assert {(row["cells"][2], row["titles"][2]) for row in _rows(fresh)} == \
        {("mutants:last_channel_dropped", "conformance.impls.mutants:last_channel_dropped")}
    Select(fresh.find_element(By.ID, "filter-dtype")).select_by_value("float16")
    expect(fresh, lambda: ["NCHW_float16" in row["text"] for row in _rows(fresh)], [True])
    Select(fresh.find_element(By.ID, "filter-status")).select_by_value("")
    Select(fresh.find_element(By.ID, "filter-backend")).select_by_value("")
    Select(fresh.find_element(By.ID, "filter-dtype")).select_by_value("")
    expect(fresh, lambda: len(_rows(fresh)), 20)
    box = fresh.find_element(By.ID, "filter-text")
    # Typing renders on the way ("b", "bo", ...): each condition below holds only for the whole word, and
    # a later render of the whole word shows the same rows (more words only narrow the filter).
    box.send_keys("bold")  # a word of a case description
    expect(fresh, lambda: ["n2_h7w6" in row["text"] for row in _rows(fresh)], [True] * 5)
    box.clear()
    box.send_keys("SIGABRT")  # a word of a message
    expect(fresh, lambda: ([row["status"] for row in _rows(fresh)], fresh.find_element(By.ID, "shown").text),
            (["crash"], "1 of 20 results"))


def _column(driver: Any, key: str) -> list[str]:
    """One column's cell texts, from one snapshot of the rows."""
    script = ("return [...document.querySelectorAll('#results-head th')]"
              ".findIndex(th => th.dataset.column === arguments[0])")
    index = driver.execute_script(script, key)
    return [row["cells"][index] for row in _rows(driver)]


def _sort_by(driver: Any, key: str, direction: str) -> None:
    """Click a column's header, and wait for the render that marks it sorted that way: the header's class
    is set in the same script task that rebuilds the rows, so the rows read after it are sorted."""
    from selenium.webdriver.common.by import By

    def header() -> Any:
        return driver.find_element(By.CSS_SELECTOR, f"#results-head th[data-column='{key}']")

    header().click()
    wait(driver, lambda: f"sorted-{direction}" in header().get_attribute("class"))


def _case_groups(driver: Any) -> list[str]:
    """The case column's ids, each run of equal ones once: as long as the case list when every case's
    results are together."""
    return [case for case, _ in itertools.groupby(text.splitlines()[0] for text in _column(driver, "case"))]


def test_clicking_a_failure_group_shows_its_results_and_only_them(fresh: Any, page: Path) -> None:
    from selenium.webdriver.common.by import By

    groups = fresh.execute_script(
        "return [...document.querySelectorAll('tr[data-group]')].map((tr) => [tr.dataset.group, tr.cells[1].innerText,"
        " tr.cells[2].innerText]);")
    assert groups, "no failure groups on the page"
    for number, count, backend in groups:  # every group is listed, and each click shows exactly its members
        fresh.find_element(By.CSS_SELECTOR, f"tr[data-group='{number}']").click()
        expect(fresh, lambda: len(_rows(fresh)), int(count))
        assert {row["titles"][2] for row in _rows(fresh)} == {backend}
    total = sum(int(count) for _, count, _ in groups)
    failing = sum("group" in row for row in html_report.read_embedded(page.read_text(encoding="utf-8"))["rows"])
    assert total == failing  # every failure is in exactly one group


def test_exact_integer_failures_say_so_in_the_error_column(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    fresh.find_element(By.ID, "filter-text").send_keys("last_channel_dropped integers")
    expect(fresh, lambda: [row["cells"][5] for row in _rows(fresh)], ["not exact"])  # limit 0: not "inf"


def test_sorting_by_a_column_both_ways(fresh: Any) -> None:
    def errors() -> list[float]:  # "not exact" and "NaN/Inf" are infinitely off
        return [float("inf") if v in ("not exact", "NaN/Inf") else float(v) for v in _column(fresh, "error") if v]

    _sort_by(fresh, "error", "desc")  # numbers: largest first
    values = errors()
    assert values == sorted(values, reverse=True) and len(values) >= 10 and values[0] == float("inf")
    _sort_by(fresh, "error", "asc")
    values = errors()
    assert values == sorted(values)
    assert _column(fresh, "error")[-1] == ""  # results without the metric stay last
    _sort_by(fresh, "case", "asc")
    ascending = _case_groups(fresh)
    _sort_by(fresh, "case", "desc")
    descending = _case_groups(fresh)
    assert len(ascending) == 4 and descending == ascending[::-1]  # each case's results together, both ways
    assert ascending[0].startswith("n1_h5w5") and ascending[-1].startswith("n2_h7w6")


def test_a_failing_case_opens_its_detail_with_maps_and_reproducer(fresh: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    fresh.find_element(By.ID, "filter-text").send_keys("last_channel_dropped n2_h7w6")
    expect(fresh, lambda: ["last_channel_dropped" in row["text"] and "n2_h7w6" in row["text"]
                            for row in _rows(fresh)], [True])
    _click_row(fresh, 0)
    detail = fresh.find_element(By.ID, "detail")  # the panel stays; its body is rebuilt when a result opens
    wait(fresh, detail.is_displayed)
    assert "FAIL n2_h7w6_c5" in fresh.find_element(By.ID, "detail-title").text
    assert fresh.find_element(By.ID, "relation").text == "Recognized: output channel 5 is constant (0)"
    pattern = fresh.find_element(By.ID, "pattern").text
    assert "output channels: 1 of 6: 5 (the last only)" in pattern and "rows: all 7" in pattern
    assert len(fresh.find_elements(By.CSS_SELECTOR, "#heatmap rect")) == 7 * 6
    def caption() -> str:
        return str(fresh.find_element(By.CSS_SELECTOR, "#heatmap + figcaption").text)

    assert "Over the limit in 1 of 6 channels only" in caption()
    picker = Select(fresh.find_element(By.ID, "heatmap-channel"))
    assert [option.text for option in picker.options] == ["every channel", "output channel 5 (the worst)"]
    picker.select_by_index(1)  # the channel's own map
    expect(fresh, lambda: "in output channel 5 alone" in caption(), True)
    cells = fresh.execute_script("return [...document.querySelectorAll('#heatmap rect')]"
                                 ".map((r) => Number(r.dataset.value))")
    assert len(cells) == 7 * 6 and min(cells) > 1
    channel_bars = fresh.execute_script("return [...document.querySelectorAll('#profile-C rect')]"
                                        ".map((bar) => Number(bar.dataset.value))")
    assert [value > 1 for value in channel_bars] == [False] * 5 + [True]
    assert fresh.find_elements(By.CSS_SELECTOR, "#histogram rect")
    assert len(fresh.find_elements(By.CSS_SELECTOR, "#worst tbody tr")) == 10
    assert fresh.find_element(By.ID, "reproducer").text.startswith("sepconv-conformance run --cases ")
    assert "--id n2_h7w6_c5" in fresh.find_element(By.ID, "reproducer").text
    assert fresh.current_url.endswith("#result-" + _rows(fresh)[0]["index"])
    screenshot(fresh, "report-failure-detail.png")
    fresh.find_element(By.ID, "detail-close").click()
    wait(fresh, lambda: not detail.is_displayed())


def test_injected_markup_shows_as_text_and_runs_nothing(fresh: Any) -> None:
    from selenium.webdriver.common.by import By

    assert fresh.execute_script("return typeof window.__xss") == "undefined"
    injected = "return document.querySelectorAll('img, #results-body script, #detail script').length"
    assert fresh.execute_script(injected) == 0
    fresh.find_element(By.ID, "filter-text").send_keys("evil.py n2_h7w6")
    expect(fresh, lambda: [XSS in row["titles"][1] for row in _rows(fresh)], [True])  # the description, as text
    _click_row(fresh, 0)
    # The detail opens on the hashchange the click causes, a task later: wait for it before looking inside.
    wait(fresh, fresh.find_element(By.ID, "detail").is_displayed)
    message = fresh.find_element(By.ID, "detail-message")
    assert '</script><script>window.__xss = 2</script><img src=x onerror="window.__xss = 3">' in message.text
    assert fresh.execute_script("return typeof window.__xss") == "undefined"
    assert fresh.execute_script("return document.querySelectorAll('img').length") == 0
    screenshot(fresh, "report-escaped-strings.png")


def test_the_table_shows_each_cases_numerics(fresh: Any) -> None:
    """The accumulator each case was judged with, per row (float32 for float16/bfloat16 by default)."""
    dtypes, accumulators = _column(fresh, "dtype"), _column(fresh, "model")
    backends = _column(fresh, "backend")
    judged = {(d, a) for d, a, b in zip(dtypes, accumulators, backends) if b == "numpy" and a}
    assert ("float16", "float32") in judged and ("float32", "float32") in judged
    headers = fresh.execute_script(
        "return [...document.querySelectorAll('#results-head th')].map(th => th.dataset.column)")
    assert {"rms", "ratio", "identical", "model"} <= set(headers)


def test_a_backward_failure_says_which_gradients_are_off(tmp_path: Path, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    (tmp_path / "cases.yaml").write_text(
        "cases:\n  - {input: [2, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME, "
        "mode: backward}\n", encoding="utf-8")
    run_suite(RunConfig(cases=[str(tmp_path / "cases.yaml")], backends=["conformance.impls.backward_zoo:no_batch_sum"],
                        out=str(tmp_path / "out"), reference="oracle", no_isolate=True, quiet=True))
    open_page(driver, tmp_path / "out" / "report.html")  # the module's browser, on another page
    driver.execute_script("location.hash = 'result-0'")
    wait(driver, driver.find_element(By.ID, "detail").is_displayed)
    text = driver.find_element(By.ID, "gradient").text
    assert text.startswith("Gradients off: depthwise_filter_gradient, pointwise_filter_gradient")
    assert "(a filter: indices [H, W, C, M], no spatial maps)" in text or "indices [H, W, K, O]" in text
    assert driver.find_elements(By.CSS_SELECTOR, "#worst tbody tr")  # its worst elements, no heatmap
    assert not driver.find_elements(By.ID, "heatmap")
    assert console_problems(driver) == []
