import shutil
import tempfile

import pytest

from tests.conftest import which_or_missing


def _chromium():
    """Headless Debian Chromium driven through chromedriver (both from apt), with a throw-away profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = which_or_missing("/usr/bin/chromium", "chromium")
    driver_path = which_or_missing("/usr/bin/chromedriver", "chromium-driver")
    profile = tempfile.mkdtemp(prefix="bmdsite-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser():
    yield from _chromium()


@pytest.fixture
def second_browser():
    """Another browser with its own profile, so its own session (two users at once)."""
    yield from _chromium()
