"""A DICOM case opens in OHIF (the pinned prebuilt viewer, same origin under /review/ohif/),
reading a real Orthanc through the tool's DICOMweb proxy; the study holds the source image and
our SEG (the tool's own `dicom-seg` export of the reviewed case), and OHIF shows the SEG: its
series in the study browser, the overlay drawn on the image (segment-coloured pixels appear),
the segment label in the segmentation panel.

Skips without Orthanc (+ its DICOMweb plugin), without the OHIF dist (scripts/ohif.sh), or
without the browser.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from review.ohif import OHIF_VERSION, ohif_dist
from tests.dicom_node.orthanc import Orthanc, orthanc_missing, running_orthanc
from tests.review_browser.conftest import (
    ReviewServer,
    api_client,
    new_page,
    sign_in,
    start_review_server,
    upload,
    wait_first_image,
)
from tests.review_browser.images import ct_dicom
from tests.review_browser.pages import open_case

SEGMENT = "bright"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if ohif_dist() is None:
        pytest.skip(f"OHIF {OHIF_VERSION} not installed: run scripts/ohif.sh (needs npm)")
    if orthanc_missing():
        pytest.skip(orthanc_missing())
    with running_orthanc(tmp_path_factory.mktemp("review-orthanc")) as running:
        yield running


@pytest.fixture(scope="module")
def ohif_server(models: Path, pacs: Orthanc, tmp_path_factory) -> Iterator[ReviewServer]:
    data = tmp_path_factory.mktemp("review-ohif-data")
    running = start_review_server(models, data, dicomweb=f"{pacs.url}/dicom-web")
    yield running
    running.stop()


def reddish(png: bytes) -> int:
    """Pixels of a screenshot where red clearly dominates (OHIF's first segment colour)."""
    rgb = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 0] - rgb[..., 1] > 40) & (rgb[..., 0] - rgb[..., 2] > 40)).sum())


def reviewed_study(server: ReviewServer, pacs: Orthanc) -> dict:
    """Upload a CT, review it (accept, finish), export it as DICOM SEG, store both in Orthanc."""
    source = ct_dicom(256, seed=4)
    with contextlib.closing(api_client(server, "rev1")) as client:
        case = upload(client, "bright-x", source, "ct.dcm")
        for body in ({"action": "claim"}, {"action": "finish"}):
            answer = client.post(f"/review/api/cases/{case['id']}/actions", json=body)
            assert answer.status_code == 200, answer.text
        export = client.get("/review/api/export", params={"format": "dicom-seg"})
    assert export.status_code == 200, export.text
    archive = zipfile.ZipFile(io.BytesIO(export.content))
    segs = [n for n in archive.namelist() if n.endswith(".dcm")]
    assert segs, f"the dicom-seg export has no SEG: {archive.namelist()}"
    seg = pydicom.dcmread(io.BytesIO(archive.read(segs[0])))
    assert seg.Modality == "SEG"
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert SEGMENT in labels, labels
    pacs.upload(source)
    pacs.upload(archive.read(segs[0]))
    return case


def test_dicom_case_opens_in_ohif_with_our_seg(browser, ohif_server, pacs, shot):
    case = reviewed_study(ohif_server, pacs)
    study = case["image"]["study_uid"]
    page = new_page(browser, ohif_server)
    try:
        sign_in(page, "rev1")
        open_case(page, case["id"])
        wait_first_image(page)
        link = page.locator("#open-ohif")
        link.wait_for()
        assert link.get_attribute("href") == f"/review/ohif/viewer?StudyInstanceUIDs={study}"
        shot(page, "1-case")
        with page.context.expect_page() as popup:
            link.click()
        ohif = popup.value
        failed = []
        ohif.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        ohif.wait_for_url(re.compile(r"/review/ohif/viewer"))
        seg_thumb = ohif.get_by_text("SEG", exact=True).first
        seg_thumb.wait_for(timeout=180_000)
        with contextlib.suppress(Exception):  # the first-visit tour, when it shows
            ohif.get_by_text("Skip all").click(timeout=10_000)
        viewport = ohif.locator("[data-cy=viewport-pane]").first
        ohif.locator("[data-cy=viewport-overlay-bottom-left]").get_by_text("W:").wait_for()
        ohif.wait_for_timeout(1000)
        without_seg = reddish(viewport.screenshot())
        seg_thumb.dblclick()
        with contextlib.suppress(Exception):  # "Do you want to open this Segmentation?"
            ohif.get_by_role("button", name="Yes").click(timeout=30_000)
        ohif.locator("[data-cy=panelSegmentation-btn]").click()
        ohif.get_by_text(SEGMENT, exact=True).first.wait_for(timeout=120_000)
        ohif.wait_for_timeout(1000)
        with_seg = reddish(viewport.screenshot())
        shot(ohif, "2-ohif-seg")
        # The overlay is drawn: the segment's colour covers part of the image now.
        assert with_seg > without_seg + 500, (without_seg, with_seg)
        assert not [u for u in failed if "/review/" in u], failed
    finally:
        page.context.close()


def test_ohif_needs_a_session_and_proxies_only_reads(browser, ohif_server, pacs):
    page = new_page(browser, ohif_server)
    try:
        page.goto("/review/ohif/viewer?StudyInstanceUIDs=1.2.3")
        page.wait_for_url(re.compile(r"/review/login\?next=/review/ohif/viewer"))
        answer = page.request.get("/review/dicom-web/studies")
        assert answer.status == 401
        sign_in(page, "rev2")
        assert page.request.get("/review/dicom-web/studies").status == 200
        stored = len(pacs.get("/instances"))
        refused = page.request.post("/review/dicom-web/studies", data=b"x")
        assert refused.status in (404, 405), "the proxy forwards reads only"
        assert len(pacs.get("/instances")) == stored
    finally:
        page.context.close()
