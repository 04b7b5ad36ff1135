"""The outbox's tables and the statements on them, each inside the caller's transaction.

`outbox`: one row per (result object, destination), unique on the pair. `job_items`: which
jobs an object belongs to (a result may be enqueued by more than one job with the same UID).
The jobs' states follow their rows here (`settle`), in the same transaction as the change.
"""

from __future__ import annotations

import sqlite3

from dicom_node.delivery import ItemState
from dicom_node.jobs import upsert_job
from dicom_node.model import JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    item_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (sop_instance_uid, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL,
    item_id INTEGER NOT NULL REFERENCES outbox (item_id),
    PRIMARY KEY (job_id, item_id)
);
"""
_PENDING, _SENDING = ItemState.PENDING.value, ItemState.SENDING.value
_SETTLED_JOBS = (JobState.QUEUED.value, JobState.SENT.value, JobState.FAILED.value)


class OutboxStateError(ValueError):
    """The item is not in a state that allows the operation (HTTP 409)."""


def insert(
    conn: sqlite3.Connection,
    job: str,
    entry: tuple[str, str, str],
    dest: str,
    now: float,
    link: bool = True,
) -> int:
    """The id of the row for (object, destination), added `pending` unless it exists; with
    `link`, the row is one of the job's (`job_items`)."""
    uid, sop_class, syntax = entry
    conn.execute(
        "INSERT INTO outbox (job_id, sop_instance_uid, sop_class_uid, transfer_syntax, "
        "destination, state, next_attempt_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (sop_instance_uid, destination) DO NOTHING",
        (job, uid, sop_class, syntax, dest, _PENDING, now, now, now),
    )
    (item_id,) = conn.execute(
        "SELECT item_id FROM outbox WHERE sop_instance_uid = ? AND destination = ?", (uid, dest)
    ).fetchone()
    if link:
        conn.execute("INSERT OR IGNORE INTO job_items VALUES (?, ?)", (job, item_id))
    return int(item_id)


def link(conn: sqlite3.Connection, job: str, uid: str, dest: str) -> None:
    """Make the row of (object `uid`, destination) one of the job's rows (it must exist)."""
    row = conn.execute(
        "SELECT item_id FROM outbox WHERE sop_instance_uid = ? AND destination = ?", (uid, dest)
    ).fetchone()
    if row is None:
        raise ValueError("an object named as queued ahead has no outbox row: queue it first")
    conn.execute("INSERT OR IGNORE INTO job_items VALUES (?, ?)", (job, row[0]))


def any_row(conn: sqlite3.Connection, uids: list[str]) -> bool:
    """Whether any of the objects `uids` has a row already (for any destination)."""
    return any(
        conn.execute("SELECT 1 FROM outbox WHERE sop_instance_uid = ?", (uid,)).fetchone()
        for uid in uids
    )


def busy(conn: sqlite3.Connection, destination: str) -> bool:
    """Whether `destination` has rows waiting (`pending`, due or not) or in flight."""
    found = conn.execute(
        "SELECT 1 FROM outbox WHERE destination = ? AND state IN (?, ?) LIMIT 1",
        (destination, _PENDING, _SENDING),
    ).fetchone()
    return found is not None


def claim(conn: sqlite3.Connection, now: float, limit: int) -> list[sqlite3.Row]:
    """Up to `limit` rows due for the destination due first, now marked `sending`."""
    first = conn.execute(
        "SELECT destination FROM outbox WHERE state = ? AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, item_id LIMIT 1",
        (_PENDING, now),
    ).fetchone()
    if first is None:
        return []
    rows = conn.execute(
        "SELECT * FROM outbox WHERE state = ? AND next_attempt_at <= ? AND destination = ? "
        "ORDER BY next_attempt_at, item_id LIMIT ?",
        (_PENDING, now, first[0], limit),
    ).fetchall()
    conn.executemany(
        "UPDATE outbox SET state = ?, updated_at = ? WHERE item_id = ?",
        [(_SENDING, now, row["item_id"]) for row in rows],
    )
    return rows


def record(
    conn: sqlite3.Connection,
    item_id: int,
    state: ItemState,
    attempts: int,
    due: float,
    reason: str,
    now: float,
) -> None:
    """An attempt's outcome, and the states of the jobs the item belongs to."""
    conn.execute(
        "UPDATE outbox SET state = ?, attempts = ?, next_attempt_at = ?, reason = ?, "
        "updated_at = ? WHERE item_id = ?",
        (state.value, attempts, due, reason, now, item_id),
    )
    settle_jobs_of(conn, item_id, now)


def release(conn: sqlite3.Connection, item_ids: list[int]) -> None:
    """Claimed rows not attempted go back to `pending` (still due)."""
    conn.executemany(
        "UPDATE outbox SET state = ? WHERE item_id = ? AND state = ?",
        [(_PENDING, item_id, _SENDING) for item_id in item_ids],
    )


def resume(conn: sqlite3.Connection, now: float) -> int:
    """Rows left `sending` by a process that died are due now; how many."""
    return conn.execute(
        "UPDATE outbox SET state = ?, next_attempt_at = ? WHERE state = ?",
        (_PENDING, now, _SENDING),
    ).rowcount


def next_due(conn: sqlite3.Connection) -> float | None:
    """When the earliest pending row is due, or None."""
    (due,) = conn.execute(
        "SELECT MIN(next_attempt_at) FROM outbox WHERE state = ?", (_PENDING,)
    ).fetchone()
    return None if due is None else float(due)


def select(
    conn: sqlite3.Connection, state: ItemState | None, limit: int, job: str | None = None
) -> list[sqlite3.Row]:
    """Rows, oldest first, in `state` and of `job` when given."""
    query, args = "SELECT o.* FROM outbox o", []
    if job is not None:
        query, args = query + " JOIN job_items j ON j.item_id = o.item_id AND j.job_id = ?", [job]
    if state is not None:
        query, args = query + " WHERE o.state = ?", [*args, ItemState(state).value]
    return conn.execute(query + " ORDER BY o.item_id LIMIT ?", [*args, int(limit)]).fetchall()


def move(
    conn: sqlite3.Connection,
    item_id: int,
    allowed: tuple[ItemState, ...],
    to: ItemState,
    now: float,
) -> None:
    """An operator's retry (-> pending, due now, attempts from 0) or discard."""
    row = conn.execute("SELECT state FROM outbox WHERE item_id = ?", (item_id,)).fetchone()
    if row is None:
        raise KeyError(item_id)
    if ItemState(row["state"]) not in allowed:
        raise OutboxStateError(f"outbox item {item_id} is {row['state']}")
    reason = "discarded by an operator" if to is ItemState.DISCARDED else ""
    attempts = "0" if to is ItemState.PENDING else "attempts"
    conn.execute(
        f"UPDATE outbox SET state = ?, attempts = {attempts}, next_attempt_at = ?, "
        "reason = ?, updated_at = ? WHERE item_id = ?",
        (to.value, now, reason, now, item_id),
    )
    settle_jobs_of(conn, item_id, now)


def still_needed(conn: sqlite3.Connection, uid: str) -> bool:
    """Whether a destination still needs object `uid` (pending, sending or failed)."""
    return (
        conn.execute(
            "SELECT 1 FROM outbox WHERE sop_instance_uid = ? AND state IN (?, ?, ?)",
            (uid, _PENDING, _SENDING, ItemState.FAILED.value),
        ).fetchone()
        is not None
    )


def settle_jobs_of(conn: sqlite3.Connection, item_id: int, now: float) -> None:
    """Settle every job row `item_id` belongs to."""
    jobs = conn.execute("SELECT job_id FROM job_items WHERE item_id = ?", (item_id,)).fetchall()
    for (job,) in jobs:
        settle(conn, job, now)


def settle(conn: sqlite3.Connection, job: str, now: float) -> None:
    """A queued (or sent, failed) job follows its rows: any failed -> failed with the reason;
    else any pending or sending -> queued; else some discarded -> failed; else sent."""
    current = conn.execute("SELECT state FROM jobs WHERE job_id = ?", (job,)).fetchone()
    if current is None or current[0] not in _SETTLED_JOBS:
        return
    rows = conn.execute(
        "SELECT o.state, o.destination, o.reason FROM outbox o JOIN job_items j "
        "ON j.item_id = o.item_id WHERE j.job_id = ? ORDER BY o.item_id",
        (job,),
    ).fetchall()
    states = [row[0] for row in rows]
    failed = [row for row in rows if row[0] == ItemState.FAILED.value]
    state, reason = JobState.SENT, ""
    if failed:
        state, reason = JobState.FAILED, f"delivery to {failed[0][1]} failed: {failed[0][2]}"
    elif _PENDING in states or _SENDING in states:
        state = JobState.QUEUED
    elif ItemState.DISCARDED.value in states:
        discarded = states.count(ItemState.DISCARDED.value)
        state = JobState.FAILED
        reason = f"{discarded} of {len(states)} deliveries discarded by an operator"
    upsert_job(conn, job, state, now, reason=reason)
