"""The live page in a real headless Chromium (Selenium): it loads, a gap written to disk
appears without a reload, and a claim from the command line changes its status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.browser import headless_chromium
from tests.support.consumers import free_port
from tests.support.service import ServiceProcess, append_chaos, failure, write_config

pytestmark = pytest.mark.e2e

WAIT_S = 15.0
SCREENSHOT_ENV = "KLOROS_STREAM_SCREENSHOT"
"""If set, the screenshot is also saved there (how docs/live-page.png was made)."""


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kloros_stream", *args, "--config",
                           str(config)], capture_output=True, text=True, timeout=30,
                          check=False)


def test_the_page_follows_gaps_and_claims_live(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = write_config(tmp_path, {"http": {"port": free_port()},
                                  "monitors": {"chaos": {"history_file":
                                                         "var/chaos_history.jsonl"}}})
    append_chaos(tmp_path, failure("gpu_oom_recovery", "CUDA out of memory"),
                 failure("disk_full", "no space left on device"))
    with ServiceProcess(cfg) as proc, headless_chromium() as browser:
        proc.wait_feed(lambda qs: len(qs) == 2)
        browser.get(f"http://127.0.0.1:{proc.port}/")
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda b: b.find_element(By.ID, "conn").text == "live")
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#questions tr")) == 2)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#monitors tr[data-monitor]"))

        append_chaos(tmp_path, failure("network_partition", "peer unreachable for 30 s"))
        (new,) = [q for q in proc.wait_feed(lambda qs: len(qs) == 3)
                  if q["metadata"]["gap_name"] == "network_partition"]
        row = f'#questions tr[data-id="{new["id"]}"]'
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, row))
        assert browser.find_element(By.CSS_SELECTOR, row).get_attribute("data-status") \
            == "ready"
        assert "network_partition" in browser.find_element(By.CSS_SELECTOR, row).text

        claimed = cli(cfg, "claim", "--consumer", "investigator", "--json")
        assert claimed.returncode == 0, claimed.stderr
        claimed_id = json.loads(claimed.stdout)["id"]
        held = f'#questions tr[data-id="{claimed_id}"]'
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, held)
                   .get_attribute("data-status") == "in_progress")
        assert "held by investigator" in browser.find_element(By.CSS_SELECTOR, held).text
        assert browser.execute_script("return performance.getEntriesByType('navigation')"
                                      ".length") == 1  # never reloaded
        shot = tmp_path / "live-page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 0
        if os.environ.get(SCREENSHOT_ENV):
            Path(os.environ[SCREENSHOT_ENV]).write_bytes(shot.read_bytes())
