"""Real headless Chromium for the report's tests (Debian's chromium + chromium-driver, driven by selenium):
a browser with no network, loading a page and waiting until its script has built it, and the waits that
end as soon as their condition holds (never a sleep). Skipped (with the reason) where the browser is
missing, unless SEPCONV_REQUIRE_BROWSER=1 (CI): then a missing browser is a failure."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "reports" / "artifacts"
WAIT_S = 30  # generous for a loaded CI machine: every wait has a condition and ends as soon as it holds


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@contextlib.contextmanager
def chromium(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium window of width x height CSS pixels, offline."""
    if reason := _missing():
        if os.environ.get("SEPCONV_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SEPCONV_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # Offline: the page must not need the network, so the browser gets none.
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                      "downloadThroughput": -1,
                                                                      "uploadThroughput": -1})
        yield browser
    finally:
        browser.quit()


def wait(driver: Any, condition: Callable[[], object]) -> None:
    """Until condition() holds, re-evaluated each poll; an element gone stale mid-poll means a render
    came between lookup and use: poll again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S, poll_frequency=0.05,
                  ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition())


def expect(driver: Any, read: Callable[[], T], expected: T) -> None:
    """Wait until read() gives `expected`, then assert it: on a timeout the assertion shows what it gave."""
    from selenium.common.exceptions import TimeoutException

    with contextlib.suppress(TimeoutException):
        wait(driver, lambda: read() == expected)
    assert read() == expected


def open_page(driver: Any, page: Path) -> None:
    """Load the page and wait until its script has inflated the data and built the page."""
    driver.get(page.as_uri())
    wait(driver, lambda: driver.execute_script("return document.body.dataset.ready") in ("1", "error"))
    assert driver.execute_script("return document.body.dataset.ready") == "1"


def console_problems(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    return path
