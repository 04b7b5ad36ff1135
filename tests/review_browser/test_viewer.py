"""The viewer in Chromium: a 16-bit DICOM case drawn from raw pixels with window/level in the
page (presets, right-drag), pan and zoom that persist to the next case, a segmentation case
whose mask is painted and saved, a missed finding added with the box tool, and the worklist
keys and filters."""

from __future__ import annotations

import contextlib
import io
import json
import time
import zipfile

import numpy as np
from PIL import Image as PILImage

from tests.review_browser.conftest import api_client, new_page, sign_in, upload, wait_first_image
from tests.review_browser.images import blob_png, ct_dicom, multiframe_dicom
from tests.review_browser.pages import (
    canvas_grey,
    canvas_png,
    drag,
    is_action,
    key,
    open_case,
    to_screen,
    view_transform,
)


def window_label(page) -> str:
    return page.locator("#window-label").inner_text().split("right-drag")[0].strip()


def test_dicom_window_level_and_view_persistence(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        dicom = upload(client, "bright-x", ct_dicom(512), "ct.dcm")
        photo = upload(client, "boxes-x", blob_png(640, 5), "photo.png")
    assert dicom["image"]["dicom"] and dicom["image"]["dtype"] in ("uint16", "int16")
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        with page.expect_response(lambda r: "/pixels" in r.url) as pixels:
            open_case(page, dicom["id"])
        assert pixels.value.headers["x-dtype"] == dicom["image"]["dtype"]
        assert int(pixels.value.headers["x-width"]) == 512
        wait_first_image(page)
        assert window_label(page) == "C 40 · W 400"
        # Window/level done in the page, checked on the drawn pixels (phantom: air -1000 HU,
        # body 40 HU with noise sd 10, bone 900 HU): C 40 / W 400 maps 40 HU to mid-grey.
        # Masks and boxes off (keys m, o) so that only the image is on the canvas.
        page.wait_for_selector(".mask[data-mask='bright']")
        key(page, "m")
        key(page, "o")
        page.wait_for_timeout(200)
        assert canvas_grey(page, 8, 8) == 0
        assert abs(canvas_grey(page, 256, 400) - 128) <= 25
        assert canvas_grey(page, 0.35 * 512, 0.4 * 512) == 255
        soft = canvas_png(page)
        shot(page, "1-soft-tissue")

        page.click("button[data-cmd=preset]:text-is('lung')")
        assert window_label(page) == "C -600 · W 1500"
        lung_air = round((-1000 + 600 + 750) / 1500 * 255)
        _redrawn(page, lambda: abs(canvas_grey(page, 8, 8) - lung_air) <= 8)  # label first, then
        assert abs(canvas_grey(page, 8, 8) - lung_air) <= 8  # the canvas on the next frame
        assert canvas_png(page) != soft, "the lung window drew the same picture"
        key(page, "1")  # the first preset again
        assert window_label(page) == "C 40 · W 400"

        centre = to_screen(page, 256, 256)
        drag(page, centre, (centre[0] + 120, centre[1] + 60), button="right")
        moved = window_label(page)
        assert moved != "C 40 · W 400", "right-drag left window/level unchanged"
        shot(page, "2-right-drag")

        # Zoom with the wheel, pan with a drag: both survive the move to another case.
        page.mouse.move(*centre)
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(200)
        drag(page, to_screen(page, 100, 400), to_screen(page, 150, 420))
        zoomed = view_transform(page)
        assert zoomed["rel"] > 1.5
        saved = json.loads(page.evaluate("localStorage.getItem('review.view')"))
        page.goto(f"/review/#/case/{photo['id']}")
        page.wait_for_selector(f"#panel h2:text-is('Case {photo['id']}')")
        page.reload()
        page.wait_for_selector(f"#panel h2:text-is('Case {photo['id']}')")
        wait_first_image(page)
        again = json.loads(page.evaluate("localStorage.getItem('review.view')"))
        assert again == saved
        assert view_transform(page)["rel"] == zoomed["rel"]
        assert page.locator("#open-ohif").count() == 0, "no PACS configured: no OHIF link"
        shot(page, "3-zoom-kept")
        key(page, "0")
        _redrawn(page, lambda: view_transform(page)["rel"] == 1)  # data-view is set when drawn
        assert view_transform(page)["rel"] == 1
        assert page.errors == [], page.errors
    finally:
        page.context.close()


def mask_pixels(client, case_id: int, label: str) -> np.ndarray:
    answer = client.get(f"/review/api/cases/{case_id}/masks/{label}.png")
    assert answer.status_code == 200, answer.text
    return np.asarray(PILImage.open(io.BytesIO(answer.content))) > 127


def test_paint_a_mask_and_add_a_missed_finding(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        case = upload(client, "bright-x", blob_png(320, 9), "tile.png")
        before = mask_pixels(client, case["id"], "bright")
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        open_case(page, case["id"])
        wait_first_image(page)
        page.wait_for_selector(".mask[data-mask='bright']")
        key(page, "p")
        page.wait_for_selector("#mode-badge:text('Paint')")
        drag(page, to_screen(page, 20, 280), to_screen(page, 120, 280))
        page.wait_for_selector("#btn-save-mask:not([disabled])")
        with page.expect_response(is_action("paint")) as saved:
            page.click("#btn-save-mask")
        assert saved.value.status == 200, saved.value.text()
        masks = {m["label"]: m["origin"] for m in saved.value.json()["masks"]}
        assert masks.get("bright") == "human"
        page.wait_for_selector(".mask[data-mask='bright'] .origin:text-is('human')")
        assert page.locator(".mask[data-mask='bright']").count() == 1
        key(page, "Escape")

        key(page, "b")
        page.wait_for_selector("#mode-badge:text('Draw a box')")
        drag(page, to_screen(page, 200, 20), to_screen(page, 260, 70))
        page.wait_for_selector("#prompt-dialog[open]")
        page.select_option("#prompt-select", "bright")
        answer_prompt_select(page)
        page.wait_for_selector(".finding .origin:text-is('human')")
        key(page, "f")
        page.wait_for_selector("#case-status.status-corrected")
        shot(page, "painted-and-added")
        # The masks export (from the page's menu) carries the painted mask as the truth.
        page.select_option("#export-format", "masks")
        with page.expect_download() as download:
            page.click("#export-link")
        archive = zipfile.ZipFile(io.BytesIO(download.value.path().read_bytes()))
        assert page.errors == [], page.errors
    finally:
        page.context.close()

    with contextlib.closing(api_client(review_server, "rev1")) as client:
        after = mask_pixels(client, case["id"], "bright")
        found = client.get(f"/review/api/cases/{case['id']}").json()["findings"]
    painted = after & ~before
    assert painted[270:291, 25:115].mean() > 0.9, "the brush stroke is not in the saved mask"
    assert (before & ~after).sum() == 0, "painting erased pixels"
    exported = archive.read(f"masks_by_label/bright/case-{case['id']}.png")
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(exported))) > 127, after)
    manifest = json.loads(archive.read("manifest.json"))
    assert str(case["id"]) in json.dumps(manifest) and "human" in json.dumps(manifest)
    (human,) = [f for f in found if f["origin"] == "human"]
    x0, y0, x1, y1 = human["box"]
    assert abs(x0 - 200) <= 2 and abs(y0 - 20) <= 2 and abs(x1 - 260) <= 2 and abs(y1 - 70) <= 2


def answer_prompt_select(page) -> None:
    page.click("#prompt-ok")
    page.wait_for_selector("#prompt-dialog:not([open])", state="attached")


def test_worklist_filters_sort_and_keys(browser, review_server):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        made = [upload(client, "boxes-x", blob_png(128, 20 + i), f"w{i}.png") for i in range(3)]
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        page.select_option("#f-status", "new")
        page.fill("#f-model", "boxes-x")
        page.click("#filters button[type=submit]")
        page.wait_for_selector(f"#worklist tbody tr[data-case-id='{made[-1]['id']}']")
        rows = page.locator("#worklist tbody tr")
        assert not page.locator("#viewer-view").is_visible(), "the viewer shows on the worklist"
        statuses = rows.locator(".status").all_inner_texts()
        assert statuses and set(statuses) == {"new"}
        assert set(rows.locator("td:nth-child(3)").all_inner_texts()) == {"boxes-x v1"}
        page.click("#worklist th[data-sort=created_at]")
        page.wait_for_selector("#worklist th.sorted-asc")
        ids = [int(i) for i in rows.locator("td:first-child").all_inner_texts()]
        assert ids == sorted(ids)
        page.keyboard.press("ArrowDown")
        second = ids[1]
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#panel h2:text-is('Case {second}')")
        key(page, "Escape")
        page.wait_for_selector("#worklist tbody tr")
        page.keyboard.press("n")
        page.wait_for_selector("#panel h2:text-matches('Case \\\\d+')")
        assert page.errors == [], page.errors
    finally:
        page.context.close()


def box_edge_colour(page, x: float, y: float) -> int:
    """How far from grey (max - min of R, G, B) the canvas is at image point (x, y)."""
    return page.evaluate(
        """([x, y]) => {
          const c = document.getElementById("view-canvas");
          const v = JSON.parse(c.dataset.view);
          const dpr = window.devicePixelRatio || 1;
          const px = Math.floor((x * v.scale + v.tx) * dpr);
          const py = Math.floor((y * v.scale + v.ty) * dpr);
          const d = c.getContext("2d").getImageData(px - 1, py, 3, 1).data;
          let most = 0;
          for (let i = 0; i < 12; i += 4) {
            const rgb = [d[i], d[i + 1], d[i + 2]];
            most = Math.max(most, Math.max(...rgb) - Math.min(...rgb));
          }
          return most;
        }""",
        [x, y],
    )


def test_multiframe_findings_per_frame(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        case = upload(client, "bright-x", multiframe_dicom(128, 3), "frames.dcm")
    by_frame = {f["frame"]: f for f in case["findings"]}
    assert sorted(by_frame) == [0, 1, 2]  # the model ran on every frame
    for k, f in by_frame.items():  # frame k's square is at rows 20k+10 .. 20k+30
        assert f["box"][1] == 20 * k + 10, f
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        open_case(page, case["id"])
        wait_first_image(page)
        for k in range(3):
            page.wait_for_selector(f"#findings-frame:text-is('frame {k + 1}: 1 of 3')")
            ids = page.eval_on_selector_all(".finding", "els => els.map(e => e.dataset.findingId)")
            assert ids == [str(by_frame[k]["id"])], (k, ids)
            page.wait_for_timeout(200)
            assert box_edge_colour(page, 40, 20 * k + 20) > 40, f"frame {k + 1}: its box not drawn"
            others = [j for j in range(3) if j != k]
            for j in others:  # the other frames' boxes (left edge, mid-height) are not drawn
                assert box_edge_colour(page, 40, 20 * j + 20) < 10, (k, j)
            shot(page, f"findings-frame-{k + 1}")
            key(page, "ArrowDown")
        assert page.errors == [], page.errors
    finally:
        page.close()


def test_multiframe_scrolling(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        case = upload(client, "bright-x", multiframe_dicom(128, 3), "frames.dcm")
    assert case["image"]["frames"] == 3
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        open_case(page, case["id"])
        wait_first_image(page)
        assert page.locator("#frame-label").inner_text() == "1 / 3"
        first = canvas_png(page)
        with page.expect_response(lambda r: "/pixels?frame=1" in r.url) as second:
            key(page, "ArrowDown")
        assert second.value.status == 200
        page.wait_for_selector("#frame-label:text-is('2 / 3')")
        page.wait_for_timeout(200)
        assert canvas_png(page) != first, "frame 2 drew the same picture as frame 1"
        page.mouse.move(*to_screen(page, 64, 64))
        with page.expect_response(lambda r: "/pixels?frame=2" in r.url):
            page.keyboard.down("Shift")
            page.mouse.wheel(0, 100)
            page.keyboard.up("Shift")
        page.wait_for_selector("#frame-label:text-is('3 / 3')")
        shot(page, "frame-3")
        key(page, "ArrowDown")  # past the last frame: stays
        assert page.locator("#frame-label").inner_text() == "3 / 3"
        assert page.errors == [], page.errors
    finally:
        page.context.close()


def _redrawn(page, drawn, timeout_s: float = 10.0) -> None:
    """Wait (a loaded machine draws late) until `drawn()` holds or `timeout_s` passes; the
    caller's assertion then says what was expected."""
    end = time.monotonic() + timeout_s
    while not drawn() and time.monotonic() < end:
        page.wait_for_timeout(50)
