"""The review page in a real browser: Playwright's sync API driving Debian's Chromium against a
real server (gRPC + HTTP on loopback) with the review tool, over the tiny explainable models.

Skips, saying why, without /usr/bin/chromium or the playwright package (never `playwright
install`: it downloads a browser build). Screenshots go to reports/review/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from review.settings import CapturePolicy, ReviewSettings
from serving.config import ServerConfig
from tests.serving.conftest import ServerThread
from tests.serving.tiny_models import build_explainable_repository

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = ROOT / "reports" / "review"
PASSWORD = "correct horse battery"
USERS = {"rev1": "reviewer", "rev2": "reviewer", "sup": "supervisor"}


def browser_missing() -> str:
    """Why the browser tests cannot run here ('' when they can)."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing: apt-get install chromium (scripts/setup.sh does, dev extra)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright missing: pip install -e '.[dev]' (never `playwright install`)"
    return ""


class ReviewServer(ServerThread):
    """VisionServer with the review tool (and OHIF + the DICOMweb proxy when the settings name
    a PACS), in a thread with its own event loop; the test users are added once it runs."""

    def __init__(self, config: ServerConfig, review: ReviewSettings):
        super().__init__(
            config, start_timeout_s=180, review=review
        )  # heat maps need explain graphs
        self.review_settings = review

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def tool(self):
        return self.server.review

    def start(self) -> ReviewServer:
        super().start()
        for name, role in USERS.items():
            self.tool.accounts.add_user(name, role, PASSWORD)
        return self


def start_review_server(
    models: Path, data_dir: Path, dicomweb: str | None = None, max_pixels: int = 20_000_000
) -> ReviewServer:
    config = replace(
        ServerConfig(),
        models=models,
        host="127.0.0.1",
        grpc_port=-1,
        http_port=0,
        max_image_pixels=max_pixels,
        drain_timeout_s=5.0,
    )
    settings = ReviewSettings(
        data_dir=data_dir, capture=CapturePolicy.parse(None), dicomweb_url=dicomweb
    )
    return ReviewServer(config, settings).start()


def api_client(server: ReviewServer, user: str) -> httpx.Client:
    """An API client signed in as `user`, its CSRF token in the default headers."""
    client = httpx.Client(base_url=server.url, timeout=120.0)
    answer = client.post("/review/api/login", json={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def upload(client: httpx.Client, model: str, data: bytes, name: str) -> dict:
    """A case made by the tool's own upload (the model runs through the data plane)."""
    answer = client.post("/review/api/cases", files={"image": (name, data)}, data={"model": model})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="package")  # not "session": while Playwright's sync API runs, asyncio sees
def browser():  # a running loop in the main thread, and later tests' asyncio.run() would fail
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_explainable_repository(tmp_path_factory.mktemp("review-browser-models"))


@pytest.fixture(scope="session")
def artefacts() -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS


@pytest.fixture()
def shot(artefacts: Path, request: pytest.FixtureRequest):
    """`shot(page, "step")` saves reports/review/<test>-<step>.png."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page, step: str) -> Path:
        path = artefacts / f"{test}-{step}.png"
        page.screenshot(path=str(path), full_page=False)
        return path

    return take


def new_page(browser, server: ReviewServer):
    """A fresh browser context (own cookies and localStorage) and page on the server."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, base_url=server.url, accept_downloads=True
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # uncaught page exceptions: a test asserts there were none
    return page


def sign_in(page, user: str) -> None:
    """The sign-in form, as a person fills it; ends on the worklist."""
    page.goto("/review/")
    page.wait_for_url(re.compile(r"/review/login"))
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#page-info:text('case(s)')")


def wait_first_image(page) -> float:
    """Wait for the page's `review:first-image` mark; its time since navigation (ms)."""
    page.wait_for_function(
        "performance.getEntriesByName('review:first-image').length > 0", timeout=120_000
    )
    return page.evaluate("performance.getEntriesByName('review:first-image')[0].startTime")


@contextlib.contextmanager
def opened(browser, server: ReviewServer, user: str):
    page = new_page(browser, server)
    try:
        sign_in(page, user)
        yield page
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def review_server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReviewServer]:
    running = start_review_server(models, tmp_path_factory.mktemp("review-browser-data"))
    yield running
    running.stop()
