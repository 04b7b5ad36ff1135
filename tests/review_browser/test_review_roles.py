"""Roles on the page: a case a supervisor closed cannot be reopened by a reviewer (the server
refuses, the page says why); the supervisor reopens it. Signing in with a wrong password fails
on the form; the page without a session sends the browser to the sign-in page."""

from __future__ import annotations

import contextlib
import re

from tests.review_browser.conftest import PASSWORD, api_client, new_page, sign_in, upload
from tests.review_browser.images import blob_png
from tests.review_browser.pages import case_status, is_action, key, open_case


def test_reviewer_cannot_reopen_a_case_a_supervisor_closed(browser, review_server, shot):
    with contextlib.closing(api_client(review_server, "rev1")) as client:
        case = upload(client, "bright-x", blob_png(256, 7), "tile.png")
    case_id = case["id"]

    supervisor = new_page(browser, review_server)
    try:
        sign_in(supervisor, "sup")
        open_case(supervisor, case_id)
        key(supervisor, "Shift+A")  # accept the whole case: claims it, then closes it
        case_status(supervisor, "accepted")
    finally:
        supervisor.context.close()

    reviewer = new_page(browser, review_server)
    try:
        sign_in(reviewer, "rev2")
        open_case(reviewer, case_id)
        case_status(reviewer, "accepted")
        with reviewer.expect_response(is_action("reopen")) as answer:
            reviewer.click("#btn-reopen")
        assert answer.value.status == 403
        toast = reviewer.locator("#toast")
        toast.wait_for()
        assert "supervisor" in toast.inner_text()
        shot(reviewer, "refused")
        reviewer.reload()
        case_status(reviewer, "accepted")
        assert reviewer.errors == [], reviewer.errors
    finally:
        reviewer.context.close()

    supervisor = new_page(browser, review_server)
    try:
        sign_in(supervisor, "sup")
        open_case(supervisor, case_id)
        supervisor.click("#btn-reopen")
        case_status(supervisor, "in_review")
    finally:
        supervisor.context.close()

    with contextlib.closing(api_client(review_server, "sup")) as client:
        trail = client.get(f"/review/api/cases/{case_id}/audit").json()
    actions = [(e["action"], e["user"]) for e in trail if e["action"] != "open"]
    assert ("reopen", "sup") in actions
    assert ("reopen", "rev2") not in actions, "a refused reopen left a trace of a change"
    opened_by = {e["user"] for e in trail if e["action"] == "open"}
    assert {"sup", "rev2"} <= opened_by, "opening a case is recorded, for every user"


def test_sign_in_page(browser, review_server):
    page = new_page(browser, review_server)
    try:
        page.goto("/review/#/case/1")
        page.wait_for_url(re.compile(r"/review/login"))
        page.fill("#username", "rev1")
        page.fill("#password", PASSWORD + "x")
        page.click("#login-submit")
        error = page.locator("#login-error")
        error.wait_for()
        assert "Wrong user name or password" in error.inner_text()
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_url(re.compile(r"/review/"))
        page.wait_for_selector("#user-name:text-is('rev1')")
        page.click("#logout")
        page.wait_for_url(re.compile(r"/review/login"))
        assert page.errors == [], page.errors
    finally:
        page.context.close()
