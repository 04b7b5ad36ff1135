"""The findings as a softcopy presentation state, for viewers that draw neither SR nor SEG.

Grayscale Softcopy Presentation State for MONOCHROME sources, Color Softcopy Presentation State for
colour ones; one per source series. Each detection is a closed POLYLINE box with a text label
(`label score`) above it; each class mask its outer contours (at most `MAX_CONTOURS` per mask,
the largest) with a label. A frame with no finding gets the text `model version: no findings`.
All coordinates are PIXEL units of the referenced image.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from importlib import resources

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicom_node.seg import BACKGROUND
from dicom_node.uids import MANUFACTURER, Producer, SourceFrame, result_uids, unique_instances
from vision.types import DetectionResult

GSPS_SERIES_NUMBER = 903
MAX_CONTOURS = 32
_GRAPHIC_DATA = Tag(0x00700022)
_POINTS = Tag(0x00700021)  # NumberOfGraphicPoints
_LAYER = hd.pr.GraphicLayer(layer_name="FINDINGS", order=1, description="model findings")


def _box(x1: float, y1: float, x2: float, y2: float) -> hd.pr.GraphicObject:
    points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)
    return hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=points, units="PIXEL")


def _text(text: str, x: float, y: float) -> hd.pr.TextObject:
    return hd.pr.TextObject(
        text_value=text[:64],
        units="PIXEL",
        anchor_point=(max(float(x), 0.0), max(float(y), 0.0)),
        text_justification="LEFT",
        anchor_point_visible=False,
    )


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    """The largest outer contours of a mask as closed (x, y) polylines (pixel corners)."""
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = sorted(found, key=cv2.contourArea, reverse=True)[:MAX_CONTOURS]
    lines = []
    for contour in found:
        points = contour.reshape(-1, 2).astype(np.float32) + 0.5  # pixel centres
        if len(points) >= 2:
            lines.append(np.vstack([points, points[:1]]))
    return lines


def _polyline(line: np.ndarray) -> hd.pr.GraphicObject:
    """A POLYLINE graphic object in PIXEL units of `line` ((N, 2) points, N >= 2, >= 0).

    highdicom would set Graphic Data through pydicom, which converts and validates each float
    one by one: most of the encode time of a vessel mask's thousands of points. The points are
    checked here as highdicom checks them (shape, count, non-negative); the object's other
    elements are copies of those highdicom gives a POLYLINE in PIXEL units (`_polyline_elements`,
    built once) and Graphic Data is stored as its encoded bytes (FL, little endian float32): a
    raw element, which pydicom writes as it is into an explicit VR little endian file (the
    outbox's syntax; the object says it was "read" in that encoding) and decodes only if
    something reads it. The file is byte-identical to highdicom's.
    """
    if line.ndim != 2 or line.shape[1] != 2 or len(line) < 2 or float(line.min()) < 0.0:
        raise ValueError("a polyline needs two or more non-negative (column, row) points")
    graphic = _RawPolyline.__new__(_RawPolyline)
    Dataset.__init__(graphic)
    for element in _polyline_elements():  # copies: nothing shares an element with another object
        graphic[element.tag] = copy.copy(element)
    graphic[_POINTS] = DataElement(_POINTS, "US", len(line))
    points = np.ascontiguousarray(line, dtype="<f4")
    data = points.tobytes()
    graphic[_GRAPHIC_DATA] = RawDataElement(_GRAPHIC_DATA, "FL", len(data), data, 0, False, True)
    graphic.set_original_encoding(False, True, graphic._character_set)
    graphic._points = points.reshape(-1, 2)
    return graphic


@functools.cache
def _polyline_elements() -> tuple[DataElement, ...]:
    """The elements highdicom sets on a POLYLINE in PIXEL units, but its points and their count
    (the same for every such object: type, units, dimensions, not filled)."""
    two = np.zeros((2, 2), np.float32)
    graphic = hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=two, units="PIXEL")
    return tuple(e for e in graphic if e.tag not in (_POINTS, _GRAPHIC_DATA))


class _RawPolyline(hd.pr.GraphicObject):
    """A graphic object whose `graphic_data` (which highdicom's GraphicAnnotation reads to check
    every point against the image) is the points array, not a decode of the raw element."""

    _points: np.ndarray

    @property
    def graphic_data(self) -> np.ndarray:
        """The (N, 2) points, as highdicom's own property gives them."""
        return self._points


def _objects(item: SourceFrame, producer: Producer):
    """(graphic objects, text objects) of one source frame."""
    graphics, texts = [], []
    result = item.prediction.result
    if isinstance(result, DetectionResult):
        for d in result.detections:
            graphics.append(_box(d.x1, d.y1, d.x2, d.y2))
            texts.append(_text(f"{d.label} {d.score:.2f}", d.x1, max(d.y1 - 2.0, 0.0)))
    else:
        for mask in result.masks:
            if mask.label.lower() == BACKGROUND or mask.pixel_area == 0:
                continue
            lines = _contours(mask.mask)
            graphics += [_polyline(line) for line in lines]
            if lines:
                x, y = lines[0].min(axis=0)
                texts.append(_text(f"{mask.label} {mask.score:.2f}", x, y))
    if not graphics and not texts:
        texts.append(_text(f"{producer.software_version}: no findings", 2.0, 2.0))
    return graphics, texts


def _annotation(item: SourceFrame, producer: Producer) -> hd.pr.GraphicAnnotation:
    graphics, texts = _objects(item, producer)
    return hd.pr.GraphicAnnotation(
        referenced_images=[item.dataset],
        graphic_layer=_LAYER,
        referenced_frame_number=item.frame if item.is_multiframe else None,
        graphic_objects=graphics or None,
        text_objects=texts or None,
    )


def _icc_profile(instances: Sequence[Dataset]) -> bytes:
    """The sources' ICC profile, else sRGB (what an RGB image without one is taken to be)."""
    for ds in instances:
        for holder in (ds, *ds.get("OpticalPathSequence", [])):
            if "ICCProfile" in holder:
                return bytes(holder.ICCProfile)
    # highdicom's own sRGB profile (device class "spac", as the PS IOD wants)
    return (
        resources.files("highdicom") / "_icc_profiles" / "sRGB_v4_ICC_preference.icc"
    ).read_bytes()


def annotations(frames: Sequence[SourceFrame], producer: Producer) -> list:
    """The graphic annotation of each of `frames`, in order (built frame by frame, or at once)."""
    return [_annotation(item, producer) for item in frames]


def _presentation_state(series: list[SourceFrame], producer: Producer, drawn: list) -> Dataset:
    instances = unique_instances(series)
    series_uid, sop_uid = result_uids(instances, producer, "gsps")
    colour = int(instances[0].get("SamplesPerPixel", 1)) > 1
    if colour:
        kind, extra = hd.pr.ColorSoftcopyPresentationState, {"icc_profile": _icc_profile(instances)}
    else:
        kind, extra = hd.pr.GrayscaleSoftcopyPresentationState, {}
    return kind(
        **extra,
        referenced_images=instances,
        series_instance_uid=series_uid,
        series_number=GSPS_SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=producer.model[:64],
        software_versions=producer.software_version,
        device_serial_number=producer.version[:64],
        content_label="FINDINGS",
        content_description=f"Findings of {producer.model}"[:64],
        graphic_annotations=drawn,
        graphic_layers=[_LAYER],
        series_description=f"{producer.model} annotations"[:64],
    )


def presentation_states(
    frames: Sequence[SourceFrame], producer: Producer, drawn: Sequence | None = None
) -> list[Dataset]:
    """One presentation state per source series of `frames`; `drawn`: their `annotations`,
    when already built (aligned with `frames`)."""
    drawn = annotations(frames, producer) if drawn is None else list(drawn)
    if len(drawn) != len(frames):
        raise ValueError(f"{len(drawn)} annotations for {len(frames)} frames: give one per frame")
    by_series: dict[str, tuple[list[SourceFrame], list]] = {}
    for item, annotation in zip(frames, drawn, strict=True):
        series = by_series.setdefault(str(item.dataset.SeriesInstanceUID), ([], []))
        series[0].append(item)
        series[1].append(annotation)
    return [_presentation_state(items, producer, drawn) for items, drawn in by_series.values()]
