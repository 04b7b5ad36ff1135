"""Replay the corpus: every input that once broke the server gets its documented status.

In-process through `vision.io.decode_image` (image files), and through a real server: each
file to the API its manifest row names. No reply, log line or warning may carry the patient
marker the malformed files hold.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from serving.rpc.interceptors import status_for
from tests.fuzz.dicom_bytes import PHI
from tests.fuzz.reproducers import CORPUS, MAX_PIXELS, REPRODUCERS
from tests.fuzz.targets import Clients
from vision.errors import VisionError
from vision.io import decode_image

ROWS = json.loads((CORPUS / "manifest.json").read_text())


def _id(row: dict) -> str:
    return row["file"].removesuffix(".bin")


def test_every_reproducer_is_in_the_corpus() -> None:
    assert sorted(_id(row) for row in ROWS) == sorted(r.name for r in REPRODUCERS)
    assert all((CORPUS / row["file"]).is_file() for row in ROWS)


@pytest.mark.parametrize("row", [r for r in ROWS if r["api"] == "image"], ids=_id)
def test_decoder_gives_the_documented_status(row: dict) -> None:
    data = (CORPUS / row["file"]).read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            decode_image(data, max_pixels=MAX_PIXELS)
            status, message = "OK", ""
        except VisionError as exc:
            status, message = status_for(exc).name, str(exc)
    assert status in row["expected"], message
    assert PHI not in message
    assert not [w for w in caught if PHI in str(w.message)]


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_server_answers_the_documented_status(
    row: dict, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    data = Path(CORPUS / row["file"]).read_bytes()
    with caplog.at_level(logging.DEBUG):
        outcome = clients.send(row["api"], data, row["model"], row["headers"])
    assert outcome.status in row["expected"], outcome.message
    assert outcome.status == "OK" or outcome.message, "a refusal says what to fix"
    assert PHI not in outcome.message
    assert PHI not in caplog.text
