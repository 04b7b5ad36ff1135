"""The image and DICOM decoders in-process under hypothesis: every input decodes or is refused
with a documented status (INVALID_ARGUMENT / RESOURCE_EXHAUSTED), never another exception, and
no refusal or warning carries the patient marker the DICOM inputs hold."""

from __future__ import annotations

import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.rpc.interceptors import status_for
from tests.fuzz.dicom_bytes import PHI
from tests.fuzz.reproducers import MAX_PIXELS
from tests.fuzz.strategies import decoder_inputs, dicom_files
from vision.errors import VisionError
from vision.io import decode_frames, decode_image
from vision.io.dicom_file import read_part10

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
DOCUMENTED = {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}


def _check(decode, data: bytes) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            decode(data)
        except VisionError as exc:
            assert status_for(exc).name in DOCUMENTED, exc
            assert PHI not in str(exc)
    assert not [w for w in caught if PHI in str(w.message)]


@FUZZ
@given(decoder_inputs())
def test_decode_image_decodes_or_refuses(data: bytes) -> None:
    _check(lambda d: decode_image(d, max_pixels=MAX_PIXELS), data)


@FUZZ
@given(dicom_files(), st.booleans())
def test_every_frame_path_decodes_or_refuses(data: bytes, window: bool) -> None:
    """The DICOM node's path: a parsed data set, every frame (`decode_frames`)."""
    _check(lambda d: decode_frames(read_part10(d, MAX_PIXELS), MAX_PIXELS, window), data)
