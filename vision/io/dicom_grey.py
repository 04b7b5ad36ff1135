"""Greyscale DICOM pixels to the server's 0..255 scale, by one documented rule.

1. Modality transform: the Modality LUT when present, else RescaleSlope / RescaleIntercept
   (1 and 0 when absent; NaN, infinity or a slope of 0 are refused).
2. VOI: when windowing is on and the object has one, its first VOI LUT or window
   (WindowCenter / WindowWidth with VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID, PS3.3
   C.11.2.1.2) maps to 0..255. Without one, the full stored range, 0..2^BitsStored - 1 (or
   -2^(BitsStored-1)..2^(BitsStored-1) - 1 when PixelRepresentation is 1) taken through the
   modality transform, maps linearly to 0..255: the mapping depends on the header only, never
   on the image's content, so an 8-bit image keeps its values exactly as an 8-bit PNG does.
3. MONOCHROME1 is inverted.

Values are read with `dicom_elements` (never echoed in errors); the frame's functional group
items (Pixel Value Transformation, Frame VOI LUT) override the top-level attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from vision.io.dicom_elements import (
    MalformedElementError,
    code_string,
    decimals,
    first_item,
    lut,
    one_decimal,
)
from vision.io.dicom_pixels import PixelModule

_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class Lut:
    """A Modality or VOI lookup table: first mapped value and entries."""

    first: int
    entries: np.ndarray

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Look `values` up (clipped to the table, as PS3.3 C.11.1.1 says)."""
        index = np.clip(values.astype(np.int64) - self.first, 0, len(self.entries) - 1)
        return self.entries[index]


@dataclass(frozen=True)
class Window:
    """A VOI window."""

    center: float
    width: float
    function: str


@dataclass(frozen=True)
class GreyTransform:
    """How one frame's stored values become 0..255."""

    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: Lut | None = None
    modality_bits: int = 16
    window: Window | None = None
    voi_lut: Lut | None = None
    invert: bool = False


def _latest(sources: list[Dataset], keyword: str, read) -> object:
    """`read(source, keyword)` of the last source that has the element."""
    value = None
    for source in sources:
        found = read(source, keyword)
        if found is not None:
            value = found
    return value


def _window(sources: list[Dataset]) -> Window | None:
    centers = _latest(sources, "WindowCenter", decimals)
    widths = _latest(sources, "WindowWidth", decimals)
    if centers is None or widths is None:
        return None
    function = _latest(sources, "VOILUTFunction", code_string) or "LINEAR"
    if function not in _FUNCTIONS:
        raise MalformedElementError("DICOM VOILUTFunction must be LINEAR, LINEAR_EXACT or SIGMOID")
    width = widths[0]
    usable = width >= 1 if function == "LINEAR" else width > 0
    if not usable:
        raise MalformedElementError(
            "DICOM WindowWidth must be at least 1 (greater than 0 for LINEAR_EXACT / SIGMOID); "
            "fix the window or remove it"
        )
    return Window(centers[0], width, str(function))


def _lut(ds: Dataset, keyword: str, module: PixelModule) -> tuple[Lut, int] | None:
    item = first_item(ds, keyword)
    if item is None:
        return None
    first, bits, entries = lut(item, keyword, module.pixel_representation)
    return Lut(first, np.asarray(entries, dtype=np.float64)), bits


def grey_transform(
    ds: Dataset, groups: list[Dataset], module: PixelModule, window: bool
) -> GreyTransform:
    """The transform of a frame of `ds`; `groups` are its functional group items, in order."""
    sources = [ds, *groups]
    slope = _latest(sources, "RescaleSlope", one_decimal)
    intercept = _latest(sources, "RescaleIntercept", one_decimal)
    if slope == 0:
        raise MalformedElementError("DICOM RescaleSlope must not be 0")
    modality = _lut(ds, "ModalityLUTSequence", module)
    voi = _lut(ds, "VOILUTSequence", module) if window else None
    return GreyTransform(
        slope=1.0 if slope is None else float(slope),
        intercept=0.0 if intercept is None else float(intercept),
        modality_lut=modality[0] if modality else None,
        modality_bits=modality[1] if modality else 16,
        window=_window(sources) if window and voi is None else None,
        voi_lut=voi[0] if voi else None,
        invert=module.photometric == "MONOCHROME1",
    )


def stored_range(transform: GreyTransform, module: PixelModule) -> tuple[float, float]:
    """The full range of the modality transform's output (the rule without a window)."""
    if transform.modality_lut is not None:
        return 0.0, 2.0**transform.modality_bits - 1
    bits = module.bits_stored
    if module.pixel_representation == 0:
        lo, hi = 0.0, 2.0**bits - 1
    else:
        lo, hi = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    lo, hi = lo * transform.slope + transform.intercept, hi * transform.slope + transform.intercept
    return min(lo, hi), max(lo, hi)


def to_255(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`values` mapped linearly from [lo, hi] to [0, 255], clipped."""
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


def _windowed(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 windowing onto 0..255."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - c) / w, -700, 700)))
    if window.function == "LINEAR_EXACT":
        return np.clip(((values - c) / w + 0.5) * 255.0, 0.0, 255.0)
    below, above = values <= c - 0.5 - (w - 1) / 2, values > c - 0.5 + (w - 1) / 2
    out = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0 if w > 1 else np.zeros_like(values)
    return np.where(below, 0.0, np.where(above, 255.0, out))


def modality_values(transform: GreyTransform, raw: np.ndarray) -> np.ndarray:
    """Stored values through the modality transform (Modality LUT or rescale), float64."""
    if transform.modality_lut is not None:
        return transform.modality_lut(raw)
    return raw.astype(np.float64) * transform.slope + transform.intercept


def apply_grey(transform: GreyTransform, module: PixelModule, raw: np.ndarray) -> np.ndarray:
    """A 2-D array of stored values as float32 HxWx1 on 0..255."""
    values = modality_values(transform, raw)
    if transform.voi_lut is not None:
        looked_up = transform.voi_lut(values)
        entries = transform.voi_lut.entries
        out = to_255(looked_up, float(entries.min()), float(entries.max()))
    elif transform.window is not None:
        out = _windowed(values, transform.window)
    else:
        out = to_255(values, *stored_range(transform, module))
    if transform.invert:
        out = 255.0 - out
    return out.astype(np.float32)[:, :, None]
