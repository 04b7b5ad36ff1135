"""Cases through their states: actions, the server-enforced state machine, the audit trail."""

from __future__ import annotations

import base64
import sqlite3

import numpy as np
import pytest

from tests.review.conftest import act, png, upload
from tests.review.test_export import read_png


@pytest.fixture()
def detection_case(clients) -> dict:
    return upload(clients["rev1"], "boxes-x", png(np.full((128, 128, 3), 90, np.uint8)))


def test_upload_runs_the_model_and_keeps_heat_maps(clients, detection_case) -> None:
    case = detection_case
    assert case["status"] == "new" and case["source"] == "upload" and case["kind"] == "detection"
    assert case["model"] == "boxes-x" and case["model_version"] == "1"
    assert sorted(f["label"] for f in case["findings"]) == ["defect", "dust"]
    assert all(f["origin"] == "ai" and f["status"] == "pending" for f in case["findings"])
    assert {f["labelled_by"] for f in case["findings"]} == {"model boxes-x 1"}
    assert {f["reviewed_by"] for f in case["findings"]} == {None}
    assert case["labels"] == ["defect", "dust"] and case["patient"] == {}
    assert case["image"]["width"] == 128 and case["image"]["dtype"] == "uint8"
    defect = next(f for f in case["findings"] if f["label"] == "defect")
    assert defect["box"] == pytest.approx([30, 30, 50, 50], abs=1.5)
    assert defect["has_heatmap"]
    client = clients["rev1"]
    heat = client.get(f"/review/api/cases/{case['id']}/findings/{defect['id']}/heatmap.png")
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    image = client.get(f"/review/api/cases/{case['id']}/image.png")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    raw = client.get(f"/review/api/cases/{case['id']}/pixels", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["x-width"] == "128" and raw.headers["x-dtype"] == "uint8"
    assert raw.headers["x-channels"] == "3"
    assert len(raw.content) == 128 * 128 * 3 and set(raw.content) == {90}


def test_review_a_case_end_to_end(clients, detection_case) -> None:
    rev1, case_id = clients["rev1"], detection_case["id"]
    by_label = {f["label"]: f["id"] for f in detection_case["findings"]}
    edit = act(rev1, case_id, action="accept", finding_id=by_label["defect"])
    assert edit.status_code == 409 and "claim" in edit.json()["error"]
    assert act(rev1, case_id, action="claim").json()["status"] == "in_review"
    assert act(clients["rev2"], case_id, action="accept", finding_id=1).status_code == 409
    assert act(rev1, case_id, action="accept", finding_id=by_label["defect"]).status_code == 200
    no_reason = act(rev1, case_id, action="reject", finding_id=by_label["dust"])
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]
    moved = act(rev1, case_id, action="move", finding_id=by_label["defect"], box=[28, 28, 52, 54])
    assert moved.status_code == 200
    rejected = act(rev1, case_id, action="reject", finding_id=by_label["dust"], reason="a scratch")
    assert rejected.status_code == 200
    added = act(rev1, case_id, action="add", label="dust", box=[100, 100, 110, 112])
    assert added.status_code == 200
    assert act(rev1, case_id, action="add", label="cat", box=[1, 1, 2, 2]).status_code == 400
    assert act(rev1, case_id, action="add", label="dust", box=[1, 1, 900, 2]).status_code == 400
    assert act(rev1, case_id, action="comment", text="dust is a scratch").status_code == 200
    done = act(rev1, case_id, action="finish").json()
    assert done["status"] == "corrected" and done["reviewer"] == "rev1"
    findings = {f["id"]: f for f in done["findings"]}
    assert findings[by_label["defect"]]["box"] == [28, 28, 52, 54]
    assert findings[by_label["defect"]]["status"] == "corrected"
    assert findings[by_label["dust"]]["status"] == "rejected"
    assert findings[by_label["dust"]]["reason"] == "a scratch"
    human = [f for f in done["findings"] if f["origin"] == "human"]
    assert [(f["label"], f["box"], f["status"]) for f in human] == [
        ("dust", [100, 100, 110, 112], "accepted")
    ]
    assert done["comments"][0]["user"] == "rev1"
    defect = findings[by_label["defect"]]
    assert (defect["labelled_by"], defect["reviewed_by"]) == ("rev1", "rev1")
    assert human[0]["labelled_by"] == "rev1"
    again = act(rev1, case_id, action="move", finding_id=by_label["defect"], box=[1, 1, 5, 5])
    assert again.status_code == 409

    trail = rev1.get(f"/review/api/cases/{case_id}/audit").json()
    actions = [row["action"] for row in trail]
    assert actions == ["upload", "claim", "accept", "move", "reject", "add", "comment", "close"]
    assert {row["user"] for row in trail} == {"rev1"}
    move_row = trail[actions.index("move")]
    assert move_row["finding_id"] == by_label["defect"]
    assert move_row["before"]["box"] == pytest.approx([30, 30, 50, 50], abs=1.5)
    assert move_row["after"]["box"] == [28, 28, 52, 54]
    assert trail[actions.index("reject")]["after"]["reason"] == "a scratch"
    assert trail[-1]["after"] == {"status": "corrected", "reviewer": "rev1"}
    assert all(row["time"] > 0 for row in trail)


def test_opening_a_case_is_audited(clients, detection_case) -> None:
    case_id = detection_case["id"]
    clients["rev2"].get(f"/review/api/cases/{case_id}")
    trail = clients["rev2"].get(f"/review/api/cases/{case_id}/audit").json()
    assert [(r["action"], r["user"]) for r in trail][-1] == ("open", "rev2")


def test_only_a_supervisor_reopens_a_closed_case(clients, detection_case) -> None:
    case_id = detection_case["id"]
    sup, rev1 = clients["sup"], clients["rev1"]
    assert act(sup, case_id, action="claim").status_code == 200
    assert act(sup, case_id, action="accept").json()["status"] == "accepted"
    for reviewer in ("rev1", "rev2"):
        refused = act(clients[reviewer], case_id, action="reopen")
        assert refused.status_code == 403 and "supervisor" in refused.json()["error"]
    assert act(rev1, case_id, action="claim").status_code == 409
    reopened = act(sup, case_id, action="reopen").json()
    assert reopened["status"] == "in_review" and reopened["reviewer"] == "sup"
    assert act(clients["boss"], case_id, action="reject", reason="unreadable").json()["status"] == (
        "rejected"
    )
    assert act(clients["boss"], case_id, action="reopen").status_code == 200
    assert act(sup, case_id, action="reopen").status_code == 409  # not closed
    trail = sup.get(f"/review/api/cases/{case_id}/audit").json()
    assert [r["action"] for r in trail if r["action"] in ("reopen", "close")] == [
        "close", "reopen", "close", "reopen",
    ]  # fmt: skip


def test_unknown_case_finding_and_action(clients, detection_case) -> None:
    rev1 = clients["rev1"]
    assert rev1.get("/review/api/cases/999999").status_code == 404
    assert act(rev1, detection_case["id"], action="fly").status_code == 400
    act(rev1, detection_case["id"], action="claim")
    missing = act(rev1, detection_case["id"], action="accept", finding_id=987654)
    assert missing.status_code == 404


def test_the_audit_table_refuses_update_and_delete(server, detection_case) -> None:
    with sqlite3.connect(server.tool.settings.database) as conn:
        for statement in ("UPDATE audit SET user = 'x'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)


def test_segmentation_paint_and_mask(clients) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:30, 20:40] = 255
    case = upload(clients["rev1"], "bright-x", png(image))
    assert case["kind"] == "segmentation"
    assert [(m["label"], m["origin"]) for m in case["masks"]] == [("bright", "ai")]
    [finding] = case["findings"]
    assert finding["label"] == "bright" and finding["box"] == [20, 10, 40, 30]
    rev1, case_id = clients["rev1"], case["id"]
    act(rev1, case_id, action="claim")
    painted = np.zeros((64, 64), np.uint8)
    painted[12:20, 22:30] = 255
    b64 = base64.b64encode(png(painted)).decode()
    assert act(rev1, case_id, action="paint", label="bright", mask_png_b64=b64).status_code == 200
    wrong = base64.b64encode(png(np.zeros((8, 8), np.uint8))).decode()
    assert act(rev1, case_id, action="paint", label="bright", mask_png_b64=wrong).status_code == 400
    mask = rev1.get(f"/review/api/cases/{case_id}/masks/bright.png")
    assert (read_png(mask.content) > 127).sum() == 64
    done = act(rev1, case_id, action="finish").json()
    assert done["status"] == "corrected"
    masks = {(m["label"], m["origin"]) for m in done["masks"]}
    assert masks == {("bright", "ai"), ("bright", "human")}


def test_bad_uploads_say_what_to_fix(clients) -> None:
    rev = clients["rev1"]
    garbage = rev.post("/review/api/cases", files={"image": ("x.png", b"not an image")},
                       data={"model": "boxes-x"})  # fmt: skip
    assert garbage.status_code == 400
    unknown = rev.post("/review/api/cases", files={"image": ("x.png", png(np.zeros((8, 8, 3),
                       np.uint8)))}, data={"model": "no-such-model"})  # fmt: skip
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"]
    missing = rev.post("/review/api/cases", data={"model": "boxes-x"})
    assert missing.status_code == 400 and "image" in missing.json()["error"]


def test_a_supervisor_may_take_over_a_claimed_case(clients, detection_case) -> None:
    case_id = detection_case["id"]
    assert act(clients["rev1"], case_id, action="claim").status_code == 200
    assert act(clients["rev2"], case_id, action="claim").status_code == 409
    taken = act(clients["sup"], case_id, action="claim").json()
    assert taken["status"] == "in_review" and taken["reviewer"] == "sup"
    refused = act(clients["rev1"], case_id, action="finish")
    assert refused.status_code == 409 and "sup" in refused.json()["error"]


def test_a_reverted_rejection_closes_as_accepted(clients, detection_case) -> None:
    rev, case_id = clients["rev1"], detection_case["id"]
    fid = detection_case["findings"][0]["id"]
    act(rev, case_id, action="claim")
    act(rev, case_id, action="reject", finding_id=fid, reason="looked wrong")
    act(rev, case_id, action="accept", finding_id=fid)  # changed their mind
    assert act(rev, case_id, action="finish").json()["status"] == "accepted"
    act(clients["sup"], case_id, action="reopen")
    act(clients["sup"], case_id, action="reject", finding_id=fid, reason="it is wrong")
    assert act(clients["sup"], case_id, action="finish").json()["status"] == "corrected"
    act(clients["sup"], case_id, action="reopen")
    assert act(clients["sup"], case_id, action="finish").json()["status"] == "corrected"
