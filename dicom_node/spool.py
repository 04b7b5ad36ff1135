"""The spool: received instances as DICOM Part-10 files, durable before they are acknowledged.

Layout `root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`. A write goes to a
temporary file in the same folder, is fsynced, renamed over the final name (`os.replace`, atomic)
and the folder is fsynced, so after `store` returns the instance survives a crash or `kill -9`.
Re-receiving the same SOP Instance replaces its file (idempotent). UIDs are checked before they
become path parts: digits and dots, at most 64 characters, nothing else (no traversal).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicom_node.model import SpooledInstance
from vision.errors import InvalidInputError

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SUFFIX = ".dcm"
_TEMP_PREFIX = ".incoming-"
_STALE_TEMP_S = 300.0


def valid_uid(value: object) -> str:
    """`value` as a UID string, or InvalidInputError (digits and dots, at most 64 characters)."""
    text = str(value or "").strip().rstrip("\x00")
    if len(text) > 64 or not _UID.match(text):
        raise InvalidInputError(f"not a valid UID ({len(text)} characters): refused")
    return text


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_meta(ds: Dataset, transfer_syntax: str, calling_ae: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(valid_uid(ds.get("SOPClassUID")))
    meta.MediaStorageSOPInstanceUID = UID(valid_uid(ds.get("SOPInstanceUID")))
    meta.TransferSyntaxUID = UID(valid_uid(transfer_syntax))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if calling_ae:  # kept in the file so that recovery after a restart knows the sender
        meta.SourceApplicationEntityTitle = calling_ae[:16].replace("\\", "")
    return meta


class Spool:
    """Received instances on disk under `root` (see the module docstring for the guarantees)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives; InvalidInputError for a UID that is not digits and dots."""
        parts = (valid_uid(study_uid), valid_uid(series_uid), valid_uid(sop_instance_uid))
        return self.root / parts[0] / parts[1] / (parts[2] + _SUFFIX)

    def store(self, ds: Dataset, calling_ae: str, transfer_syntax: str) -> SpooledInstance:
        """Write `ds` as a Part-10 file in `transfer_syntax`, durably (fsync, rename, fsync).

        Raises InvalidInputError for missing or malformed UIDs (nothing written) and OSError
        when the disk fails; returns only once the file and its folder entry are on disk.
        """
        path = self.path_for(
            ds.get("StudyInstanceUID"), ds.get("SeriesInstanceUID"), ds.get("SOPInstanceUID")
        )
        ds.file_meta = _file_meta(ds, transfer_syntax, calling_ae)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_SUFFIX, dir=path.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                ds.save_as(handle, enforce_file_format=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        _fsync_dir(path.parent.parent)
        return SpooledInstance(
            path=path,
            study_uid=path.parent.parent.name,
            series_uid=path.parent.name,
            sop_instance_uid=path.stem,
            sop_class_uid=str(ds.file_meta.MediaStorageSOPClassUID),
            calling_ae=calling_ae,
            received_at=time.time(),
            transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        )

    def load(self, instance: SpooledInstance) -> Dataset:
        """The whole dataset of a spooled instance (pixel data included, decoded lazily)."""
        return pydicom.dcmread(instance.path)

    def pending(self) -> list[SpooledInstance]:
        """Every instance on disk, oldest first (headers only): what to resume after a restart.

        A file that cannot be read is logged (path only) and skipped; leftover temporary files
        from an interrupted write (older than five minutes) are removed. The calling AE comes
        from the file meta's Source Application Entity Title, where `store` put it.
        """
        found = []
        for path in sorted(self.root.glob(f"*/*/*{_SUFFIX}")):
            if path.name.startswith(_TEMP_PREFIX):
                self._remove_stale_temp(path)
                continue
            instance = self._read_header(path)
            if instance is not None:
                found.append(instance)
        return sorted(found, key=lambda item: item.received_at)

    @staticmethod
    def _remove_stale_temp(path: Path) -> None:
        """A temporary file older than `_STALE_TEMP_S` is an interrupted write: removed."""
        try:
            if time.time() - path.stat().st_mtime > _STALE_TEMP_S:
                log.info("removing an interrupted spool write: %s", path)
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # its write just finished (renamed away)
            return

    def _read_header(self, path: Path) -> SpooledInstance | None:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return SpooledInstance(
                path=path,
                study_uid=valid_uid(ds.StudyInstanceUID),
                series_uid=valid_uid(ds.SeriesInstanceUID),
                sop_instance_uid=valid_uid(ds.SOPInstanceUID),
                sop_class_uid=valid_uid(ds.SOPClassUID),
                calling_ae=str(ds.file_meta.get("SourceApplicationEntityTitle", "")).strip(),
                received_at=path.stat().st_mtime,
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            )
        except Exception as exc:  # a damaged file must not stop recovery of the others
            log.error("unreadable spool file %s skipped (%s)", path, type(exc).__name__)
            return None

    def discard(self, instance: SpooledInstance) -> None:
        """Remove an instance's file, then its series and study folders when they are empty."""
        path = self.path_for(instance.study_uid, instance.series_uid, instance.sop_instance_uid)
        path.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): keep it
                break

    def free_bytes(self) -> int:
        """Free space on the spool's file system, in bytes."""
        return shutil.disk_usage(self.root).free
