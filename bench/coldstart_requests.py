"""What the first requests of a fresh server pay (`bench.coldstart --first-request`).

Modules that are not needed to reach SERVING are imported by the first request that needs
them: pydicom and its codecs by the first DICOM image, the volume pipeline (scipy) by the first
volume. This times, on a server whose models and explain graphs are all in, the first and the
second vision.v1 `Segment` of the same image sent as PNG, then as DICOM (an 8-bit MONOCHROME2
Part-10 object of the same pixels): first minus second is what the first request of that kind
pays once, the import included.
"""

from __future__ import annotations

import io
import time

import cv2
import grpc
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from protos.vision.v1 import vision_pb2 as vision_pb

SEGMENT = "/vision.v1.VisionService/Segment"
MODEL = "tile-defects"


def sample_pixels(size: int = 256) -> np.ndarray:
    """A grey uint8 image with structure (a bright blob on noise), the same every run."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(60, 200, (size, size)).astype(np.float64)
    yy, xx = np.mgrid[:size, :size]
    pixels += 120.0 * np.exp(-((yy - size / 3) ** 2 + (xx - size / 2) ** 2) / (size * 2.0))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def dicom_bytes(pixels: np.ndarray) -> bytes:
    """`pixels` (uint8, HxW) as an uncompressed MONOCHROME2 secondary-capture Part-10 file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _segment_ms(channel: grpc.Channel, model: str, encoded: bytes) -> float:
    request = vision_pb.SegmentRequest(
        model=vision_pb.ModelRef(name=model), image=vision_pb.ImageInput(encoded=encoded)
    )
    call = channel.unary_unary(SEGMENT)
    started = time.perf_counter()
    vision_pb.SegmentResponse.FromString(call(request.SerializeToString(), timeout=60.0))
    return (time.perf_counter() - started) * 1000.0


def first_requests(address: str, model: str = MODEL) -> dict[str, float]:
    """ms of the first and second `Segment` of `model` with a PNG, then with a DICOM image."""
    pixels = sample_pixels()
    bodies = {"png": cv2.imencode(".png", pixels)[1].tobytes(), "dicom": dicom_bytes(pixels)}
    times: dict[str, float] = {}
    with grpc.insecure_channel(address) as channel:
        for kind, body in bodies.items():
            times[f"{kind}_first_ms"] = _segment_ms(channel, model, body)
            times[f"{kind}_second_ms"] = _segment_ms(channel, model, body)
    return times
