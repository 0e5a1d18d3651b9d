"""Regenerate the screenshots of docs/diagnosis.md from a run's report:

    python docs/diagnosis/screenshots.py RUN_DIR

RUN_DIR is the --out of `sepconv-conformance run --backend ./bugs.py:conv -n 2` (bugs.py as in
docs/diagnosis.md). Needs chromium, chromium-driver and selenium (pip install -e '.[test]'); writes the
PNGs next to this script."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.browser import chromium, open_page, wait  # noqa: E402

FIRST_ROW = "location.hash = 'result-' + document.querySelector('#results-body tr').dataset.index"
GROUP_OF = "return [...document.querySelectorAll('tr[data-group]')].find((tr) => tr.innerText.includes(arguments[0]))"


def main(run: Path) -> None:
    page = run / "report.html"
    with chromium(1400, 900) as driver:
        open_page(driver, page)
        driver.execute_script("document.getElementById('patterns').scrollIntoView()")
        driver.save_screenshot(str(HERE / "1-failure-groups.png"))
        for group, name in (("padding on the wrong sides", "2-padding"), ("constant channels", "3-last-channel")):
            open_page(driver, page)
            driver.execute_script("arguments[0].click()", driver.execute_script(GROUP_OF, group))
            driver.save_screenshot(str(HERE / f"{name}-group.png"))
            driver.execute_script(FIRST_ROW)
            wait(driver, lambda: driver.execute_script("return !document.getElementById('detail').hidden"))
            driver.save_screenshot(str(HERE / f"{name}-detail.png"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
