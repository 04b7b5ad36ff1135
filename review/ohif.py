"""OHIF for DICOM cases: the pinned prebuilt viewer under `/review/ohif/`, same origin.

`scripts/ohif.sh` unpacks `@ohif/app@OHIF_VERSION`'s `dist/` (a build for the site root) into
a cache outside the repository. This module serves that folder under `/review/ohif/`: the
index page and the bundles that carry webpack's public path ("/") are rewritten to the prefix,
unknown paths fall back to the index page (OHIF routes in the browser), and `app-config.js` is
written here, its one data source the DICOMweb proxy at `/review/dicom-web/` on the same
origin. The proxy forwards reads (GET) to the PACS's DICOMweb root (Orthanc's plugin) for
signed-in users only, and turns the PACS's own absolute URLs in its answers into the proxy's.
Without the dist, nothing is mounted: the page's probe of `app-config.js` gets a 404 and the
OHIF link stays hidden.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from functools import lru_cache
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

OHIF_VERSION = "3.13.2"
MOUNT = "/review"  # where ReviewTool mounts its app: the routes below are relative to it
PREFIX = f"{MOUNT}/ohif"
DICOMWEB_PREFIX = f"{MOUNT}/dicom-web"
PUBLIC_PATH = '__webpack_require__.p = "/";'
# Request headers passed on to the PACS; cookies and credentials never leave the server.
FORWARDED = ("accept", "range", "if-none-match", "if-modified-since")
PASSED_BACK = ("content-type", "etag", "last-modified", "content-range", "accept-ranges")
Who = Callable[[Request], Awaitable[object | None]]


def ohif_dist(environ: dict[str, str] | None = None) -> Path | None:
    """The installed dist/ of OHIF_VERSION (`$VISION_OHIF_DIR` or the user cache), or None."""
    env = os.environ if environ is None else environ
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vision" / "ohif"
    base = Path(env["VISION_OHIF_DIR"]) if env.get("VISION_OHIF_DIR") else cache
    dist = base / OHIF_VERSION / "dist"
    return dist if (dist / "index.html").is_file() else None


def app_config(dicomweb_root: str = DICOMWEB_PREFIX) -> str:
    """OHIF's `app-config.js`: routes under PREFIX, one DICOMweb source at `dicomweb_root`."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "pacs",
        "configuration": {
            "friendlyName": "PACS (through the review tool)",
            "name": "pacs",
            "wadoUriRoot": dicomweb_root,
            "qidoRoot": dicomweb_root,
            "wadoRoot": dicomweb_root,
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "omitQuotationForMultipartRequest": True,
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        },
    }
    config = {
        "routerBasename": PREFIX,
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "defaultDataSourceName": "pacs",
        "investigationalUseDialog": {"option": "never"},
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


def _rewrite_index(text: str) -> str:
    text = re.sub(r'((?:href|src)=")/(?!/)', rf"\1{PREFIX}/", text)
    return text.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}/"')


@lru_cache(maxsize=64)
def _rewritten(path: Path, mtime: float) -> bytes | None:
    """The file with the prefix written in, or None when it needs no rewrite (then streamed)."""
    if path.name == "index.html":
        return _rewrite_index(path.read_text(encoding="utf-8")).encode()
    if path.suffix == ".css":
        text = path.read_text(encoding="utf-8")
        return re.sub(r"url\(/(?!/)", f"url({PREFIX}/", text).encode()
    if path.suffix != ".js" or path.stat().st_size > 64 * 1024 * 1024:
        return None
    data = path.read_bytes()
    if PUBLIC_PATH.encode() not in data:
        return None
    return data.replace(PUBLIC_PATH.encode(), f'__webpack_require__.p = "{PREFIX}/";'.encode())


def _resolve(dist: Path, rel: str) -> Path | None:
    """The file under `dist` for a URL path, never outside it; None when absent."""
    candidate = (dist / rel).resolve()
    if not candidate.is_relative_to(dist.resolve()) or not candidate.is_file():
        return None
    return candidate


def _media_type(path: Path) -> str:
    if path.suffix == ".wasm":
        return "application/wasm"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _serve(path: Path, cache: bool) -> Response:
    body = _rewritten(path, path.stat().st_mtime)
    headers = {"Cache-Control": "public, max-age=86400" if cache else "no-cache"}
    if body is None:
        return FileResponse(path, media_type=_media_type(path), headers=headers)
    return Response(body, media_type=_media_type(path), headers=headers)


def ohif_routes(dist: Path, who: Who, base: str = MOUNT) -> list[BaseRoute]:
    """`/review/ohif/...`: the viewer's files, its config, and the index for its routes.

    `who(request)` is the signed-in principal or None: the viewer's pages send the browser to
    the sign-in page first; its static files are served to anyone (they hold no data).
    Paths are relative to `base`: the tool's mount (`/review`), or "" on the server's app.
    """

    async def config(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache"}
        return Response(app_config(), media_type="application/javascript", headers=headers)

    async def files(request: Request) -> Response:
        rel = request.path_params.get("path", "")
        found = _resolve(dist, rel) if rel else None
        if found is not None and found.name != "index.html":
            return _serve(found, cache="bundle" in found.name or found.suffix == ".wasm")
        if await who(request) is None:
            back = urllib.parse.quote(
                request.url.path + ("?" + request.url.query if request.url.query else "")
            )
            return RedirectResponse(f"/review/login?next={back}", status_code=303)
        return _serve(dist / "index.html", cache=False)

    rel = PREFIX.removeprefix(base)
    return [
        Route(f"{rel}/app-config.js", config, methods=["GET", "HEAD"]),
        Route(rel, files, methods=["GET", "HEAD"]),
        Route(f"{rel}/{{path:path}}", files, methods=["GET", "HEAD"]),
    ]


def _upstream_request(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def dicomweb_proxy(upstream: str, who: Who, base: str = MOUNT) -> list[BaseRoute]:
    """`GET /review/dicom-web/...` → `upstream` (the PACS's DICOMweb root), signed-in only.

    Answers keep their status, type and body; the PACS's absolute URLs (BulkDataURI,
    RetrieveURL) in JSON answers are rewritten to this proxy's, so the browser only ever
    talks to this origin.
    """
    root = upstream.rstrip("/")

    async def forward(request: Request) -> Response:
        if await who(request) is None:
            return Response(
                json.dumps({"error": "sign in at /review/login to read studies"}),
                status_code=401,
                media_type="application/json",
            )
        rel = request.path_params.get("path", "")
        url = f"{root}/{rel}" + (f"?{request.url.query}" if request.url.query else "")
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        try:
            status, got, body = await run_in_threadpool(_upstream_request, url, headers)
        except OSError as error:
            message = f"the PACS's DICOMweb at {root} does not answer ({type(error).__name__})"
            return Response(json.dumps({"error": message}), 502, media_type="application/json")
        lowered = {k.lower(): v for k, v in got.items()}
        if "json" in lowered.get("content-type", ""):
            mine = f"{request.url.scheme}://{request.url.netloc}{DICOMWEB_PREFIX}"
            body = body.replace(root.encode(), mine.encode())
        passed = {k: lowered[k] for k in PASSED_BACK if k in lowered}
        return Response(body, status_code=status, headers=passed)

    rel = DICOMWEB_PREFIX.removeprefix(base)
    return [Route(f"{rel}/{{path:path}}", forward, methods=["GET", "HEAD"])]


def viewer_routes(
    accounts: Callable[[], object],
    dicomweb_upstream: str | None,
    dist: Path | None = None,
    base: str = MOUNT,
) -> list[BaseRoute]:
    """OHIF (when its dist is installed) and the DICOMweb proxy, for `ReviewTool(extra_routes=)`.

    `accounts()` gives the tool's `review.accounts.Accounts` at request time (the tool makes it
    after its routes are given: `tool = ReviewTool(s, viewer_routes(lambda: tool.accounts,
    url))`). `dicomweb_upstream` is the PACS's DICOMweb root, e.g. Orthanc's
    `http://127.0.0.1:8042/dicom-web`; without one, neither OHIF nor the proxy is mounted.
    `base`: "/review" inside the tool's mount, "" for `VisionServer(http_mounts=...)`, where
    they come before the tool's mount.
    """
    from review.access import principal_of

    async def who(request: Request) -> object | None:
        return await principal_of(request, accounts())  # type: ignore[arg-type]

    dist = dist or ohif_dist()
    if not dicomweb_upstream:
        return []
    viewer = ohif_routes(dist, who, base) if dist is not None else []
    return [*viewer, *dicomweb_proxy(dicomweb_upstream, who, base)]
