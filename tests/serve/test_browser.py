"""The viewer page in a real browser: Debian's Chromium driven by Playwright.

Uploads a real CT slice (a synthetic one where ../shared/data is absent), waits
for the overlay, moves the opacity slider and checks what the page shows. The
screenshot is kept in build/test-artifacts/ (and docs/images/viewer.png comes
from it).
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from conftest import SHARED_DATA
from PIL import Image
from synthetic import ct_slice, ct_volume, display_slice, write_nifti, write_png

from lungseg.serve.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}/"
    instance.should_exit = True
    thread.join(timeout=10)


def _slice(tmp_path: Path) -> Path:
    real = SHARED_DATA / "finding-lungs-ct" / "2d_images" / "ID_0008_Z_0065.tif"
    if real.exists():
        return real
    return write_png(tmp_path / "synthetic_slice.png", display_slice(ct_slice(256)[0]))


WHITE_AT_EDGE = """([id, edge]) => {
  const c = document.getElementById(id), w = c.width, h = c.height;
  const s = Math.max(10, Math.round(Math.min(w, h) / 18));
  const box = {left: [0, h / 2 - s, 2 * s, 2 * s], right: [w - 2 * s, h / 2 - s, 2 * s, 2 * s],
    top: [w / 2 - s, 0, 2 * s, 2 * s], bottom: [w / 2 - s, h - 2 * s, 2 * s, 2 * s]}[edge];
  const d = c.getContext("2d").getImageData(...box).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) n += d[i] > 240 && d[i + 1] > 240 && d[i + 2] > 240;
  return n;
}"""
"""White pixels of the letter drawn at an edge's centre of a canvas (app.js markSides)."""


def test_upload_a_slice_and_see_the_lungs(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(server)
            # locator waits: the page's Content-Security-Policy forbids evaluating strings
            page.locator("#model").filter(has_text=re.compile(r"^Model")).wait_for()
            page.set_input_files("#file", str(_slice(tmp_path)))
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.locator("#error").is_hidden()
            right = page.locator("#right").inner_text()
            left = page.locator("#left").inner_text()
            assert right and left and not right.startswith("0 ")
            if SHARED_DATA.exists():  # a routine mid-lung slice: no banner
                assert page.locator("#check").is_hidden()
            # the page reads the labels as the mask PNG stores them, and draws them in the
            # server's colours (GET /api/v1/colours)
            counts = page.evaluate(
                "(() => { const c = {}; for (const v of frames[0].mask) c[v] = (c[v] || 0) + 1;"
                " return c; })()"
            )
            sent = np.array(
                Image.open(io.BytesIO(base64.b64decode(page.evaluate("result.mask_png"))))
            )
            assert {int(k): v for k, v in counts.items()} == {
                int(k): int(v) for k, v in zip(*np.unique(sent, return_counts=True), strict=True)
            }
            right = page.evaluate(
                "getComputedStyle(document.documentElement).getPropertyValue('--right')"
            )
            assert right.strip() == "rgb(230, 75, 60)"
            # R and L at the image's edges, where the patient's right and left lie: white
            # letters drawn at the edge sideEdges names for R, on both pictures
            edges = page.evaluate("sideEdges(frames[0])")
            assert {edges["R"], edges["L"]} in ({"left", "right"}, {"top", "bottom"})
            for canvas in ("original", "overlay"):
                white = page.evaluate(WHITE_AT_EDGE, [canvas, edges["R"]])
                assert white > 5, (canvas, edges)
            # a photo mirrored, or turned a quarter, has its letters where its lungs lie
            flipped = page.evaluate(
                "sideEdges({width: 4, height: 2, mask: Uint8Array.from([2, 2, 0, 1, 2, 2, 0, 1])})"
            )
            assert flipped == {"R": "right", "L": "left"}
            turned = page.evaluate(
                "sideEdges({width: 2, height: 4, mask: Uint8Array.from([1, 1, 0, 0, 0, 0, 2, 2])})"
            )
            assert turned == {"R": "top", "L": "bottom"}
            before = page.evaluate("document.getElementById('overlay').toDataURL()")
            page.eval_on_selector(
                "#opacity", "el => { el.value = '90'; el.dispatchEvent(new Event('input')); }"
            )
            after = page.evaluate("document.getElementById('overlay').toDataURL()")
            assert before != after  # the slider changed the drawing
            assert page.locator("#download-mask").get_attribute("href").startswith("data:image/png")
            notes = page.locator("#notes li").all_inner_texts()  # how the file was read
            assert notes and all(notes), notes
            with page.expect_download() as download:
                page.click("#download-numbers")
            assert download.value.suggested_filename.endswith("_numbers.json")
            numbers = json.loads(Path(download.value.path()).read_text())
            assert numbers["lung"]["total"] > 0 and "mask_png" not in numbers  # numbers only
            assert page.locator("#download-infection").is_visible()  # the infection mask
            icon = page.locator("link[rel=icon]").get_attribute("href")
            assert icon and page.request.get(server + icon.lstrip("/")).ok
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)

            covid = SHARED_DATA / "medseg-covid-98" / "images" / "medseg_078.png"
            if covid.exists():  # a COVID-19 slice: infection drawn and involvement shown
                page.set_input_files("#file", str(covid))
                page.locator("#status").filter(has_text=re.compile(r"^medseg_078\.png: ")).wait_for(
                    timeout=30_000
                )
                assert "%" in page.locator("#involvement").inner_text()
                assert page.locator("#findings-head").inner_text() == "COVID-19 findings"
                assert "not a diagnosis" in page.locator("#findings-note").inner_text()
                page.screenshot(path=str(ARTIFACTS / "viewer_covid.png"), full_page=True)

            volume, _ = ct_volume(slices=6, size=96, lung_free=1)
            scan = write_nifti(tmp_path / "scan.nii.gz", volume)
            page.evaluate(  # every text the status line shows during the upload
                """() => { window.statuses = [];
                new MutationObserver(() => window.statuses.push(
                    document.getElementById('status').textContent))
                .observe(document.getElementById('status'), {childList: true, subtree: true,
                    characterData: true}); }"""
            )
            page.set_input_files("#file", str(scan))
            page.locator("#file:disabled").wait_for(state="attached", timeout=5_000)  # busy
            assert page.locator("#result").is_hidden()  # not the previous slice's result
            page.locator("#status").filter(has_text=re.compile(r"^scan\.nii\.gz: ")).wait_for(
                timeout=30_000
            )
            assert page.locator("#file").is_enabled()
            statuses = page.evaluate("window.statuses")
            assert any(re.match(r"^Uploading scan\.nii\.gz… \d+ %$", t) for t in statuses), statuses
            assert any(re.match(r"^Segmenting scan\.nii\.gz… \d+ s$", t) for t in statuses), (
                statuses
            )
            assert page.locator("#slice-control").is_visible()
            # a phantom's lungs are no adult's: the answer says to review it, and why
            banner = page.locator("#check")
            assert banner.is_visible()
            assert banner.inner_text().startswith("Review this answer before using it:")
            assert banner.locator("li").count() >= 1
            middle = int(page.locator("#slice").input_value())
            # numbered head to feet (the slider's left end is the head), with z in mm
            label = page.locator("#slice-number").inner_text()
            assert re.match(rf"^{middle + 1} / 6 · z -?\d+\.\d mm", label), label
            # and the lung area of the slice on screen (issue 32), as the answer gives it
            place = page.evaluate(f"result.lung.per_slice[{5 - middle}]")  # slider: head first
            shown = re.search(r"lungs (\S+) cm² \(right (\S+), left (\S+)\)", label)
            assert shown, label
            for text, name in zip(shown.groups(), ("total", "right", "left"), strict=True):
                assert abs(float(text) - place[name] / 100) <= 0.05 + 1e-9, (name, label, place)
            page.keyboard.press("PageUp")  # PACS-like: PageUp and the wheel up go headwards
            assert int(page.locator("#slice").input_value()) == middle - 1
            assert page.locator("#slice-number").inner_text().startswith(f"{middle} / 6")
            page.hover("#overlay")
            page.mouse.wheel(0, 100)  # down: towards the feet
            page.wait_for_timeout(100)
            assert int(page.locator("#slice").input_value()) == middle
            # a scan's findings: involved mL and the thirds of each lung
            assert " mL" in page.locator("#involved-ml").inner_text()
            assert page.locator("#zones").inner_text().count(" / ") == 4
            # window presets: the mediastinal window draws the same slice differently
            assert page.locator("#window-control").is_visible()
            lung_window = page.evaluate("document.getElementById('original').toDataURL()")
            page.check("input[name=window][value=mediastinal]")
            assert page.evaluate("document.getElementById('original').toDataURL()") != lung_window
            # zoom: the pictures grow inside their frames, which then scroll
            fitted = page.locator("#original").bounding_box()["width"]
            page.select_option("#zoom", "2")
            assert page.locator("#original").bounding_box()["width"] == pytest.approx(
                2 * fitted, rel=0.02
            )
            assert page.evaluate(
                "document.querySelector('.view').scrollWidth > "
                "document.querySelector('.view').clientWidth"
            )
            assert page.locator("#download-overlay").is_hidden()  # no stale slice overlay
            assert page.locator("#download-infection").is_hidden()  # no stale slice mask
            assert page.locator("#download-mask").get_attribute("download") == "scan_mask.nii.gz"

            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#error:not([hidden])", timeout=10_000)
            error = page.locator("#error").inner_text()
            assert error.count("notes.png") == 1, error  # named once, not twice
            assert page.locator("#result").is_hidden()  # the scan's result is gone
        finally:
            browser.close()


def test_the_page_works_on_a_phone(server: str, tmp_path: Path) -> None:
    """At 375 px wide: nothing sticks out sideways, every control is a touch target of
    at least 24 x 24 px, and the slice slider is long enough to use."""
    from playwright.sync_api import sync_playwright

    volume, _ = ct_volume(slices=6, size=96, lung_free=1)
    scan = write_nifti(tmp_path / "scan.nii.gz", volume)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(
                viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True
            )
            page.goto(server)
            page.set_input_files("#file", str(scan))
            page.locator("#status").filter(has_text=re.compile(r"^scan\.nii\.gz: ")).wait_for(
                timeout=30_000
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            controls = page.locator(
                ".controls label:visible, .controls select:visible, #slice:visible, .button:visible"
            )
            assert controls.count() >= 10
            for index in range(controls.count()):
                box = controls.nth(index).bounding_box()
                name = controls.nth(index).inner_text() or controls.nth(index).get_attribute("id")
                assert box and box["width"] >= 24 and box["height"] >= 24, (name, box)
            slider = page.locator("#slice").bounding_box()
            assert slider and slider["width"] >= 250, slider
            # the slider stays next to the pictures it moves (issue 32): on screen while
            # either picture is, below it
            for picture in ("#original", "#overlay"):
                page.locator(picture).scroll_into_view_if_needed()
                page.wait_for_timeout(100)
                box = page.locator("#slice").bounding_box()
                seen = page.locator(picture).bounding_box()
                assert box and seen and box["y"] >= 0 and box["y"] + box["height"] <= 740, box
                assert box["y"] >= seen["y"], (picture, box, seen)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "viewer_phone.png"), full_page=True)
        finally:
            browser.close()


def test_the_api_reference_shows_every_operation(server: str) -> None:
    """Issue 32: /docs renders the OpenAPI 3.1 document the server emits (a Swagger UI
    that reads 3.1, served by this server: offline), operations and answers listed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(server + "docs")
            page.locator(".opblock").first.wait_for(timeout=30_000)
            assert "Unable to render" not in page.content()
            shown = page.locator(".opblock-summary-path").all_inner_texts()
            for path in ("/api/v1/segment", "/api/v1/segment-volume", "/healthz"):
                assert any(text.replace("\u200b", "") == path for text in shown), shown
            assert all(url.startswith(server) for url in requests), requests  # no CDN
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "api_reference.png"), full_page=False)
        finally:
            browser.close()
