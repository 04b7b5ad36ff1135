"""A reviewer's session in Chromium: sign in, worklist, a detection case with heat maps, accept
one finding, move a box, reject another with a reason, finish, export the labels (COCO) and
check the file against the actions; the audit trail holds each action."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile

import pytest

from tests.review_browser.conftest import api_client, new_page, sign_in, upload, wait_first_image
from tests.review_browser.images import blob_png
from tests.review_browser.pages import (
    answer_prompt,
    canvas_png,
    case_status,
    drag,
    finding,
    finding_status,
    is_action,
    key,
    open_case,
    select_finding,
    to_screen,
)

REASON = "dust on the lens, not on the part"


@pytest.fixture(scope="module")
def detection_case(review_server) -> dict:
    with contextlib.closing(api_client(review_server, "sup")) as client:
        return upload(client, "boxes-x", blob_png(640), "part.png")


def test_review_a_detection_case_and_export_it(browser, review_server, detection_case, shot):
    case_id = detection_case["id"]
    first, second = detection_case["findings"][:2]
    assert first["has_heatmap"] and second["has_heatmap"], "the tiny detector explains"
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev1")
        row = page.locator(f"#worklist tbody tr[data-case-id='{case_id}']")
        assert row.locator("td").nth(4).inner_text() == str(len(detection_case["findings"]))
        shot(page, "1-worklist")

        open_case(page, case_id)
        wait_first_image(page)
        shot(page, "2-case")

        # The heat map of the selected finding: fetched, drawn, and toggled off again.
        select_finding(page, first["id"])
        before = canvas_png(page)
        with page.expect_response(lambda r: "/heatmap.png" in r.url) as heat:
            key(page, "h")
        assert heat.value.status == 200
        page.wait_for_selector("#heatmap-toggle:checked")
        page.wait_for_timeout(300)
        with_heat = canvas_png(page)
        assert with_heat != before, "the heat map overlay changed nothing on the canvas"
        page.fill("#heatmap-opacity", "90")
        shot(page, "3-heatmap")
        page.click("#heatmap-toggle")
        page.wait_for_selector("#heatmap-toggle:not(:checked)")

        # Accept the first finding with the key, then move its box by dragging its inside.
        key(page, "a")
        finding_status(page, first["id"], "accepted")
        case_status(page, "in_review")
        x0, y0, x1, y1 = first["box"]
        start = to_screen(page, (x0 + x1) / 2, (y0 + y1) / 2)
        scale = json.loads(page.locator("#view-canvas").get_attribute("data-view"))["scale"]
        with page.expect_response(is_action("move")) as moved:
            drag(page, start, (start[0] + 40, start[1] + 30))
        assert moved.value.status == 200, moved.value.text()
        finding_status(page, first["id"], "corrected")
        new_box = next(f for f in moved.value.json()["findings"] if f["id"] == first["id"])["box"]
        dx, dy = 40 / scale, 30 / scale
        expected = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
        assert all(abs(a - b) <= 1.01 for a, b in zip(new_box, expected, strict=True)), (
            new_box,
            expected,
        )

        # Reject the second with a reason (the prompt insists on one).
        select_finding(page, second["id"])
        key(page, "r")
        answer_prompt(page, REASON)
        finding_status(page, second["id"], "rejected")
        assert REASON in finding(page, second["id"]).inner_text()
        shot(page, "4-reviewed")

        key(page, "f")
        case_status(page, "corrected")

        # The history panel shows every action, in order.
        page.click("#btn-audit")
        page.wait_for_selector("#audit-list li")
        shown = page.locator("#audit-list li").evaluate_all("els => els.map(e => e.dataset.action)")
        done = [a for a in shown if a != "open"]
        assert done == ["upload", "claim", "accept", "move", "reject", "close"], shown
        assert "open" in shown

        # Export the labels from the page (COCO) and compare them with what was done.
        page.select_option("#export-format", "coco")
        with page.expect_download() as download:
            page.click("#export-link")
        archive = zipfile.ZipFile(io.BytesIO(download.value.path().read_bytes()))
        shot(page, "5-exported")
        assert page.errors == [], page.errors
    finally:
        page.context.close()

    coco = json.loads(archive.read("annotations.json"))
    mine = [a for a in coco["annotations"] if a["image_id"] == case_id]
    assert len(mine) == 1, f"only the moved (corrected) finding is truth, got {mine}"
    (ann,) = mine
    assert ann["finding_id"] == first["id"]
    assert ann["origin"] == "ai" and ann["review_status"] == "corrected"
    assert ann["reviewer"] == "rev1"
    bx, by, bw, bh = ann["bbox"]
    assert [bx, by, bx + bw, by + bh] == pytest.approx(new_box)
    image = next(i for i in coco["images"] if i["id"] == case_id)
    assert image["case_status"] == "corrected"
    assert f"images/case-{case_id}.png" in archive.namelist()
    manifest = json.loads(archive.read("manifest.json"))
    assert json.dumps(manifest).count("rev1") >= 1

    # The audit trail (API) holds each action with user, before and after.
    with contextlib.closing(api_client(review_server, "sup")) as client:
        trail = client.get(f"/review/api/cases/{case_id}/audit").json()
    by_action = {}
    for entry in trail:
        by_action.setdefault(entry["action"], []).append(entry)
    assert {"open", "claim", "accept", "move", "reject", "close"} <= set(by_action)
    move = by_action["move"][0]
    assert move["user"] == "rev1" and move["finding_id"] == first["id"]
    assert move["before"]["box"] == first["box"] and move["after"]["box"] == new_box
    reject = by_action["reject"][0]
    assert reject["finding_id"] == second["id"] and reject["after"]["reason"] == REASON
    assert all(e["user"] for e in trail)
    assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)


def test_relabel_comment_and_reject_the_case(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev2")) as client:
        case = upload(client, "boxes-x", blob_png(320, 11), "part2.png")
    first = case["findings"][0]
    other = next(label for label in case["labels"] if label != first["label"])
    page = new_page(browser, review_server)
    try:
        sign_in(page, "rev2")
        open_case(page, case["id"])
        wait_first_image(page)
        select_finding(page, first["id"])
        key(page, "l")
        page.wait_for_selector("#prompt-dialog[open]")
        page.select_option("#prompt-select", other)
        page.click("#prompt-ok")
        finding_status(page, first["id"], "corrected")
        assert finding(page, first["id"]).locator(".label").inner_text() == other

        key(page, "c")
        answer_prompt(page, "blurred frame, ask for a retake")
        page.wait_for_selector(".comments li:has-text('blurred frame')")

        key(page, "Shift+R")  # reject the whole case: a reason is required
        page.wait_for_selector("#prompt-dialog[open]")
        page.keyboard.press("Enter")  # empty: refused by the prompt, it stays open
        assert page.locator("#prompt-dialog[open]").count() == 1
        answer_prompt(page, "not a part of this line")
        case_status(page, "rejected")
        shot(page, "rejected")
        assert page.errors == [], page.errors
    finally:
        page.context.close()
    with contextlib.closing(api_client(review_server, "rev2")) as client:
        trail = client.get(f"/review/api/cases/{case['id']}/audit").json()
    relabel = next(e for e in trail if e["action"] == "relabel")
    assert relabel["before"]["label"] == first["label"] and relabel["after"]["label"] == other
    assert any(e["action"] == "comment" for e in trail)
    closed = [e for e in trail if e["action"] == "close"]
    assert closed and closed[-1]["after"]["status"] == "rejected"
