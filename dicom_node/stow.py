"""DICOMweb STOW-RS (PS3.18 10.5): `POST /dicomweb/studies[/{study}]`, into the same spool.

The body is `multipart/related; type="application/dicom"`, each part a DICOM Part-10 file. Each
instance is checked (SOP class and transfer syntax as for C-STORE, the study when the URL names
one), spooled durably with calling AE "STOW", then handed to `on_instance`. The answer is the
PS3.18 Store Instances Response Module as `application/dicom+json`: ReferencedSOPSequence
(0008,1199) and FailedSOPSequence (0008,1198) with a Failure Reason (0008,1197) per failed part;
200 all stored, 202 some stored, 409 none stored, 415 not multipart/related application/dicom,
400 a body that is not multipart, 413 a body over the limit.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dicom_node.model import SpooledInstance
from dicom_node.spool import Spool
from dicom_node.syntaxes import unsupported_reason
from vision.errors import InvalidInputError

log = logging.getLogger(__name__)

STOW_CALLING_AE = "STOW"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024 * 1024
MEDIA_TYPE = "application/dicom+json"
# Failure reasons: PS3.4 storage statuses, as PS3.18 10.5.3 uses them.
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"]*)"|[^;\s]+)')


@dataclass
class _Outcome:
    sop_class: str
    sop_instance: str
    failure: int | None = None


class _BodyTooLargeError(Exception):
    """The request body is over the STOW-RS limit."""


def _media_params(content_type: str) -> tuple[str, dict[str, str]]:
    kind = content_type.split(";", 1)[0].strip().lower()
    params = {k.lower(): v.strip('"') for k, v in _PARAM.findall(content_type)}
    return kind, params


def _acceptable(content_type: str) -> str | None:
    """The multipart boundary, or None when the body is not multipart/related DICOM."""
    kind, params = _media_params(content_type)
    if kind != "multipart/related" or params.get("type", "").lower() != "application/dicom":
        return None
    return params.get("boundary", "")


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The bodies of the parts of a multipart body whose part type is application/dicom.

    Raises InvalidInputError when the body has no part or no closing delimiter.
    """
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise InvalidInputError("multipart body without parts or closing delimiter")
    parts = []
    for chunk in chunks[1:-1]:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidInputError("multipart part without a header block")
        parts.append(_checked_part(head, content))
    return parts


def _checked_part(head: bytes, content: bytes) -> bytes:
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            kind, _ = _media_params(value)
            if kind != "application/dicom":
                return b""  # not a DICOM part: refused as that instance
    return content


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLargeError
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(part: bytes) -> Dataset:
    if not part:
        raise InvalidInputError("part is not application/dicom")
    try:
        return pydicom.dcmread(io.BytesIO(part))
    except Exception as exc:  # pydicom raises many types; the message may hold values
        raise InvalidInputError(f"part is not a DICOM file ({type(exc).__name__})") from exc


def _failure(ds: Dataset, study: str | None) -> int | None:
    syntax = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
    reason = unsupported_reason(str(ds.get("SOPClassUID", "")), syntax)
    if reason is not None:
        return reason
    if study is not None and str(ds.get("StudyInstanceUID", "")) != study:
        return DATASET_MISMATCH
    return None


def _store_part(
    part: bytes, study: str | None, spool: Spool, on_instance: Callable[[SpooledInstance], None]
) -> _Outcome:
    """Check, spool and hand over one part (blocking: runs in a worker thread)."""
    try:
        ds = _parse(part)
    except InvalidInputError as exc:
        log.warning("STOW-RS part refused: %s", exc)
        return _Outcome("", "", CANNOT_UNDERSTAND)
    outcome = _Outcome(str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    outcome.failure = _failure(ds, study)
    if outcome.failure is None:
        outcome.failure = _spool_one(ds, spool, on_instance)
    if outcome.failure is not None:
        log.warning(
            "STOW-RS instance refused: %s, reason 0x%04X", outcome.sop_class, outcome.failure
        )
    return outcome


def _spool_one(
    ds: Dataset, spool: Spool, on_instance: Callable[[SpooledInstance], None]
) -> int | None:
    syntax = str(ds.file_meta.TransferSyntaxUID)
    try:
        instance = spool.store(ds, STOW_CALLING_AE, syntax)
    except InvalidInputError as exc:
        log.warning("STOW-RS instance refused: %s", exc)
        return CANNOT_UNDERSTAND
    except Exception as exc:  # disk full, I/O error: never success
        log.error("STOW-RS spool write failed (%s)", type(exc).__name__)
        return OUT_OF_RESOURCES
    try:
        on_instance(instance)
    except Exception:
        log.exception("STOW-RS instance %s stored but not taken in", instance.sop_instance_uid)
        return PROCESSING_FAILURE
    return None


def _item(outcome: _Outcome) -> dict[str, object]:
    item: dict[str, object] = {}
    if outcome.sop_class:
        item["00081150"] = {"vr": "UI", "Value": [outcome.sop_class]}
    if outcome.sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [outcome.sop_instance]}
    if outcome.failure is not None:
        item["00081197"] = {"vr": "US", "Value": [outcome.failure]}
    return item


def _response(outcomes: list[_Outcome]) -> JSONResponse:
    """The Store Instances Response (200 all stored, 202 some, 409 none).

    No Retrieve URL: the node stores for processing and serves no WADO-RS.
    """
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, object] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_item(o) for o in stored]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_item(o) for o in failed]}
    status = 200 if not failed else 202 if stored else 409
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def stow_routes(
    spool: Spool,
    on_instance: Callable[[SpooledInstance], None],
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> list[BaseRoute]:
    """`POST /dicomweb/studies` and `POST /dicomweb/studies/{study}` (STOW-RS)."""

    async def store(request: Request) -> Response:
        boundary = _acceptable(request.headers.get("content-type", ""))
        if boundary is None:
            return _error(415, 'send multipart/related; type="application/dicom"')
        if not boundary:
            return _error(400, "multipart/related without a boundary parameter")
        try:
            body = await _read_body(request, max_body_bytes)
            parts = split_multipart(body, boundary)
        except _BodyTooLargeError:
            return _error(413, f"body over the STOW-RS limit of {max_body_bytes} bytes")
        except InvalidInputError as exc:
            return _error(400, str(exc))
        study = request.path_params.get("study")
        outcomes = [
            await run_in_threadpool(_store_part, part, study, spool, on_instance) for part in parts
        ]
        return _response(outcomes)

    return [
        Route("/dicomweb/studies", store, methods=["POST"]),
        Route("/dicomweb/studies/{study}", store, methods=["POST"]),
    ]
