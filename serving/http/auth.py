"""Optional API key on the HTTP port: `Authorization: Bearer KEY`, except on open paths."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.http.errors import error_response

# Probes and scrapers carry no secret: liveness, readiness and Prometheus stay open, as gRPC
# health does. Exact paths, so no prefix trick reaches anything else.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
DENIED = "missing or wrong API key: send header 'Authorization: Bearer <key>'"


class ApiKeyMiddleware:
    """Answers 401 unless the request carries the key (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass lifespan events and authorised requests on; deny others (401 or websocket close)."""
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": DENIED})
        else:
            response = error_response(401, DENIED, {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if scope["path"] in OPEN_PATHS:
            return True
        given = [value for key, value in scope["headers"] if key == b"authorization"]
        return len(given) == 1 and hmac.compare_digest(given[0], self._expected)
