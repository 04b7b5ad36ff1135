"""Sign-in, sessions, CSRF, bearer tokens and roles, against the real server on loopback."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import httpx
import numpy as np

from tests.review.conftest import PASSWORD, act, png, sign_in, upload


def test_login_page_is_open_and_the_rest_is_not(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as anonymous:
        page = anonymous.get("/review/login")
        assert page.status_code == 200 and "<form" in page.text
        assert 'name="password"' in page.text
        index = anonymous.get("/review/", follow_redirects=False)
        assert index.status_code == 303 and index.headers["location"] == "/review/login"
        assert anonymous.get("/review", follow_redirects=False).status_code == 307
        for path in ("/review/api/me", "/review/api/cases", "/review/api/cases/1"):
            answer = anonymous.get(path)
            assert answer.status_code == 401 and "sign in" in answer.json()["error"]


def test_wrong_password_and_unknown_user_are_refused(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for user, password in (("rev1", "wrong password"), ("nobody", PASSWORD)):
            answer = client.post("/review/api/login", json={"username": user, "password": password})
            assert answer.status_code == 401
            assert "review_session" not in answer.cookies


def test_repeated_wrong_passwords_pause_that_user(server) -> None:
    server.tool.accounts.add_user("guessed", "reviewer", PASSWORD)
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for _ in range(10):
            wrong = {"username": "guessed", "password": "guess-guess"}
            assert client.post("/review/api/login", json=wrong).status_code == 401
        right = {"username": "guessed", "password": PASSWORD}
        paused = client.post("/review/api/login", json=right)
        assert paused.status_code == 429 and int(paused.headers["retry-after"]) > 0
        other = client.post("/review/api/login", json={"username": "rev1", "password": PASSWORD})
        assert other.status_code == 200


def test_sign_in_from_another_site_is_refused(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        body = {"username": "rev1", "password": PASSWORD}
        foreign = client.post(
            "/review/api/login", json=body, headers={"Origin": "https://evil.test"}
        )
        assert foreign.status_code == 403 and "review_session" not in foreign.cookies
        own = client.post("/review/api/login", json=body, headers={"Origin": server.url})
        assert own.status_code == 200


def test_session_cookie_flags_and_me(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        answer = client.post("/review/api/login", json={"username": "rev1", "password": PASSWORD})
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/review" in cookie
        me = client.get("/review/api/me").json()
        assert me["user"] == "rev1" and me["role"] == "reviewer"
        assert me["csrf_token"] == answer.json()["csrf_token"]


def test_form_sign_in_redirects_to_the_page(server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        answer = client.post(
            "/review/api/login",
            data={"username": "rev2", "password": PASSWORD},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/review/"
        assert client.get("/review/api/me").json()["user"] == "rev2"


def test_mutating_cookie_requests_need_the_csrf_token(server) -> None:
    client = sign_in(server, "rev1")
    token = client.headers.pop("X-CSRF-Token")
    case = None
    try:
        refused = client.post(
            "/review/api/cases",
            files={"image": ("a.png", png(np.zeros((64, 64, 3), np.uint8)))},
            data={"model": "boxes"},
        )
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]
        wrong = client.post("/review/api/logout", headers={"X-CSRF-Token": token[:-2] + "xx"})
        assert wrong.status_code == 403
        client.headers["X-CSRF-Token"] = token
        case = upload(client, "boxes", png(np.zeros((64, 64, 3), np.uint8)))
        del client.headers["X-CSRF-Token"]
        assert act(client, case["id"], action="claim").status_code == 403
        assert client.get(f"/review/api/cases/{case['id']}").json()["status"] == "new"
        client.headers["X-CSRF-Token"] = token
        assert act(client, case["id"], action="claim").status_code == 200
    finally:
        client.close()


def test_logout_ends_the_session(server) -> None:
    with closing(sign_in(server, "rev2")) as client:
        assert client.post("/review/api/logout").status_code == 200
        assert client.get("/review/api/me").status_code == 401


def test_sessions_expire_when_idle_and_absolutely(server) -> None:
    accounts = server.tool.accounts
    for column, limit in (("last_seen", accounts.idle_s), ("created_at", accounts.absolute_s)):
        with closing(sign_in(server, "sup")) as client:
            assert client.get("/review/api/me").status_code == 200
            with sqlite3.connect(server.tool.settings.database) as conn:
                conn.execute(f"UPDATE sessions SET {column} = ?", (time.time() - limit - 5,))
            assert client.get("/review/api/me").status_code == 401, column


def test_bearer_token_needs_no_csrf_and_keeps_its_role(server) -> None:
    token = server.tool.accounts.add_token("script", "reviewer")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=60.0, headers=headers) as client:
        me = client.get("/review/api/me").json()
        assert me["user"] == "token:script" and me["csrf_token"] is None
        case = upload(client, "boxes", png(np.zeros((64, 64, 3), np.uint8)))
        assert act(client, case["id"], action="claim").status_code == 200
    bad = {"Authorization": "Bearer not-a-token"}
    with httpx.Client(base_url=server.url, timeout=60.0, headers=bad) as client:
        assert client.get("/review/api/me").status_code == 401


def test_tokens_and_passwords_are_stored_hashed(server) -> None:
    token = server.tool.accounts.add_token("hashed", "admin")
    with sqlite3.connect(server.tool.settings.database) as conn:
        dump = "\n".join(conn.iterdump())
        kdf = conn.execute("SELECT kdf FROM users WHERE name = 'rev1'").fetchone()[0]
    assert token not in dump and PASSWORD not in dump
    assert kdf.startswith("scrypt:")
