"""Headless Chromium through Selenium, from the distribution's packages.

When ``chromium`` or ``chromedriver`` is missing, the set-up installs the Debian packages
``chromium`` and ``chromium-driver`` with apt-get if it runs as root (as CI does);
elsewhere the test is skipped with a message naming the packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PACKAGES = ("chromium", "chromium-driver")
INSTALL_TIMEOUT_S = 900


def _binaries() -> tuple[str | None, str | None]:
    return shutil.which("chromium"), shutil.which("chromedriver")


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installed first if missing and possible."""
    browser, driver = _binaries()
    if browser and driver:
        return browser, driver
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"needs the Debian packages {' and '.join(PACKAGES)} (not installed; "
                    "the set-up installs them only as root with apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    browser, driver = _binaries()
    if not (browser and driver):
        pytest.fail(f"installed {' '.join(PACKAGES)} but chromium/chromedriver not on PATH")
    return browser, driver


@contextmanager
def headless_chromium(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A Selenium Chrome driver on a headless Chromium with a fresh profile."""
    browser, driver_path = ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kloros-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root otherwise
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
