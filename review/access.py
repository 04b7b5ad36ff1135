"""Who is asking, over HTTP: bearer token or session cookie, CSRF on cookie writes, roles.

`guard(handler, roles)` wraps an endpoint: 401 without a valid token or live session, 403 for a
role not in `roles`, 403 for a mutating cookie request whose `X-CSRF-Token` header is missing
or not the session's. The principal is handed to the endpoint as `request.state.principal`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from review.accounts import ROLES, Accounts, Principal

COOKIE = "review_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
Endpoint = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str) -> Response:
    """`{"error": message}` with `status`, as the rest of the HTTP app answers."""
    return JSONResponse({"error": message}, status_code=status)


async def principal_of(request: Request, accounts: Accounts) -> Principal | None:
    """The bearer token's or the session cookie's principal, or None."""
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer "):
        return await run_in_threadpool(accounts.token_principal, header.removeprefix("Bearer "))
    session = request.cookies.get(COOKIE)
    if session:
        return await run_in_threadpool(accounts.session_principal, session)
    return None


def csrf_ok(request: Request, who: Principal) -> bool:
    """Safe methods and bearer requests pass; cookie writes need the session's CSRF token."""
    if request.method in SAFE_METHODS or who.csrf is None:
        return True
    given = request.headers.get(CSRF_HEADER, "")
    return bool(given) and hmac.compare_digest(given.encode(), who.csrf.encode())


def guard(accounts: Accounts, handler: Endpoint, roles: tuple[str, ...] = ROLES) -> Endpoint:
    """`handler` behind sign-in, CSRF and the `roles` allowed."""

    async def endpoint(request: Request) -> Response:
        who = await principal_of(request, accounts)
        if who is None:
            return error(401, "sign in at /review/login, or send 'Authorization: Bearer <token>'")
        if not csrf_ok(request, who):
            return error(403, "missing or wrong X-CSRF-Token header (GET /review/api/me has it)")
        if who.role not in roles:
            return error(403, f"this needs the role {' or '.join(roles)}; you are {who.role}")
        request.state.principal = who
        return await handler(request)

    return endpoint


def set_session_cookie(response: Response, session: str, max_age: float) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Path=/review."""
    response.set_cookie(
        COOKIE, session, max_age=int(max_age), path="/review", httponly=True, samesite="strict"
    )


def me_json(who: Principal) -> dict[str, str | None]:
    """The `/api/me` body."""
    return {"user": who.name, "role": who.role, "csrf_token": who.csrf}
