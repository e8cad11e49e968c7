"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through chromedriver.

Every page at phone width (390 px) and desktop width (1280 px): it renders, its charts drew (a canvas with
non-blank pixels), the browser logged no error, and no request left the machine. A reading published on the
bus changes its tile without a reload. Screenshots go to ``tests/.artifacts/api/`` (path printed) for a person.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest

from bus.envelope import encode_reading
from tests.api.conftest import HOUSE, local_ms
from tests.api.conftest import DAYS as _DAYS

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "api"
PAGES = [  # (name, path, canvases expected)
    ("overview", "/?date=2024-03-31", 1),
    ("history", "/history?span=week&date=2024-03-31", 1),
    ("meters", "/meters?serial=kili&day=2024-03-31", 1),
    ("processes", "/processes", 0),
]

if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
    pytest.skip("Debian's chromium and chromium-driver are not installed (./run test installs them)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-features=Translate,OptimizationHints,MediaRouter", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, url: str, width: int) -> None:
    driver.set_window_size(width, 900)
    driver.get(url)
    deadline = time.monotonic() + 20
    while driver.execute_script("return document.body.dataset.ready") != "1":
        assert time.monotonic() < deadline, f"{url} never finished loading: {driver.get_log('browser')}"
        time.sleep(0.1)
    time.sleep(0.3)  # uPlot draws on the next animation frame


def inked_canvases(driver) -> list[int]:
    """Per canvas: how many pixels are neither transparent nor white (a drawn chart has thousands)."""
    return driver.execute_script("""
        return [...document.querySelectorAll('canvas')].map(c => {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 0; i < d.length; i += 4) if (d[i+3] > 0 && (d[i] < 240 || d[i+1] < 240 || d[i+2] < 240)) n++;
          return n;
        });""")


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


@pytest.mark.parametrize("width", [390, 1280])
@pytest.mark.parametrize(("name", "path", "charts"), PAGES)
def test_every_page_renders_with_charts_no_errors_and_nothing_external(stack, browser, name, path, charts, width):
    browser.get_log("browser")
    browser.get_log("performance")
    open_page(browser, stack.base + path, width)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}-{width}.png"
    png = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    shot.write_bytes(base64.b64decode(png["data"]))
    print(f"screenshot: {shot}")
    inked = inked_canvases(browser)
    assert len(inked) >= charts and all(n > 500 for n in inked[:charts]), inked
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    outside = [u for u in requested_urls(browser) if not u.startswith((stack.base, "data:"))]
    assert not outside, outside
    # phone width: nothing wider than the screen
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width + 1


def test_a_tile_changes_when_a_reading_is_published(stack, browser):
    open_page(browser, stack.base + "/?date=2024-03-31", 1280)
    tile = f'[data-device="hhpc/{HOUSE}"] .value'
    before = browser.find_element("css selector", tile).text
    c = stack.collector()
    ts = local_ms(_DAYS[-1]) + 2 * 86_400_000  # newer than anything replayed
    c.publish(f"hhpc/{HOUSE}/reading", encode_reading("hhpc", HOUSE, ts, {"power_w": 4321.0}))
    c.close()
    deadline = time.monotonic() + 10
    while (now := browser.find_element("css selector", tile).text) != "4.32 kW":
        assert time.monotonic() < deadline, f"tile still shows {now!r} (was {before!r})"
        time.sleep(0.1)
    assert before != now
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
