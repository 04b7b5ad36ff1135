"""The review database: one SQLite file (WAL) beside the case folders, and its schema.

The audit table is append-only: triggers refuse UPDATE and DELETE on it, so no code path (and
no one with the file and the sqlite3 shell, short of dropping the triggers) rewrites history.
Connections are short-lived and per call (`Database.connect`), so the HTTP handlers can run in
worker threads; writes take SQLite's write lock with `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'new',
    model TEXT NOT NULL,
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    finding_count INTEGER NOT NULL DEFAULT 0,
    max_score REAL NOT NULL DEFAULT 0,
    image_score REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    reviewer TEXT,
    labels TEXT NOT NULL DEFAULT '[]',
    image TEXT NOT NULL DEFAULT '{}',
    patient TEXT
);
CREATE INDEX IF NOT EXISTS cases_created ON cases (created_at);
CREATE INDEX IF NOT EXISTS cases_status ON cases (status);
CREATE INDEX IF NOT EXISTS cases_score ON cases (max_score);
CREATE INDEX IF NOT EXISTS cases_count ON cases (finding_count);
CREATE INDEX IF NOT EXISTS cases_status_created ON cases (status, created_at);
CREATE INDEX IF NOT EXISTS cases_status_score ON cases (status, max_score);
CREATE INDEX IF NOT EXISTS cases_model_created ON cases (model, created_at);
CREATE INDEX IF NOT EXISTS cases_source_created ON cases (source, created_at);

CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases (id),
    label TEXT NOT NULL,
    score REAL NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('ai', 'human')),
    status TEXT NOT NULL DEFAULT 'pending',
    reason TEXT,
    has_heatmap INTEGER NOT NULL DEFAULT 0,
    ai_label TEXT,
    ai_box TEXT,
    labelled_by TEXT,
    reviewed_by TEXT,
    frame INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS findings_case ON findings (case_id);
CREATE INDEX IF NOT EXISTS findings_label ON findings (label, case_id);

CREATE TABLE IF NOT EXISTS masks (
    case_id INTEGER NOT NULL REFERENCES cases (id),
    label TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('ai', 'human')),
    PRIMARY KEY (case_id, label, origin)
);

CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases (id),
    user TEXT NOT NULL,
    time REAL NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_case ON comments (case_id);

CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id INTEGER NOT NULL,
    user TEXT NOT NULL,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    finding_id INTEGER,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS audit_case ON audit (case_id, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused'); END;

CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    kdf TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""


# Columns added after the first schema: (table, column, type), added to older files on open.
ADDED_COLUMNS = (
    ("findings", "labelled_by", "TEXT"),
    ("findings", "reviewed_by", "TEXT"),
    ("findings", "frame", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


class Database:
    """The review SQLite file: schema on first open, WAL, a connection per unit of work."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            _add_missing_columns(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection (rows as `sqlite3.Row`), closed on exit; commit is the caller's."""
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A connection inside `BEGIN IMMEDIATE`: committed on success, rolled back on error."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
