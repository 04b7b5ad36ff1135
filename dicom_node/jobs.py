"""Jobs (one series through one model) in the node's SQLite database, `state_dir/node.sqlite`.

One database holds the jobs and the outbox (`dicom_node/outbox.py`): WAL mode, `synchronous=FULL`
(every commit reaches the disk before it returns; the outbox's delivery records may ask for a
commit without fsync, `Database.transaction(durable=False)`), one connection shared behind a
lock. Nothing about the patient is stored: a job has UIDs, the calling AE title, the model and its
state.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dicom_node.model import JobState

_JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    calling_ae TEXT NOT NULL DEFAULT '',
    study_uid TEXT NOT NULL DEFAULT '',
    series_uid TEXT NOT NULL DEFAULT '',
    run INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL DEFAULT '',
    instances INTEGER NOT NULL DEFAULT 0,
    results INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL DEFAULT 0,
    assembled_at REAL NOT NULL DEFAULT 0,
    inferred_at REAL NOT NULL DEFAULT 0,
    encoded_at REAL NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS processed_instances (sop_instance_uid TEXT PRIMARY KEY);
"""
# The fields `upsert` takes besides the state (`*_at`: wall-clock stage times, 0 until reached);
# a reason longer than MAX_REASON is cut.
JOB_FIELDS = (
    "calling_ae", "study_uid", "series_uid", "run", "model", "rule", "instances", "results",
    "reason", "received_at", "assembled_at", "inferred_at", "encoded_at", "queued_at",
)  # fmt: skip
MAX_REASON = 500
_DELIVERED = (JobState.SENT.value, JobState.FAILED.value)


def job_id(calling_ae: str, study_uid: str, series_uid: str, run: int, model: str) -> str:
    """The job's id: the same series, run and model always give the same id (32 hex digits)."""
    key = "\x1f".join((calling_ae, study_uid, series_uid, str(run), model))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Database:
    """The node's SQLite database: one connection, WAL, `synchronous=FULL`, used under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises.

        `durable=True`: the commit is on disk when this returns (`synchronous=FULL`, the WAL
        fsynced). `durable=False`: the commit is in the WAL (`synchronous=NORMAL`, no fsync):
        it survives the process being killed (`kill -9`; the OS has the write), not a power
        cut; it becomes durable with the next durable commit or checkpoint, and WAL order means
        a power cut can only lose a tail of such commits, never one before a durable commit.
        Only for records whose loss repeats harmless work (a delivery sent again: the receiver
        keeps one object per SOP Instance UID).
        """
        with self._lock:
            if not durable:
                self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads (a consistent snapshot per statement)."""
        with self._lock:
            yield self._conn

    def executescript(self, script: str) -> None:
        """Run a schema script (idempotent `CREATE ... IF NOT EXISTS`)."""
        with self._lock:
            self._conn.executescript(script)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


@dataclass(frozen=True)
class Job:
    """One series through one model, as the database holds it."""

    job_id: str
    state: JobState
    calling_ae: str
    study_uid: str
    series_uid: str
    run: int
    model: str
    rule: str
    instances: int
    results: int
    reason: str
    received_at: float
    assembled_at: float
    inferred_at: float
    encoded_at: float
    queued_at: float
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        """A job from its `jobs` row."""
        values = dict(row)
        values["state"] = JobState(values["state"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The job as JSON (UIDs, AE title, model, state: no patient attributes)."""
        return {**asdict(self), "state": self.state.value}


def upsert_job(
    conn: sqlite3.Connection, job: str, state: JobState, now: float, **fields: Any
) -> None:
    """Insert or update job `job` inside the caller's transaction."""
    unknown = set(fields) - set(JOB_FIELDS)
    if unknown:
        raise ValueError(f"unknown job fields: {sorted(unknown)}")
    if "reason" in fields:
        fields["reason"] = str(fields["reason"])[:MAX_REASON]
    names = ["job_id", "state", *fields, "created_at", "updated_at"]
    values = [job, JobState(state).value, *fields.values(), now, now]
    updates = ", ".join(f"{name} = excluded.{name}" for name in ["state", *fields, "updated_at"])
    conn.execute(
        f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT (job_id) DO UPDATE SET {updates}",
        values,
    )


class JobStore:
    """The jobs table: where each job (series x model) stands, for the API and the metrics."""

    def __init__(self, path: Path | Database, clock: Callable[[], float] = time.time) -> None:
        self.database = path if isinstance(path, Database) else Database(Path(path))
        self.clock = clock
        self.database.executescript(_JOBS_SCHEMA)

    def upsert(self, job: str, state: JobState, *, durable: bool = True, **fields: Any) -> None:
        """Create job `job` or move it to `state`, updating the given fields (`JOB_FIELDS`).

        A reason must not carry patient attributes (UIDs, status codes and model names only).
        Moving to any state but `failed` clears the reason unless one is given. `queued` on a
        job the outbox already settled (`sent`, `failed`) updates the fields, not the state.
        `durable=False` commits without fsync (`Database.transaction`): for marks whose loss
        to a power cut repeats work (a job not yet queued runs again from the spool).
        """
        if JobState(state) is not JobState.FAILED:
            fields.setdefault("reason", "")
        with self.database.transaction(durable=durable) as conn:
            row = conn.execute("SELECT state FROM jobs WHERE job_id = ?", (job,)).fetchone()
            if JobState(state) is JobState.QUEUED and row and row[0] in _DELIVERED:
                state = JobState(row[0])  # the outbox already settled it: keep state and reason
                fields.pop("reason", None)
            upsert_job(conn, job, state, self.clock(), **fields)

    def mark_processed(self, sop_instance_uids: Iterable[str]) -> None:
        """Record source instances as processed (a restart does not run them again)."""
        with self.database.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO processed_instances VALUES (?)",
                [(uid,) for uid in sop_instance_uids],
            )

    def processed(self, sop_instance_uids: Iterable[str]) -> set[str]:
        """Those of `sop_instance_uids` recorded as processed."""
        uids = list(sop_instance_uids)
        with self.database.reading() as conn:
            return {
                uid
                for uid in uids
                if conn.execute(
                    "SELECT 1 FROM processed_instances WHERE sop_instance_uid = ?", (uid,)
                ).fetchone()
            }

    def get(self, job: str) -> Job | None:
        """Job `job`, or None when there is none."""
        with self.database.reading() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job,)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """The most recently updated jobs, in `state` if given, at most `limit`."""
        query, args = "SELECT * FROM jobs", []
        if state is not None:
            query, args = query + " WHERE state = ?", [JobState(state).value]
        with self.database.reading() as conn:
            rows = conn.execute(
                query + " ORDER BY updated_at DESC, job_id LIMIT ?", [*args, int(limit)]
            ).fetchall()
        return [Job.from_row(row) for row in rows]

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state, zeros included)."""
        with self.database.reading() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {JobState(state): count for state, count in rows}
        return {state: found.get(state, 0) for state in JobState}

    def close(self) -> None:
        """Close the database."""
        self.database.close()
