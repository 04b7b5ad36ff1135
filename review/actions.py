"""Review actions and the case state machine the server enforces, each action audited.

    new --claim--> in_review --finish / accept (case) / reject (case)--> accepted | corrected
    | rejected --reopen (supervisor or admin only)--> in_review

Edits (accept / reject / relabel / move a finding, add one, paint a mask) need the case in
review, by the user who claimed it or a supervisor. `finish` closes as `corrected` when the
result as it stands differs from the model's (a finding rejected, relabelled or moved, one
added, a mask painted), `accepted` otherwise; pending findings count as accepted.
Every action appends one audit row per change (user, time, action, finding, before, after) in
the same transaction as the change itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from review.accounts import Principal
from review.images import mask_png, read_png
from review.store import CaseFiles, CaseNotFoundError, CaseStore, finding_json, mask_name
from vision.errors import InvalidInputError

CLOSED = ("accepted", "corrected", "rejected")
EDITS = ("accept", "reject", "relabel", "move", "add", "paint")


class ActionError(Exception):
    """A refused action: HTTP status (400 bad payload, 403 role, 409 state) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def audit(
    conn: sqlite3.Connection,
    case_id: int,
    user: str,
    action: str,
    finding_id: int | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Append one row to the audit trail."""
    conn.execute(
        "INSERT INTO audit (case_id, user, time, action, finding_id, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            case_id,
            user,
            time.time(),
            action,
            finding_id,
            None if before is None else json.dumps(before),
            None if after is None else json.dumps(after),
        ),
    )


def audit_trail(conn: sqlite3.Connection, case_id: int) -> list[dict[str, Any]]:
    """The case's audit rows in order, before/after decoded."""
    rows = conn.execute("SELECT * FROM audit WHERE case_id = ? ORDER BY seq", (case_id,))
    return [
        {
            "seq": r["seq"],
            "user": r["user"],
            "time": r["time"],
            "action": r["action"],
            "finding_id": r["finding_id"],
            "before": json.loads(r["before"]) if r["before"] else None,
            "after": json.loads(r["after"]) if r["after"] else None,
        }
        for r in rows
    ]


class Context:
    """One action on one case: the connection, the case row, who acts, the payload."""

    def __init__(
        self, conn: sqlite3.Connection, store: CaseStore, case_id: int, who: Principal, body: dict
    ) -> None:
        self.conn, self.store, self.who, self.body = conn, store, who, body
        self.case = store.row(conn, case_id)
        self.id = case_id
        self.labels: list[str] = json.loads(self.case["labels"])
        self.image: dict[str, Any] = json.loads(self.case["image"])

    def log(self, action: str, finding_id: int | None = None, before=None, after=None) -> None:
        """Audit this action."""
        audit(self.conn, self.id, self.who.name, action, finding_id, before, after)

    def set_case(self, **columns: Any) -> None:
        """Update case columns (and its update time)."""
        columns["updated_at"] = time.time()
        names = ", ".join(f"{k} = ?" for k in columns)
        self.conn.execute(f"UPDATE cases SET {names} WHERE id = ?", (*columns.values(), self.id))

    def finding(self) -> sqlite3.Row:
        """The finding named by `finding_id` (400 without one, 404 for another case's)."""
        fid = self.body.get("finding_id")
        if not isinstance(fid, int):
            raise ActionError(400, "give finding_id (a number from the case's findings)")
        row = self.conn.execute(
            "SELECT * FROM findings WHERE id = ? AND case_id = ?", (fid, self.id)
        ).fetchone()
        if row is None:
            raise CaseNotFoundError(f"case {self.id} has no finding {fid}")
        return row

    def label(self) -> str:
        """The payload's `label`, one of the model's labels (400 otherwise)."""
        label = self.body.get("label")
        if label not in self.labels:
            raise ActionError(400, f"label: one of the model's labels {self.labels}")
        return str(label)

    def frame(self) -> int:
        """The payload's `frame` (0-based, default 0) inside the case's frames (400 otherwise)."""
        frame = self.body.get("frame", 0)
        frames = int(self.image.get("frames", 1) or 1)
        if not isinstance(frame, int) or isinstance(frame, bool) or not 0 <= frame < frames:
            raise ActionError(400, f"frame: a whole number from 0 to {frames - 1}")
        return frame

    def box(self) -> list[float]:
        """The payload's `box` [x0, y0, x1, y1] inside the image (400 otherwise)."""
        box = self.body.get("box")
        width, height = self.image["width"], self.image["height"]
        if not (isinstance(box, list) and len(box) == 4):
            raise ActionError(400, "box: [x0, y0, x1, y1] in image pixels")
        if not all(isinstance(v, int | float) for v in box):
            raise ActionError(400, "box: four numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ActionError(
                400, f"box: need 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
            )
        return [x0, y0, x1, y1]

    def reason(self) -> str:
        """The payload's non-empty `reason` (400 otherwise)."""
        reason = str(self.body.get("reason") or "").strip()
        if not reason:
            raise ActionError(400, "reject needs a reason: {'reason': '...'}")
        return reason

    def update_finding(self, row: sqlite3.Row, action: str, **columns: Any) -> None:
        """Change a finding's columns and audit its before and after."""
        before = finding_json(row)
        columns["reviewed_by"] = self.who.name
        if action in ("relabel", "move"):
            columns["labelled_by"] = self.who.name
        names = ", ".join(f"{k} = ?" for k in columns)
        self.conn.execute(
            f"UPDATE findings SET {names} WHERE id = ?", (*columns.values(), row["id"])
        )
        after = finding_json(
            self.conn.execute("SELECT * FROM findings WHERE id = ?", (row["id"],)).fetchone()
        )
        self.log(action, row["id"], before, after)


# --- the state machine ------------------------------------------------------------------------


def _require_review(ctx: Context) -> None:
    status = ctx.case["status"]
    if status != "in_review":
        hint = "claim it first (action 'claim')" if status == "new" else "a supervisor can reopen"
        raise ActionError(409, f"case {ctx.id} is {status}: edits need status in_review; {hint}")
    if ctx.case["reviewer"] != ctx.who.name and not ctx.who.supervises:
        raise ActionError(
            409, f"case {ctx.id} is in review by {ctx.case['reviewer']}; only they or a supervisor"
        )


def _close(ctx: Context, status: str) -> None:
    before = {"status": ctx.case["status"]}
    ctx.set_case(status=status, reviewer=ctx.who.name)
    ctx.log("close", None, before, {"status": status, "reviewer": ctx.who.name})


def claim(ctx: Context) -> None:
    """new -> in_review, the claimer as reviewer (a supervisor may take over a claimed case)."""
    status = ctx.case["status"]
    takeover = status == "in_review" and ctx.who.supervises
    if status != "new" and not takeover:
        raise ActionError(409, f"case {ctx.id} is {status}: claim needs status new")
    ctx.set_case(status="in_review", reviewer=ctx.who.name)
    ctx.log("claim", None, {"status": status, "reviewer": ctx.case["reviewer"]},
            {"status": "in_review", "reviewer": ctx.who.name})  # fmt: skip


def reopen(ctx: Context) -> None:
    """A closed case back to in_review: supervisors and admins only (403 for reviewers)."""
    status = ctx.case["status"]
    if status not in CLOSED:
        raise ActionError(409, f"case {ctx.id} is {status}: reopen needs a closed case")
    if not ctx.who.supervises:
        raise ActionError(403, f"case {ctx.id} is {status}: only a supervisor or admin reopens it")
    ctx.set_case(status="in_review", reviewer=ctx.who.name)
    ctx.log("reopen", None, {"status": status, "reviewer": ctx.case["reviewer"]},
            {"status": "in_review", "reviewer": ctx.who.name})  # fmt: skip


def finish(ctx: Context) -> None:
    """in_review -> corrected when the result differs from the model's, else accepted."""
    _require_review(ctx)
    for row in ctx.conn.execute(
        "SELECT * FROM findings WHERE case_id = ? AND status = 'pending'", (ctx.id,)
    ).fetchall():
        ctx.update_finding(row, "accept", status="accepted")
    _close(ctx, "corrected" if _differs(ctx) else "accepted")


def _differs(ctx: Context) -> bool:
    """Whether the reviewed result differs from the model's (as it stands, not as it went)."""
    edited = ctx.conn.execute(
        "SELECT COUNT(*) FROM findings WHERE case_id = ? AND "
        "(origin = 'human' OR status IN ('rejected', 'corrected'))",
        (ctx.id,),
    ).fetchone()[0]
    painted = ctx.conn.execute(
        "SELECT COUNT(*) FROM masks WHERE case_id = ? AND origin = 'human'", (ctx.id,)
    ).fetchone()[0]
    return bool(edited or painted)


def accept(ctx: Context) -> None:
    """Accept one finding (`finding_id`), or the whole case (then it closes, as `finish`)."""
    if "finding_id" not in ctx.body:
        finish(ctx)
        return
    _require_review(ctx)
    ctx.update_finding(ctx.finding(), "accept", status="accepted", reason=None)


def reject(ctx: Context) -> None:
    """Reject one finding (`finding_id`, `reason`), or the whole case with a reason."""
    _require_review(ctx)
    reason = ctx.reason()
    if "finding_id" not in ctx.body:
        ctx.log("reject", None, {"status": ctx.case["status"]}, {"reason": reason})
        _close(ctx, "rejected")
        return
    ctx.update_finding(ctx.finding(), "reject", status="rejected", reason=reason)
    ctx.set_case()


def relabel(ctx: Context) -> None:
    """Give a finding another of the model's labels."""
    _require_review(ctx)
    row, label = ctx.finding(), ctx.label()
    ctx.update_finding(row, "relabel", label=label, status="corrected")
    ctx.set_case()


def move(ctx: Context) -> None:
    """Move or resize a finding's box."""
    _require_review(ctx)
    row, (x0, y0, x1, y1) = ctx.finding(), ctx.box()
    ctx.update_finding(row, "move", x0=x0, y0=y0, x1=x1, y1=y1, status="corrected")
    ctx.set_case()


def add(ctx: Context) -> None:
    """Add a finding the model missed (origin human, accepted) on `frame` (default 0)."""
    _require_review(ctx)
    label, (x0, y0, x1, y1), frame = ctx.label(), ctx.box(), ctx.frame()
    cursor = ctx.conn.execute(
        "INSERT INTO findings (case_id, label, score, x0, y0, x1, y1, origin, status, "
        "labelled_by, reviewed_by, frame) "
        "VALUES (?, ?, 1.0, ?, ?, ?, ?, 'human', 'accepted', ?, ?, ?)",
        (ctx.id, label, x0, y0, x1, y1, ctx.who.name, ctx.who.name, frame),
    )
    row = ctx.conn.execute("SELECT * FROM findings WHERE id = ?", (cursor.lastrowid,)).fetchone()
    ctx.log("add", row["id"], None, finding_json(row))
    count = ctx.conn.execute("SELECT COUNT(*) FROM findings WHERE case_id = ?", (ctx.id,))
    ctx.set_case(finding_count=count.fetchone()[0])


def _mask_from(ctx: Context) -> np.ndarray:
    text = ctx.body.get("mask_png_b64")
    if not isinstance(text, str):
        raise ActionError(400, "paint needs mask_png_b64: the corrected mask as a base64 PNG")
    try:
        pixels = read_png(base64.b64decode(text, validate=True))
    except (binascii.Error, InvalidInputError) as error:
        raise ActionError(400, f"mask_png_b64: {error}") from None
    pixels = pixels[..., 0] if pixels.ndim == 3 else pixels
    if pixels.shape != (ctx.image["height"], ctx.image["width"]):
        raise ActionError(
            400, f"mask is {pixels.shape[1]}x{pixels.shape[0]}; the image is "
            f"{ctx.image['width']}x{ctx.image['height']}",
        )  # fmt: skip
    return pixels > 127


def paint(ctx: Context) -> None:
    """Store the corrected (painted and erased) mask of a label on `frame`, origin human."""
    _require_review(ctx)
    label, mask, frame = ctx.label(), _mask_from(ctx), ctx.frame()
    files: CaseFiles = ctx.store.files(ctx.id)
    previous = ctx.store.current_mask(ctx.conn, ctx.id, label, frame)
    before = (
        {"label": label, "pixels": int(np.count_nonzero(read_png(previous) > 127))}
        if previous
        else None
    )
    files.write(mask_name(ctx.labels, label, "human", frame), mask_png(mask))
    ctx.conn.execute(
        "INSERT OR IGNORE INTO masks (case_id, label, origin) VALUES (?, ?, 'human')",
        (ctx.id, label),
    )
    after = {"label": label, "frame": frame, "pixels": int(np.count_nonzero(mask))}
    ctx.log("paint", None, before, after)
    ctx.set_case()


def comment(ctx: Context) -> None:
    """Add a comment (any state)."""
    text = str(ctx.body.get("text") or "").strip()
    if not text:
        raise ActionError(400, "comment needs text: {'text': '...'}")
    ctx.conn.execute(
        "INSERT INTO comments (case_id, user, time, text) VALUES (?, ?, ?, ?)",
        (ctx.id, ctx.who.name, time.time(), text),
    )
    ctx.log("comment", None, None, {"text": text})


ACTIONS: dict[str, Callable[[Context], None]] = {
    "claim": claim,
    "accept": accept,
    "reject": reject,
    "relabel": relabel,
    "move": move,
    "add": add,
    "paint": paint,
    "comment": comment,
    "finish": finish,
    "reopen": reopen,
}


def apply(store: CaseStore, case_id: int, who: Principal, body: dict) -> dict[str, Any]:
    """Run one action in one transaction (change + audit) and return the updated case."""
    name = body.get("action") if isinstance(body, dict) else None
    if name not in ACTIONS:
        raise ActionError(400, f"action: one of {', '.join(ACTIONS)}")
    with store.db.write() as conn:
        ACTIONS[name](Context(conn, store, case_id, who, body))
    with store.db.connect() as conn:
        return store.case(conn, case_id)


def open_case(store: CaseStore, case_id: int, who: Principal) -> dict[str, Any]:
    """The case for viewing; the opening is recorded in the audit trail."""
    with store.db.write() as conn:
        case = store.case(conn, case_id)
        audit(conn, case_id, who.name, "open")
    return case
