"""Headless Chromium for the WebGL case viewer: WebGL on SwiftShader (the shared `browser` fixture turns the
GPU off, and Cornerstone3D needs WebGL), with the browser console captured."""

import shutil
import tempfile

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import which_or_missing


@pytest.fixture
def webgl_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = which_or_missing("/usr/bin/chromium", "chromium")
    driver_path = which_or_missing("/usr/bin/chromedriver", "chromium-driver")
    profile = tempfile.mkdtemp(prefix="bmdsite-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1500,1100",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def log_in(browser, live_server, user, password):
    browser.get(live_server.url + "/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()
    WebDriverWait(browser, 30).until(lambda b: "/accounts/login/" not in b.current_url)


def wait_for_viewer(browser, timeout=180):
    """Wait for the page's readiness flag (set when the volume and its segments are drawn) or its error."""
    WebDriverWait(browser, timeout).until(lambda b: b.execute_script(
        "const s = window.bmdViewer; return !!s && (s.ready || s.errors.length > 0);"))
    state = browser.execute_script("return window.bmdViewer;")
    assert not state["errors"], (state["errors"], state.get("errorStack"))
    return state


# Pixels of a viewport's canvas: a 2-D copy of what Cornerstone drew (WebGL buffers are not readable after
# compositing), summarised as a hash and the number of coloured (not grey) pixels: CT is drawn in grey, so a
# coloured pixel is the segment overlay.
CANVAS_STATS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
const copy = document.createElement('canvas');
copy.width = canvas.width; copy.height = canvas.height;
const ctx = copy.getContext('2d');
ctx.drawImage(canvas, 0, 0);
const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
let hash = 0, coloured = 0, nonblack = 0;
for (let i = 0; i < data.length; i += 4) {
  const r = data[i], g = data[i + 1], b = data[i + 2];
  hash = (hash * 31 + r * 7 + g * 3 + b) >>> 0;
  if (Math.max(r, g, b) - Math.min(r, g, b) > 40) coloured++;
  if (r + g + b > 30) nonblack++;
}
return {hash, coloured, nonblack, width: copy.width, height: copy.height};
"""


def canvas_stats(browser, selector="#vp-axial"):
    return browser.execute_script(CANVAS_STATS, selector)


def console_errors(browser):
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
