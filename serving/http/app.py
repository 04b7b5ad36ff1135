"""The one HTTP application on the HTTP port: Prometheus `/metrics`, KServe v2 REST, and room
for more mounts (DICOMweb at `/dicomweb`, the review tool at `/review`).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from serving.config import DEFAULT_MAX_MESSAGE_BYTES
from serving.dataplane import DataPlane
from serving.http.auth import AuthMiddleware
from serving.http.errors import EXCEPTION_HANDLERS, UnexpectedErrorMiddleware
from serving.http.kserve_rest import kserve_routes
from serving.metrics import Metrics
from serving.security.guard import Guard
from serving.security.policy import KSERVE_RULES, HttpRule, metrics_rules
from serving.shared_memory import SharedMemoryRegistry


def metrics_route(metrics: Metrics) -> Route:
    """GET /metrics: the server's Prometheus registry."""

    async def scrape(request: Request) -> Response:
        content, media_type = metrics.exposition()
        return Response(content, headers={"Content-Type": media_type})

    return Route("/metrics", scrape, methods=["GET"])


def build_http_app(
    plane: DataPlane,
    metrics: Metrics,
    mounts: Sequence[BaseRoute] = (),
    max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    guard: Guard | None = None,
    metrics_mode: str = "public",
    mount_rules: Sequence[HttpRule] = (),
    shared_memory: SharedMemoryRegistry | None = None,
) -> Starlette:
    """The HTTP app: `/metrics` (unless `metrics_mode` is `off`), KServe v2 REST under `/v2`,
    then `mounts` (e.g. a `starlette.routing.Mount("/dicomweb", app)`).

    With a `guard` that has tokens or a rate limit, every request is checked first against the
    KServe rules, `/metrics` under `metrics_mode` (`public`, `token`: role `metrics`) and the
    `mount_rules` that cover `mounts` (see `serving/http/auth.py`). `shared_memory` holds the
    system shared-memory regions (shared with the gRPC API)."""
    rules = (*metrics_rules(metrics_mode), *KSERVE_RULES, *mount_rules)
    middleware = [Middleware(UnexpectedErrorMiddleware)]
    if guard is not None and (guard.enabled or guard.limiter is not None):
        middleware.insert(0, Middleware(AuthMiddleware, guard=guard, rules=rules))
    routes = [metrics_route(metrics)] if metrics_mode != "off" else []
    return Starlette(
        routes=[*routes, *kserve_routes(plane, max_body_bytes, shared_memory), *mounts],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
    )
