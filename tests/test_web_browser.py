"""The technician's page in a real headless Chromium (Debian's chromium and chromedriver, which
`make test` installs), driven by Selenium, on a sorted demo scene with captures on: the latest
frame appears and changes while a sorter runs, the plots render with the figures of
`logs --summary`, three captures are labelled with the keyboard and one undone, and the labels
on disk are what `captures label` writes. Each page's screenshot goes to docs/ (the README
shows them)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.capture_store import LABELS_FILE, delete_capture, folder_files, read_captures, read_labels
from device.cli import main as cli_main
from device.web.server import WebServer
from device.web.sources import Sources
from helpers import colour_scene, run_logs, sort_scene

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 20  # for the page
LIVE_WAIT_S = 120  # for the live sorter to start and write frames (seconds when the machine is not loaded)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing; `make test` installs them")
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1200", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-browser")
    paths = colour_scene(root, rounds=2)  # 7 items, each captured
    status = root / "run" / "status.json"
    records = sort_scene(paths, root / "sort.jsonl", "--status-file", str(status))
    sources = Sources(status_file=status, log_path=root / "sort.jsonl", capture_dir=paths["caps"])
    with WebServer(("127.0.0.1", 0), sources).start() as server:
        yield server, paths, records


def url(server, page: str) -> str:
    return f"http://localhost:{server.server_address[1]}{page}"


def wait(driver, condition, what: str, *, timeout_s: float = WAIT_S):
    """``condition(driver)`` once true; the Now page's facts are replaced every 2 s, so an element
    found a moment ago may be gone: looked for again. On a timeout, what the page showed."""
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition)
    except TimeoutException:
        pytest.fail(f"{what}: not within {timeout_s} s; the page showed:\n{driver.find_element(By.TAG_NAME, 'main').text}")


def text_of(driver, element_id: str) -> str:
    return wait(driver, lambda d: d.find_element(By.ID, element_id).text, f"#{element_id}'s text")


def fetch(address: str) -> bytes:
    with urllib.request.urlopen(address, timeout=5) as answer:
        return answer.read()


def item_boxed(jpeg: bytes) -> bool:
    """Whether the frame has the green box of an accepted item (BGR: green high, red and blue low)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    b, g, r = image[20:, :, 0].astype(int), image[20:, :, 1].astype(int), image[20:, :, 2].astype(int)
    return int(((g > 170) & (r < 110) & (b < 110)).sum()) > 200


def screenshot(driver, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(DOCS / name))


def test_now_shows_the_latest_frame_and_it_changes_while_the_sorter_runs(browser, site, tmp_path):
    server, paths, records = site
    live_config = tmp_path / "live.toml"  # with a ready light, as the person at the bin sees it
    live_config.write_text(paths["config_no_capture"].read_text() + "\n[indicator]\nready_pin = 5\n")
    server.sources.frame_file.unlink()  # the sorted scene's last frame: the live sorter writes the next
    browser.get(url(server, "/now"))
    wait(browser, lambda d: d.find_element(By.ID, "noframe").is_displayed(), "no frame while no sorter runs")
    sorter = subprocess.Popen(  # the same scene played as a live camera would deliver it
        [sys.executable, "-m", "device.cli", "run", "--config", str(live_config), "--realtime",
         "--model", str(paths["model"]), "--source", str(paths["scene"]), "--log", str(tmp_path / "live.jsonl"),
         "--status-file", str(server.sources.status_file)],
        env={**os.environ, "GPIOZERO_PIN_FACTORY": "mock"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        frame = browser.find_element(By.ID, "frame")
        wait(browser, lambda d: frame.get_attribute("naturalWidth") == "320", "the latest frame appears",
             timeout_s=LIVE_WAIT_S)
        assert not browser.find_element(By.ID, "noframe").is_displayed()
        first = int(frame.get_attribute("data-n"))
        seen = set()
        deadline = time.monotonic() + LIVE_WAIT_S
        while len(seen) < 3 and time.monotonic() < deadline:  # the file the page shows changes
            seen.add(fetch(url(server, "/frame.jpg")))
            time.sleep(0.2)
        assert len(seen) >= 3
        wait(browser, lambda d: int(frame.get_attribute("data-n")) >= first + 3, "the page reloads the frame")
        wait(browser, lambda d: d.find_element(By.ID, "fact-state").text.split()[0] in
             ("learning", "empty", "occupied", "settled", "deciding"), "the live sorter's state")
        assert "ready light" in text_of(browser, "fact-ready-light")  # as the person at the bin sees it
        items = wait(browser, lambda d: d.execute_script(  # in one go: the part is replaced every 2 s
            "return [...document.querySelectorAll('#items tr.item')].map(row => row.innerText)"),
            "the last items")
        assert len(items) == len(records) == 7
        newest = records[-1]
        assert items[0].split()[0] == f"#{newest['item']}" and newest["bin"] in items[0]
        picture_deadline = time.monotonic() + WAIT_S  # for the picture: a frame with an item boxed
        while time.monotonic() < picture_deadline and not item_boxed(fetch(url(server, "/frame.jpg"))):
            time.sleep(0.1)
        time.sleep(0.6)  # the page's next reload shows it
        screenshot(browser, "web-now.png")
    finally:
        sorter.send_signal(signal.SIGTERM)
        sorter.wait(20)
    assert sorter.returncode == 0


def test_today_plots_render_with_the_figures_of_logs_summary(browser, site):
    server, paths, records = site
    browser.get(url(server, "/today"))
    plots = browser.find_elements(By.CSS_SELECTOR, "svg.plot")
    assert len(plots) == 2 and all(p.size["width"] > 300 and p.size["height"] > 150 for p in plots)
    bars = plots[0].find_elements(By.CSS_SELECTOR, "rect.bar")
    assert len(bars) == len({r["bin"] for r in records}) == 4  # one hour, stacked by bin
    assert sum(b.size["height"] for b in bars) > 50
    summary = run_logs("--log", str(server.sources.log_path), "--summary")
    assert browser.find_element(By.ID, "summary").text == summary.strip()
    facts = browser.find_element(By.ID, "today-facts").text
    assert "items 7" in facts and "fallback (uncertain) 1 (14.3%)" in facts and "stuck events since the sorter started 0" in facts
    screenshot(browser, "web-today.png")


def test_three_captures_labelled_with_the_keyboard_and_one_undone(browser, site, tmp_path):
    server, paths, _ = site
    caps = paths["caps"]
    browser.get(url(server, "/label"))
    left = browser.find_element(By.ID, "left")
    assert left.text == "7"
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    order = [int(c.get_attribute("data-id")) for c in cards]
    by_id = {c.id: c for c in read_captures(caps)}
    margins = [sorted((p for _, p in by_id[i].record["top3"]), reverse=True) for i in order]
    assert [m[0] - m[1] for m in margins] == sorted(m[0] - m[1] for m in margins)  # biggest doubt first
    assert all(img.get_attribute("naturalWidth") == "512" for img in cards[0].find_elements(By.TAG_NAME, "img"))
    screenshot(browser, "web-label.png")
    body = browser.find_element(By.TAG_NAME, "body")
    given = {}
    for n, key in enumerate("123"):  # the highlighted capture gets the class of the key
        current = browser.find_element(By.CSS_SELECTOR, ".card.current")
        capture_id = int(current.get_attribute("data-id"))
        given[capture_id] = by_id[capture_id].classes[int(key) - 1]
        body.send_keys(key)
        wait(browser, lambda d: left.text == str(6 - n), f"label {n + 1} is written")
    body.send_keys("u")
    wait(browser, lambda d: left.text == "5", "the undo is written")
    undone = list(given)[-1]
    assert "undone" in browser.find_element(By.ID, "message").text
    assert browser.find_element(By.CSS_SELECTOR, ".card.current").get_attribute("data-id") == str(undone)
    del given[undone]

    # the labels on disk are what `captures label` writes
    copy = tmp_path / "caps"
    shutil.copytree(caps, copy)
    (copy / LABELS_FILE).unlink()
    for capture_id, name in given.items():
        assert cli_main(["captures", "label", "--dir", str(copy), str(capture_id), name]) == 0
    assert (caps / LABELS_FILE).read_bytes() == (copy / LABELS_FILE).read_bytes()
    assert cli_main(["captures", "export", "--dir", str(caps), "--out", str(tmp_path / "export")]) == 0
    assert sorted(p.name for p in (tmp_path / "export").iterdir() if p.is_dir()) == sorted(set(given.values()))

    # a capture the quota deletes while the page is open is a plain message
    current = int(browser.find_element(By.CSS_SELECTOR, ".card.current").get_attribute("data-id"))
    delete_capture(caps, current, folder_files(caps)[current])
    body.send_keys("1")
    wait(browser, lambda d: "no longer in the folder" in d.find_element(By.ID, "message").text,
         "the deleted capture is a message")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Label captures"
    assert current not in read_labels(caps)
