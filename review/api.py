"""The review tool's JSON API under `/review/api/` (the contract: docs/review-api.md)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from review import actions, export, report, worklist
from review.access import COOKIE, error, guard, me_json, set_session_cookie
from review.accounts import Accounts, TooManyFailuresError
from review.actions import ActionError
from review.images import render_png
from review.store import CaseNotFoundError, CaseStore
from review.upload import upload
from serving.dataplane import DataPlane
from serving.http.errors import http_status_for
from vision.errors import VisionError

MAX_JSON_BYTES = 64 * 1024 * 1024  # a painted mask of a large image, base64
MAX_UPLOAD_BYTES = 512 * 1024 * 1024  # one image file (a multi-frame DICOM can be large)


async def _json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_JSON_BYTES:
        raise ActionError(413, f"body over {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(body or b"{}")
    except ValueError:
        raise ActionError(400, "the body is not JSON") from None


def _case_id(request: Request) -> int:
    return int(request.path_params["case_id"])


def _frame(request: Request, frames: int) -> int:
    text = request.query_params.get("frame", "0")
    if not text.isdigit() or int(text) >= frames:
        raise ActionError(400, f"frame: a whole number from 0 to {frames - 1}")
    return int(text)


def _png(data: bytes | None, missing: str) -> Response:
    if data is None:
        return error(404, missing)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


class ReviewApi:
    """The API endpoints over one store, accounts and data plane."""

    def __init__(self, store: CaseStore, accounts: Accounts, plane: DataPlane | None) -> None:
        self.store, self.accounts, self.plane = store, accounts, plane

    def _db(self, function, *args):
        return run_in_threadpool(function, *args)

    async def login(self, request: Request) -> Response:
        """Sign in: JSON or form `username`, `password`; sets the session cookie.

        A request from another site's page (its Origin is not this host) is refused: no one can
        sign a browser into an account of theirs.
        """
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            return error(403, "sign in from this server's own /review/login page")
        form = request.headers.get("content-type", "").startswith("application/x-www-form")
        body = dict(await request.form()) if form else await _json(request)
        name, password = str(body.get("username", "")), str(body.get("password", ""))
        try:
            signed = await self._db(self.accounts.sign_in, name, password)
        except TooManyFailuresError as exc:
            retry = {"Retry-After": str(int(exc.retry_after_s) + 1)}
            return JSONResponse({"error": str(exc)}, status_code=429, headers=retry)
        if signed is None:
            return error(401, "wrong user name or password")
        session, who = signed
        response = JSONResponse(me_json(who))
        if form:
            response = Response(status_code=303, headers={"Location": "/review/"})
        set_session_cookie(response, session, self.accounts.absolute_s)
        return response

    async def logout(self, request: Request) -> Response:
        """End the session and clear the cookie."""
        who = request.state.principal
        if who.session:
            await self._db(self.accounts.sign_out, who.session)
        response = JSONResponse({"signed_out": who.name})
        response.delete_cookie(COOKIE, path="/review")
        return response

    async def me(self, request: Request) -> Response:
        """Who is signed in, and the session's CSRF token."""
        return JSONResponse(me_json(request.state.principal))

    async def cases(self, request: Request) -> Response:
        """The worklist page."""
        query = worklist.WorklistQuery.from_params(dict(request.query_params))

        def run() -> dict:
            with self.store.db.connect() as conn:
                return worklist.page(conn, query)

        return JSONResponse(await self._db(run))

    async def next_case(self, request: Request) -> Response:
        """The next new case after `after`."""
        after = request.query_params.get("after", "")
        if after and not after.isdigit():
            raise ActionError(400, "after: a case id")

        def run() -> int | None:
            with self.store.db.connect() as conn:
                return worklist.next_case(conn, int(after) if after else None)

        found = await self._db(run)
        return JSONResponse({"id": found}) if found else error(404, "no new case left to review")

    async def case(self, request: Request) -> Response:
        """One case (audited as an `open`)."""
        who = request.state.principal
        return JSONResponse(await self._db(actions.open_case, self.store, _case_id(request), who))

    async def act(self, request: Request) -> Response:
        """One review action; the updated case."""
        body = await _json(request)
        who = request.state.principal
        case = await self._db(actions.apply, self.store, _case_id(request), who, body)
        return JSONResponse(case)

    async def audit(self, request: Request) -> Response:
        """The case's audit trail."""

        def run() -> list:
            with self.store.db.connect() as conn:
                self.store.row(conn, _case_id(request))
                return actions.audit_trail(conn, _case_id(request))

        return JSONResponse(await self._db(run))

    def _image(self, case_id: int) -> dict:
        with self.store.db.connect() as conn:
            return json.loads(self.store.row(conn, case_id)["image"])

    async def pixels(self, request: Request) -> Response:
        """Raw little-endian pixels of one frame (gzip when accepted)."""
        case_id = _case_id(request)
        info = await self._db(self._image, case_id)
        frame = _frame(request, info["frames"])
        gz = "gzip" in request.headers.get("accept-encoding", "")

        def read() -> bytes:
            files = self.store.files(case_id)
            return files.gzip_frame(frame) if gz else files.frame_bytes(frame)

        headers = {
            "X-Width": str(info["width"]),
            "X-Height": str(info["height"]),
            "X-Channels": str(info["channels"]),
            "X-Dtype": info["dtype"],
            "Cache-Control": "private, max-age=60",
            "Vary": "Accept-Encoding",
        }
        if gz:
            headers["Content-Encoding"] = "gzip"
        return Response(
            await self._db(read), media_type="application/octet-stream", headers=headers
        )

    async def image_png(self, request: Request) -> Response:
        """An 8-bit PNG of one frame (the stored window for >8-bit data)."""
        case_id = _case_id(request)
        info = await self._db(self._image, case_id)
        frame = _frame(request, info["frames"])
        files = self.store.files(case_id)
        if frame == 0:
            return _png(await self._db(files.read, "image.png"), f"case {case_id} has no image")
        window = (info["window"]["center"], info["window"]["width"]) if info["window"] else None

        def render() -> bytes:
            return render_png(files.pixels()[frame], window, bool(info.get("invert")))

        return _png(await self._db(render), "")

    async def heatmap(self, request: Request) -> Response:
        """A finding's heat map PNG."""
        case_id, fid = _case_id(request), int(request.path_params["finding_id"])
        data = await self._db(self.store.files(case_id).read, f"heat-{fid}.png")
        return _png(data, f"finding {fid} of case {case_id} has no heat map")

    async def mask(self, request: Request) -> Response:
        """The current mask of a label on `?frame=K` (human when painted, else AI)."""
        case_id, label = _case_id(request), request.path_params["label"]
        frame = _frame(request, (await self._db(self._image, case_id))["frames"])

        def run() -> bytes | None:
            with self.store.db.connect() as conn:
                return self.store.current_mask(conn, case_id, label, frame)

        return _png(await self._db(run), f"case {case_id} has no mask for {label!r} on that frame")

    async def create(self, request: Request) -> Response:
        """Upload an image (`image` file, `model` name): the model runs, the new case comes back."""
        if self.plane is None:
            return error(503, "uploads need the server's data plane (vision serve --review-dir)")
        form = await request.form()
        image, model = form.get("image"), str(form.get("model", ""))
        if image is None or isinstance(image, str) or not model:
            raise ActionError(400, "send multipart fields 'image' (a file) and 'model' (a name)")
        if image.size is not None and image.size > MAX_UPLOAD_BYTES:
            raise ActionError(413, f"the image is over {MAX_UPLOAD_BYTES >> 20} MiB")
        case_id = await upload(self.plane, self.store, await image.read(), model)
        who = request.state.principal

        def run() -> dict:
            with self.store.db.write() as conn:
                actions.audit(conn, case_id, who.name, "upload")
                return self.store.case(conn, case_id)

        return JSONResponse(await self._db(run), status_code=201)

    async def export(self, request: Request) -> Response:
        """Reviewed cases as a training-data zip."""
        options = export.ExportOptions.from_params(dict(request.query_params))
        path = await self._db(export.export_file, self.store, options)
        name = f"review-{options.format}.zip"
        return FileResponse(
            path,
            media_type="application/zip",
            filename=name,
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    async def report(self, request: Request) -> Response:
        """Per-class precision and recall of the model against the reviewed truth."""
        options = report.ReportOptions.from_params(dict(request.query_params))
        return JSONResponse(await self._db(report.build, self.store, options))

    def routes(self) -> list[Route]:
        """The API routes (relative to the `/review` mount)."""
        g = self._guarded
        return [
            Route("/api/login", _handled(self.login), methods=["POST"]),
            Route("/api/logout", g(self.logout), methods=["POST"]),
            Route("/api/me", g(self.me), methods=["GET"]),
            Route("/api/cases", g(self.cases), methods=["GET"]),
            Route("/api/cases", g(self.create), methods=["POST"]),
            Route("/api/cases/next", g(self.next_case), methods=["GET"]),
            Route("/api/cases/{case_id:int}", g(self.case), methods=["GET"]),
            Route("/api/cases/{case_id:int}/actions", g(self.act), methods=["POST"]),
            Route("/api/cases/{case_id:int}/audit", g(self.audit), methods=["GET"]),
            Route("/api/cases/{case_id:int}/pixels", g(self.pixels), methods=["GET"]),
            Route("/api/cases/{case_id:int}/image.png", g(self.image_png), methods=["GET"]),
            Route(
                "/api/cases/{case_id:int}/findings/{finding_id:int}/heatmap.png",
                g(self.heatmap),
                methods=["GET"],
            ),
            Route("/api/cases/{case_id:int}/masks/{label}.png", g(self.mask), methods=["GET"]),
            Route("/api/export", g(self.export), methods=["GET"]),
            Route("/api/report", g(self.report), methods=["GET"]),
        ]

    def _guarded(self, handler):
        return guard(self.accounts, _handled(handler))


def _handled(handler):
    """Map the tool's errors to JSON error responses (domain errors as the rest of the app)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ActionError as exc:
            return error(exc.status, exc.message)
        except (worklist.QueryError, export.ExportError, report.ReportError) as exc:
            return error(400, str(exc))
        except CaseNotFoundError as exc:
            return error(404, str(exc.args[0]))
        except VisionError as exc:
            return error(http_status_for(exc), str(exc))

    return endpoint
