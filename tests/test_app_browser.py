"""``emvos app`` end to end in a real headless Chromium: draw on frame 0, propagate, review, export.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package; the test is
skipped, saying which is missing, without them. The screenshots are saved in the test's temporary
folder and their paths printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("flask", reason="emvos app needs Flask: pip install 'emvos[app]'")
# ruff: noqa: E402 - the imports below need Flask

from _app_support import FRAMES, H, W, make_session, tiny_loader, write_checkpoint, write_video
from emvos.app.server import serve
from emvos.app.session import AppSession
from emvos.io import DAVIS_PALETTE

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,860")


def _wait(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something other than ``None`` / ``False``, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by Selenium, or a skip that says what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="the browser test needs selenium: pip install selenium")
    from selenium.webdriver.chrome.service import Service

    binary = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        missing = " and ".join(name for name, path in (("chromium", binary), ("chromedriver", driver_path)) if not path)
        pytest.skip(f"the browser test needs {missing}: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path, prefix='chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[tuple[str, AppSession]]:
    """The app serving a 6-frame 64x48 mp4 with a tiny checkpoint on a free localhost port."""
    root = tmp_path / "root"
    root.mkdir()
    write_video(root / "clip.mp4")
    session = make_session(root, tmp_path / "workspace", tiny_loader(write_checkpoint(tmp_path / "tiny.pt")))
    session.open_video(root / "clip.mp4", name="clip", source=str(root / "clip.mp4"))
    assert session.jobs.wait(60) and session.jobs.status().state == "done"
    server = serve(session, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", session
    finally:
        server.shutdown()
        thread.join(10)


def test_draw_propagate_review_and_export_in_a_browser(browser: Any, app_url: tuple[str, AppSession],
                                                        tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, session = app_url
    workspace = session.workspace
    browser.get(url)
    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    _wait(lambda: by_id("frameLabel").text == f"frame 0 / {FRAMES - 1}", "the video on the page")
    _wait(lambda: by_id("sourceBadge").text == "no mask", "frame 0 to load")

    canvas = by_id("cursor")
    rect = canvas.rect

    def at(x: float, y: float) -> tuple[int, int]:
        """Offset from the canvas centre (Selenium's origin) of image pixel (x, y)."""
        return round((x / W - 0.5) * rect["width"]), round((y / H - 0.5) * rect["height"])

    # Object 1: brush strokes 6 pixels wide (keys ]]]) over the yellow square (rows 12-32, columns 8-28).
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("]]]")
    assert by_id("sizeValue").text == "6"
    actions = ActionChains(browser)
    actions.move_to_element_with_offset(canvas, *at(11, 15)).click_and_hold()
    for x, y in [(25, 15), (25, 20), (11, 20), (11, 25), (25, 25), (25, 29), (11, 29)]:
        actions.move_to_element_with_offset(canvas, *at(x, y))
    actions.release().perform()
    # Object 2 (key N): a polygon in the lower right, closed with Enter.
    body.send_keys("n")
    body.send_keys("p")
    actions = ActionChains(browser)
    for x, y in [(40, 36), (60, 36), (60, 46), (40, 46)]:
        actions.move_to_element_with_offset(canvas, *at(x, y)).click()
    actions.perform()
    body.send_keys(Keys.ENTER)
    # Object 3 (key N): the fill tool (key F) floods the background around the drawings; undo it (Ctrl+Z).
    body.send_keys("n")
    body.send_keys("f")
    ActionChains(browser).move_to_element_with_offset(canvas, *at(2, 2)).click().perform()
    _wait(lambda: (labels := workspace.read_annotation(0)) is not None and (labels[:10] == 3).all(), "the fill")
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()

    def saved_annotation() -> np.ndarray | None:
        labels = workspace.read_annotation(0)
        return labels if labels is not None and 2 in labels and 3 not in labels else None

    labels = _wait(saved_annotation, "the annotation of frame 0 to be saved")
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    assert (labels[12:33, 8:29] == 1).mean() > 0.8 and (labels[:10] == 0).all()
    assert (labels[38:45, 42:59] == 2).all() and (labels[:, :36] != 2).all()
    assert workspace.annotated() == [0]
    _wait(lambda: by_id("sourceBadge").text == "annotated", "the annotated badge")
    screenshot_drawn = tmp_path / "emvos-app-drawn.png"
    browser.save_screenshot(str(screenshot_drawn))

    by_id("forwardButton").click()
    _wait(lambda: session.jobs.status().id >= 2 and session.jobs.status().state != "running", "propagation")
    job = session.jobs.status()
    assert job.kind == "propagate" and job.state == "done", job
    assert workspace.results() == list(range(FRAMES))
    _wait(lambda: by_id("forwardButton").is_enabled(), "the page to see the job end")

    for _ in range(3):
        body.send_keys(Keys.ARROW_RIGHT)
    _wait(lambda: by_id("frameLabel").text == f"frame 3 / {FRAMES - 1}", "frame 3")
    _wait(lambda: by_id("sourceBadge").text == "propagated", "the propagated mask of frame 3")

    # Review: object 1 is lost at frame 4 (results written as a propagation does); the reloaded page lists
    # the flag, and a click on it shows frame 4.
    sure = np.full((2, H, W), 230, np.uint8)
    workspace.write_result(3, np.pad(np.ones((20, 20), np.uint8), ((10, H - 30), (10, W - 30))), (1, 2), sure)
    workspace.write_result(4, np.zeros((H, W), np.uint8), (1, 2), sure)
    browser.refresh()
    flag = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#reviewList button[data-frame='4']") or None,
                 "the review list")
    assert flag[0].text == "frame 4 · object 1: lost"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#reviewList li")) == len(session.review())
    flag[0].click()
    _wait(lambda: by_id("frameLabel").text == f"frame 4 / {FRAMES - 1}", "the flagged frame")

    browser.find_element(By.CSS_SELECTOR, "#exportFormats input[value='soft']").click()
    by_id("exportButton").click()
    link = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#exportList a[href$='clip.zip']") or None,
                 "the export links")
    assert link[0].text.endswith("clip.zip")
    screenshot = tmp_path / "emvos-app.png"
    browser.save_screenshot(str(screenshot))
    print(f"\nscreenshots: {screenshot_drawn} {screenshot}")

    pngs = sorted((workspace.exports_dir / "Annotations" / "clip").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(FRAMES)]
    for png in pngs:
        image = Image.open(png)
        assert image.mode == "P" and image.size == (W, H) and image.getpalette() == DAVIS_PALETTE
        assert set(np.unique(np.asarray(image)).tolist()) <= {0, 1, 2}
    assert np.array_equal(np.asarray(Image.open(pngs[0])), labels)
    with zipfile.ZipFile(workspace.exports_dir / "clip.zip") as archive:
        masks_and_movie = [n for n in archive.namelist() if not n.startswith(("binary/", "soft/", "coco/", "yolo/"))]
        assert len(masks_and_movie) == FRAMES + 1 and "clip.mp4" in masks_and_movie
        assert "soft/1/00000.png" in archive.namelist() and "npz/00000.npz" not in archive.namelist()
    assert Image.open(screenshot).size[0] > 0
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


def test_box_and_click_tools_in_a_browser(browser: Any, app_url: tuple[str, AppSession]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, session = app_url
    browser.get(url)
    _wait(lambda: browser.find_element(By.ID, "sourceBadge").text == "no mask", "frame 0 to load")
    canvas = browser.find_element(By.ID, "cursor")
    rect = canvas.rect

    def at(x: float, y: float) -> tuple[int, int]:
        return round((x / W - 0.5) * rect["width"]), round((y / H - 0.5) * rect["height"])

    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("x")  # the Box tool: drag a box around the yellow square (rows 12-32, columns 8-28)
    ActionChains(browser).move_to_element_with_offset(canvas, *at(5, 9)).click_and_hold() \
        .move_to_element_with_offset(canvas, *at(31, 35)).release().perform()

    def boxed() -> np.ndarray | None:
        labels = session.workspace.read_annotation(0)
        return labels if labels is not None and (labels == 1).any() else None

    labels = _wait(boxed, "the box's mask to be saved")
    assert (labels[12:33, 8:29] == 1).mean() > 0.8 and not labels[:, 33:].any()
    body.send_keys("c")  # the Click tool: Shift+click marks background inside the object's mask
    ActionChains(browser).key_down(Keys.SHIFT).move_to_element_with_offset(canvas, *at(18, 22)).click() \
        .key_up(Keys.SHIFT).perform()
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
