"""Tokens, roles and rate limits on the HTTP port (`Authorization: Bearer <token>`).

Every request is matched against the access rules (`serving/security/policy.py` plus those the
composition root gives for its mounts) and judged by the same `Guard` as gRPC: 401 without or
with an unknown token, 403 for a token without the route's role (or a route with no rule),
429 over the rate limit. `/v2/health/live` and `/v2/health/ready` stay open and name no model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.http.errors import error_response
from serving.security.guard import Call, Guard, Outcome, Verdict
from serving.security.policy import HttpRule, http_rule, normalised_path

STATUS = {
    Outcome.UNAUTHENTICATED: 401,
    Outcome.PERMISSION_DENIED: 403,
    Outcome.RATE_LIMITED: 429,
}
BAD_PATH = "the path has an empty, '.' or '..' segment: send the route's plain path"


def _headers(verdict: Verdict) -> dict[str, str]:
    if verdict.outcome is Outcome.UNAUTHENTICATED:
        return {"WWW-Authenticate": "Bearer"}
    if verdict.outcome is Outcome.RATE_LIMITED:
        return {"Retry-After": str(max(1, math.ceil(verdict.retry_after_s)))}
    return {}


class AuthMiddleware:
    """Answers 401 / 403 / 429 unless `guard` lets the request through under `rules`."""

    def __init__(self, app: ASGIApp, guard: Guard, rules: Sequence[HttpRule]) -> None:
        self.app = app
        self.guard = guard
        self.rules = tuple(rules)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass lifespan events and allowed requests on; refuse the others."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = normalised_path(scope["path"])
        if path is None:
            await self._refuse(scope, receive, send, 400, BAD_PATH, {})
            return
        verdict = await self._check(self._call(scope, path))
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        status = STATUS[verdict.outcome]
        await self._refuse(scope, receive, send, status, verdict.message, _headers(verdict))

    def _call(self, scope: Scope, path: str) -> Call:
        """The call as the guard sees it. Its target is the rule's pattern, never the path
        itself (a path can carry a study UID or anything a client put in it)."""
        method = scope.get("method", "GET")
        found = http_rule(self.rules, method, path)
        values = [value for key, value in scope["headers"] if key == b"authorization"]
        client = scope.get("client") or ("unknown", 0)
        if found is None:
            return Call("http", f"{method} (no rule)", None, values, str(client[0]))
        target = f"{method} {found.path}"
        return Call("http", target, found.access, values, str(client[0]), found.model(path))

    async def _check(self, call: Call) -> Verdict:
        if self.guard.store.has_slow_entries:  # scrypt: keep it off the event loop
            return await run_in_threadpool(self.guard.check, call)
        return self.guard.check(call)

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict
    ) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await error_response(status, message, headers)(scope, receive, send)
