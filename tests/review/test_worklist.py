"""The worklist with 10,000 cases: filters, sorting, paging, by index (query plans checked)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from review.db import Database
from review.worklist import QueryError, WorklistQuery, explain
from tests.review.conftest import ReviewServer, sign_in, start_review_server
from tests.review.worklist_data import insert_cases

COUNT = 10_000


@pytest.fixture(scope="module")
def big(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewServer]:
    running = start_review_server(models, tmp_path_factory.mktemp("review-10k"))
    insert_cases(running.tool.db, COUNT)
    yield running
    running.stop()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"status": "new"},
        {"status": "new", "sort": "max_score"},
        {"status": "new,in_review", "sort": "created_at", "order": "asc"},
        {"model": "chest"},
        {"source": "line"},
        {"sort": "finding_count"},
        {"sort": "max_score", "order": "asc"},
        {"sort": "status"},
    ],
)
def test_page_queries_walk_an_index(big: ReviewServer, params: dict) -> None:
    query = WorklistQuery.from_params({**params, "page": "7"})
    with big.tool.db.connect() as conn:
        plan = explain(conn, query)
    text = " | ".join(plan)
    assert "USING" in text and "INDEX" in text, text
    assert "USE TEMP B-TREE FOR ORDER BY" not in text or params.get("status", "").count(","), text


def test_pages_filters_and_sorting(big: ReviewServer) -> None:
    with closing(sign_in(big, "rev1")) as client:
        first = client.get("/review/api/cases", params={"page_size": 100}).json()
        assert first["total"] == COUNT and len(first["cases"]) == 100
        ages = [c["created_at"] for c in first["cases"]]
        assert ages == sorted(ages, reverse=True)
        new = client.get("/review/api/cases", params={"status": "new", "sort": "max_score"}).json()
        assert 0 < new["total"] < COUNT and {c["status"] for c in new["cases"]} == {"new"}
        scores = [c["max_score"] for c in new["cases"]]
        assert scores == sorted(scores, reverse=True)
        last_page = -(-new["total"] // 50)
        tail = client.get("/review/api/cases", params={"status": "new", "page": last_page}).json()
        assert len(tail["cases"]) == new["total"] - 50 * (last_page - 1)
        chest = client.get("/review/api/cases", params={"model": "chest", "source": "dicom"}).json()
        assert {(c["model"], c["source"]) for c in chest["cases"]} == {("chest", "dicom")}
        assert all(c["age_s"] >= 0 for c in chest["cases"])
        found = client.get("/review/api/cases", params={"q": "ches"}).json()
        assert (
            found["total"]
            == client.get("/review/api/cases", params={"model": "chest"}).json()["total"]
        )
        by_id = client.get("/review/api/cases", params={"q": "42"}).json()
        assert [c["id"] for c in by_id["cases"]] == [42]
        nxt = client.get("/review/api/cases/next", params={"after": 42}).json()["id"]
        assert nxt > 42
        assert client.get("/review/api/cases", params={"sort": "name"}).status_code == 400
        assert client.get("/review/api/cases", params={"page_size": "5000"}).status_code == 400


def test_query_errors_name_the_parameter() -> None:
    with pytest.raises(QueryError, match="status"):
        WorklistQuery.from_params({"status": "done"})
    with pytest.raises(QueryError, match="order"):
        WorklistQuery.from_params({"order": "up"})


def test_older_files_get_the_added_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "review.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE findings (id INTEGER PRIMARY KEY, case_id INTEGER, label TEXT)")
    Database(path)
    with sqlite3.connect(path) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(findings)")}
    assert {"labelled_by", "reviewed_by"} <= columns


def test_schema_survives_reopening(tmp_path: Path) -> None:
    db = Database(tmp_path / "review.sqlite")
    insert_cases(db, 10)
    again = Database(tmp_path / "review.sqlite")
    with again.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0] == 10
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
