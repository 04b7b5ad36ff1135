"""Per-frame masks in Chromium: each frame of a multi-frame segmentation case shows its own
mask (fetched with `?frame=K`), and a mask painted on a later frame is saved on that frame."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from PIL import Image as PILImage

from tests.review_browser.conftest import api_client, new_page, sign_in, upload, wait_first_image
from tests.review_browser.images import multiframe_dicom
from tests.review_browser.pages import drag, is_action, key, open_case, to_screen
from tests.review_browser.test_viewer import box_edge_colour


def frame_mask(client, case_id: int, frame: int) -> np.ndarray:
    answer = client.get(f"/review/api/cases/{case_id}/masks/bright.png", params={"frame": frame})
    assert answer.status_code == 200, answer.text
    return np.asarray(PILImage.open(io.BytesIO(answer.content))) > 127


def test_each_frame_draws_its_own_mask_and_paint_saves_on_it(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        case = upload(client, "bright-x", multiframe_dicom(128, 3), "frames.dcm")
        first = frame_mask(client, case["id"], 0)
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        open_case(page, case["id"])
        wait_first_image(page)
        page.wait_for_selector(".mask[data-mask='bright']")
        for k in range(3):  # frame k's square (rows 20k+10 .. 20k+30, columns 40 .. 80)
            page.wait_for_selector(f"#frame-label:text-is('{k + 1} / 3')")
            page.wait_for_timeout(300)
            assert box_edge_colour(page, 60, 20 * k + 20) > 20, f"frame {k + 1}: no mask drawn"
            for j in (j for j in range(3) if j != k):  # the other frames' squares: no mask
                assert box_edge_colour(page, 60, 20 * j + 20) < 10, (k, j)
            shot(page, f"mask-frame-{k + 1}")
            if k < 2:
                with page.expect_response(lambda r, n=k + 1: f"bright.png?frame={n}" in r.url):
                    key(page, "ArrowDown")
        key(page, "ArrowUp")  # frame 2 (index 1): paint a stroke there and save it
        page.wait_for_selector("#frame-label:text-is('2 / 3')")
        key(page, "p")
        page.wait_for_selector("#mode-badge:text('Paint')")
        drag(page, to_screen(page, 10, 110), to_screen(page, 110, 110))
        page.wait_for_selector("#btn-save-mask:not([disabled])")
        with page.expect_response(is_action("paint")) as saved:
            page.click("#btn-save-mask")
        assert saved.value.status == 200, saved.value.text()
        assert saved.value.request.post_data_json["frame"] == 1
        assert page.errors == [], page.errors
    finally:
        page.context.close()
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        painted = frame_mask(client, case["id"], 1)
        assert painted[105:116, 20:100].mean() > 0.9, "the stroke is not in frame 2's mask"
        assert painted[30:50, 50:70].all(), "frame 2's own mask was lost"
        assert (frame_mask(client, case["id"], 0) == first).all(), "frame 1's mask changed"
