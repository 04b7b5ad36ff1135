"""Image -> model input tensor: channels, resize (stretch/letterbox/none), scale, normalise."""

from __future__ import annotations

import math

import cv2
import numpy as np

from vision.config import InputSpec, PreprocessSpec
from vision.errors import InvalidInputError
from vision.io.image import to_uint8
from vision.types import PreprocessMeta


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Pixels as float32 on a 0..255 scale (uint16 divided by 257; float32 taken as is)."""
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) * np.float32(1.0 / 257.0)
    return pixels.astype(np.float32, copy=False)


def convert_channels(pixels: np.ndarray, channel_order: str) -> np.ndarray:
    """HxWxC (C 1 or 3, RGB) to the model's channels: GRAY (1), RGB or BGR (3)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels not in (1, 3):
        raise InvalidInputError(f"image has {channels} channels; expected 1 or 3")
    if channel_order == "GRAY":
        if channels == 1:
            return pixels
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    if channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    out = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    return out[:, :, None] if out.ndim == 2 else out


def _pad(pixels: np.ndarray, top: int, bottom: int, left: int, right: int, value: float):
    if top == bottom == left == right == 0:
        return pixels
    out = cv2.copyMakeBorder(
        pixels, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(value,) * 4
    )
    return out[:, :, None] if out.ndim == 2 else out


def letterbox(
    pixels: np.ndarray, height: int, width: int, pad_value: float
) -> tuple[np.ndarray, tuple[float, float, int, int]]:
    """Keep aspect, fit into height x width, pad centred (Ultralytics' LetterBox arithmetic).

    Returns the padded image and (scale_x, scale_y, pad_x, pad_y).
    """
    h, w = pixels.shape[:2]
    ratio = min(height / h, width / w)
    # At least one pixel: a 1x30000 image would otherwise be resized to 0 rows (cv2.error).
    new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = _pad(_resize(pixels, new_w, new_h), top, bottom, left, right, pad_value)
    return out, (new_w / w, new_h / h, left, top)


def _pad_to(pixels: np.ndarray, height: int, width: int, value: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    return _pad(pixels, 0, height - h, 0, width - w, value)


def _ceil_to(value: int, divisor: int) -> int:
    return int(math.ceil(value / divisor) * divisor) if divisor > 1 else value


def resize_for_model(
    pixels: np.ndarray, spec: InputSpec, pre: PreprocessSpec
) -> tuple[np.ndarray, PreprocessMeta]:
    """Resize/pad float pixels to the model input size and record how (see PreprocessMeta)."""
    h, w = pixels.shape[:2]
    if spec.height <= 0 or spec.width <= 0:  # dynamic: keep size, pad bottom/right
        out_h, out_w = _ceil_to(h, spec.size_divisor), _ceil_to(w, spec.size_divisor)
        out, geometry = _pad_to(pixels, out_h, out_w, pre.pad_value), (1.0, 1.0, 0, 0)
    elif pre.resize == "letterbox":
        out, geometry = letterbox(pixels, spec.height, spec.width, pre.pad_value)
    elif pre.resize == "stretch":
        out, geometry = _resize(pixels, spec.width, spec.height), (spec.width / w, spec.height / h)
        geometry = (*geometry, 0, 0)
    else:  # "none" with a fixed input size: pad bottom/right, never shrink
        if h > spec.height or w > spec.width:
            raise InvalidInputError(
                f"image is {w}x{h}, larger than the model input {spec.width}x{spec.height}, "
                "and this model does not resize; send an image that fits"
            )
        out, geometry = _pad_to(pixels, spec.height, spec.width, pre.pad_value), (1.0, 1.0, 0, 0)
    scale_x, scale_y, pad_x, pad_y = geometry
    meta = PreprocessMeta(
        original_height=h,
        original_width=w,
        scale_x=float(scale_x),
        scale_y=float(scale_y),
        pad_x=float(pad_x),
        pad_y=float(pad_y),
        input_height=int(out.shape[0]),
        input_width=int(out.shape[1]),
    )
    return out, meta


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> np.ndarray:
    if len(values) == 1:
        values = tuple(values) * channels
    if len(values) < channels:
        raise InvalidInputError(f"preprocess.{name} has {len(values)} values for {channels} ch")
    return np.asarray(values[:channels], dtype=np.float32)


class Preprocessor:
    """The preprocessing steps of one model config, with constants computed once."""

    def __init__(self, spec: InputSpec, pre: PreprocessSpec) -> None:
        self.spec, self.pre = spec, pre
        channels = 1 if pre.channel_order == "GRAY" else 3
        self.mean = _per_channel(tuple(pre.mean), channels, "mean")
        std = _per_channel(tuple(pre.std), channels, "std")
        if np.any(std == 0):
            raise InvalidInputError("preprocess.std contains 0")
        self.gain = np.float32(pre.scale) / std  # (x*scale - mean)/std = x*gain - mean/std
        self.offset = self.mean / std

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, PreprocessMeta]:
        """Model input tensor of `pixels` and what preprocessing did to them.

        Every image is resized in 8 bits: uint16 and float32 pixels (16-bit PNG / TIFF, DICOM,
        raw float) are first brought to uint8 on the 0..255 scale by `vision.io.to_uint8`
        (rounded, the training readers' conversion), so the same pixels sent as PNG, TIFF or
        DICOM give the same tensor. Resize and pad in 8 bits, then convert to float, as
        Ultralytics' LetterBox does.
        """
        x, meta = resize_for_model(
            convert_channels(to_uint8(pixels), self.pre.channel_order), self.spec, self.pre
        )
        x = to_float(x) * self.gain - self.offset
        if self.spec.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.dtype(self.spec.dtype)), meta
