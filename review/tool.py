"""The review tool composed: database, accounts, cases, the recorder and the HTTP app.

`ReviewTool(settings).attach(plane)` hears the data plane's results (capture policy) and
`routes()` is the `Mount("/review", ...)` for `VisionServer(http_mounts=...)`: the JSON API
(`review/api.py`), the sign-in page, the page's static files (`review/static/`) and the page
itself, which redirects to the sign-in page without a live session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from review.access import error, principal_of
from review.accounts import Accounts
from review.api import ReviewApi
from review.capture import Recorder
from review.db import Database
from review.settings import ReviewSettings
from review.store import CaseStore
from serving.dataplane import DataPlane

HERE = Path(__file__).parent
STATIC = HERE / "static"
LOGIN_PAGE = HERE / "templates" / "login.html"


class ReviewTool:
    """The review tool over one data dir; `attach` it to a data plane to capture results."""

    def __init__(self, settings: ReviewSettings, extra_routes: Sequence[BaseRoute] = ()) -> None:
        self.settings = settings
        self.db = Database(settings.database)
        self.accounts = Accounts(self.db, settings.idle_s, settings.absolute_s)
        self.store = CaseStore(self.db, settings.data_dir)
        self.plane: DataPlane | None = None
        self.recorder: Recorder | None = None
        self._extra = tuple(extra_routes)
        if settings.dicomweb_url:
            from review.ohif import viewer_routes

            self._extra += tuple(viewer_routes(lambda: self.accounts, settings.dicomweb_url))

    def attach(self, plane: DataPlane) -> ReviewTool:
        """Record the plane's results as cases (capture policy) and run uploads through it."""
        self.plane = plane

        def config_of(name: str, version: str):
            return plane.model_info(name, version).config

        self.recorder = Recorder(
            self.store,
            self.settings.capture,
            config_of,
            self.settings.queue_size,
            registry=plane.metrics.registry,
        )
        plane.add_result_observer(self.recorder)
        return self

    def close(self) -> None:
        """Write what the recorder has queued and stop it."""
        if self.recorder is not None:
            self.recorder.close()

    async def _login_page(self, request: Request) -> Response:
        page = STATIC / "login.html" if (STATIC / "login.html").is_file() else LOGIN_PAGE
        return HTMLResponse(page.read_text(), headers={"Cache-Control": "no-store"})

    async def _index(self, request: Request) -> Response:
        if await principal_of(request, self.accounts) is None:
            return RedirectResponse("/review/login", status_code=303)
        page = STATIC / "index.html"
        if not page.is_file():
            return error(503, f"the review page is not installed ({page} missing)")
        return FileResponse(page, headers={"Cache-Control": "no-store"})

    def app(self) -> Starlette:
        """The ASGI app mounted at /review."""
        api = ReviewApi(self.store, self.accounts, self.plane)
        routes = [
            Route("/", self._index, methods=["GET"]),
            Route("/login", self._login_page, methods=["GET"]),
            *api.routes(),
            *self._extra,
            Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"),
        ]
        return Starlette(routes=routes)

    def routes(self) -> list[BaseRoute]:
        """`Mount("/review", ...)` for the server's HTTP app."""

        async def to_slash(request: Request) -> Response:
            return RedirectResponse("/review/", status_code=307)

        return [Route("/review", to_slash, methods=["GET"]), Mount("/review", app=self.app())]
