"""review/ohif.py without a browser: the dist served under /review/ohif/ with the prefix written
into the index page, webpack's public path and CSS URLs; the config pointing at the proxy; the
sign-in redirect for pages; no escape from the dist folder; the proxy's URL rewriting and its
refusal without a session. The DICOMweb upstream is a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from review.ohif import OHIF_VERSION, app_config, dicomweb_proxy, ohif_dist, ohif_routes

ROOT = Path(__file__).resolve().parents[2]
INDEX = (
    '<html><head><script>window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json"><script src="/app-config.js"></script>'
    '<script defer src="/app.bundle.1.js"></script></head><body></body></html>'
)
BUNDLE = '(() => {\n__webpack_require__.p = "/";\n})();\n'


@pytest.fixture()
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    folder.mkdir()
    (folder / "index.html").write_text(INDEX)
    (folder / "app.bundle.1.js").write_text(BUNDLE)
    (folder / "app.bundle.css").write_text("@font-face{src:url(/font.woff2)}")
    (folder / "x.wasm").write_bytes(b"\0asm")
    (tmp_path / "secret.txt").write_text("outside the dist")
    return folder


def client_for(routes, signed_in: bool) -> TestClient:
    async def who(request):
        return object() if signed_in else None

    return TestClient(Starlette(routes=routes(who)), follow_redirects=False)


def test_dist_served_under_the_prefix(dist: Path):
    client = client_for(lambda who: ohif_routes(dist, who, base=""), signed_in=True)
    page = client.get("/review/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 200
    assert 'window.PUBLIC_URL="/review/ohif/"' in page.text
    assert 'src="/review/ohif/app.bundle.1.js"' in page.text
    assert 'href="/review/ohif/manifest.json"' in page.text
    bundle = client.get("/review/ohif/app.bundle.1.js")
    assert '__webpack_require__.p = "/review/ohif/";' in bundle.text
    assert "url(/review/ohif/font.woff2)" in client.get("/review/ohif/app.bundle.css").text
    assert client.get("/review/ohif/x.wasm").headers["content-type"] == "application/wasm"
    config = client.get("/review/ohif/app-config.js")
    assert config.headers["content-type"].startswith("application/javascript")
    assert '"wadoRoot": "/review/dicom-web"' in config.text
    assert '"routerBasename": "/review/ohif"' in config.text
    escaped = client.get("/review/ohif/..%2Fsecret.txt")
    assert "outside the dist" not in escaped.text


def test_pages_need_a_session(dist: Path):
    client = client_for(lambda who: ohif_routes(dist, who, base=""), signed_in=False)
    page = client.get("/review/ohif/viewer?StudyInstanceUIDs=1.2.3")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/review/login?next=/review/ohif/viewer")
    assert client.get("/review/ohif/app.bundle.1.js").status_code == 200  # no data in it


def test_config_is_valid_javascript_object():
    text = app_config("/review/dicom-web")
    body = text.removeprefix("window.config = ").rstrip().removesuffix(";")
    config = json.loads(body)
    (source,) = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    assert source["configuration"]["qidoRoot"] == "/review/dicom-web"


class _Pacs(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        host = self.server.server_address
        base = f"http://{host[0]}:{host[1]}/dicom-web"
        body = json.dumps([{"url": f"{base}/studies/1/bulk/2", "cookie": self.headers["Cookie"]}])
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def pacs() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pacs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    server.shutdown()


def test_proxy_rewrites_pacs_urls_and_keeps_cookies(pacs: str):
    client = client_for(lambda who: dicomweb_proxy(pacs, who, base=""), signed_in=True)
    answer = client.get("/review/dicom-web/studies", headers={"Cookie": "review_session=s"})
    assert answer.status_code == 200
    (item,) = answer.json()
    assert item["url"] == "http://testserver/review/dicom-web/studies/1/bulk/2"
    assert item["cookie"] is None, "the session cookie went to the PACS"
    refused = client_for(lambda who: dicomweb_proxy(pacs, who, base=""), signed_in=False)
    assert refused.get("/review/dicom-web/studies").status_code == 401


def test_installed_dist_matches_the_pin():
    dist = ohif_dist()
    if dist is None:
        pytest.skip(f"OHIF {OHIF_VERSION} not installed: run scripts/ohif.sh (needs npm)")
    assert dist.parent.name == OHIF_VERSION
    script = (ROOT / "scripts" / "ohif.sh").read_text()
    assert "review/ohif.py" in script, "scripts/ohif.sh reads the pin from review/ohif.py"
