"""The worklist query: filters, sorting and paging over the cases table, by index.

Every sort column has an index of its own and the common filter + sort pairs (status, model or
source with the creation time; status with the score) have composite ones (`review/db.py`), so
a page is an index walk plus OFFSET, never a sort of the whole table. Ties sort by id.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

STATUSES = ("new", "in_review", "accepted", "corrected", "rejected")
SORTS = ("created_at", "max_score", "finding_count", "status")
MAX_PAGE_SIZE = 500


class QueryError(ValueError):
    """A worklist query parameter out of range (the message says the allowed values)."""


@dataclass(frozen=True)
class WorklistQuery:
    """One worklist request: filters, sort and page."""

    status: tuple[str, ...] = ()
    model: str = ""
    source: str = ""
    q: str = ""
    sort: str = "created_at"
    order: str = "desc"
    page: int = 1
    page_size: int = 50

    @classmethod
    def from_params(cls, params: dict[str, str]) -> WorklistQuery:
        """Parse query parameters; QueryError names the parameter and what it accepts."""
        status = tuple(s for s in params.get("status", "").split(",") if s)
        bad = [s for s in status if s not in STATUSES]
        if bad:
            raise QueryError(f"status: {bad} unknown; use {', '.join(STATUSES)} (comma-separated)")
        sort, order = params.get("sort", "created_at"), params.get("order", "desc")
        if sort not in SORTS:
            raise QueryError(f"sort: use one of {', '.join(SORTS)}")
        if order not in ("asc", "desc"):
            raise QueryError("order: use asc or desc")
        page, size = (
            _whole(params, "page", 1, 10**9),
            _whole(params, "page_size", 50, MAX_PAGE_SIZE),
        )
        return cls(
            status, params.get("model", ""), params.get("source", ""), params.get("q", "").strip(),
            sort, order, page, size,
        )  # fmt: skip

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause (possibly empty) and its parameters."""
        clauses: list[str] = []
        args: list[Any] = []
        if self.status:
            clauses.append(f"status IN ({','.join('?' * len(self.status))})")
            args.extend(self.status)
        for column in ("model", "source"):
            if getattr(self, column):
                clauses.append(f"{column} = ?")
                args.append(getattr(self, column))
        if self.q:
            text, found = self._search()
            clauses.append(text)
            args.extend(found)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _search(self) -> tuple[str, list[Any]]:
        """`q`: a case id, or a substring of the model name or of a finding's label."""
        if self.q.isdigit():
            return "id = ?", [int(self.q)]
        like = f"%{self.q.replace('%', '').replace('_', '')}%"
        return (
            "(model LIKE ? OR id IN (SELECT case_id FROM findings WHERE label LIKE ?))",
            [like, like],
        )

    def sql(self) -> tuple[str, list[Any]]:
        """The page query and its parameters."""
        where, args = self.where()
        direction = "DESC" if self.order == "desc" else "ASC"
        order = f"{self.sort} {direction}, id {direction}"
        offset = (self.page - 1) * self.page_size
        return (
            "SELECT id, status, model, model_version, source, kind, finding_count, max_score, "
            f"created_at FROM cases{where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, self.page_size, offset],
        )


def _whole(params: dict[str, str], name: str, default: int, top: int) -> int:
    text = params.get(name, str(default))
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise QueryError(f"{name}: a whole number from 1 to {top}")
    return int(text)


def page(conn: sqlite3.Connection, query: WorklistQuery) -> dict[str, Any]:
    """One worklist page: total, page, page_size and the cases (with their age)."""
    where, args = query.where()
    total = conn.execute(f"SELECT COUNT(*) FROM cases{where}", args).fetchone()[0]
    text, page_args = query.sql()
    now = time.time()
    cases = [
        {**dict(row), "age_s": round(now - row["created_at"], 1)}
        for row in conn.execute(text, page_args)
    ]
    return {"total": total, "page": query.page, "page_size": query.page_size, "cases": cases}


def next_case(conn: sqlite3.Connection, after: int | None) -> int | None:
    """The next case to review: the oldest new case after `after` (by id), else the oldest."""
    if after is not None:
        row = conn.execute(
            "SELECT id FROM cases WHERE status = 'new' AND id > ? ORDER BY id LIMIT 1", (after,)
        ).fetchone()
        if row is not None:
            return int(row[0])
    row = conn.execute(
        "SELECT id FROM cases WHERE status = 'new' AND id != ? ORDER BY id LIMIT 1", (after or -1,)
    ).fetchone()
    return int(row[0]) if row else None


def explain(conn: sqlite3.Connection, query: WorklistQuery) -> list[str]:
    """SQLite's query plan for the page query (one line per step), for tests and tuning."""
    text, args = query.sql()
    return [str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {text}", args)]
