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
from serving.http.auth import ApiKeyMiddleware
from serving.http.errors import EXCEPTION_HANDLERS, UnexpectedErrorMiddleware
from serving.http.kserve_rest import kserve_routes
from serving.metrics import Metrics


def metrics_route(metrics: Metrics) -> Route:
    """GET /metrics: the server's Prometheus registry."""

    async def scrape(request: Request) -> Response:
        content, media_type = metrics.exposition()
        return Response(content, headers={"Content-Type": media_type})

    return Route("/metrics", scrape, methods=["GET"])


def build_http_app(
    plane: DataPlane,
    metrics: Metrics,
    api_key: str = "",
    mounts: Sequence[BaseRoute] = (),
    max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Starlette:
    """The HTTP app: `/metrics`, KServe v2 REST under `/v2`, then `mounts` (e.g. a
    `starlette.routing.Mount("/dicomweb", app)`), all behind the API key when one is set
    (except `/v2/health/*` and `/metrics`, see `serving/http/auth.py`)."""
    middleware = [Middleware(UnexpectedErrorMiddleware)]
    if api_key:
        middleware.insert(0, Middleware(ApiKeyMiddleware, api_key=api_key))
    return Starlette(
        routes=[metrics_route(metrics), *kserve_routes(plane, max_body_bytes), *mounts],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
    )
