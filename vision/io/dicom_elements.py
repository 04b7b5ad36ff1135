"""DICOM element values read from their encoded bytes, checked, never echoed.

pydicom converts an element when it is first read, and both its validation warnings and its
exceptions quote the value ("Invalid value for VR IS: '...'"), which may be patient data. Here
the bytes of a raw element are parsed directly (an element pydicom already converted is read
from its value), every value is checked for what the decoder needs, and an error names the
attribute and what is wrong with it, never the value. `MalformedElementError` is an
`InvalidInputError` (INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.valuerep import VR as PYDICOM_VRS

from vision.errors import InvalidInputError

_INTEGER_STRING = re.compile(r"[+-]?\d{1,12}")
_DECIMAL_STRING = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_KNOWN_VRS = frozenset(str(v) for v in PYDICOM_VRS)  # every VR name pydicom knows


class MalformedElementError(InvalidInputError):
    """An element the decoder needs is malformed (the message names it, never its value)."""


@lru_cache(maxsize=512)
def _tag(keyword: str) -> int:
    """The tag of `keyword` (cached: the decoders ask for the same few keywords per file)."""
    tag = tag_for_keyword(keyword)
    if tag is None:  # a programming error, not the client's
        raise KeyError(f"unknown DICOM keyword {keyword}")
    return tag


@lru_cache(maxsize=512)
def _dictionary_vr(keyword: str) -> str:
    """The dictionary VR of `keyword` as pydicom spells it ("US or SS"), cached."""
    return dictionary_VR(keyword)


@lru_cache(maxsize=512)
def _allowed_vrs(keyword: str) -> frozenset[str]:
    """The dictionary VR(s) of `keyword` ("US or SS" is both), plus UN."""
    return frozenset({vr.strip() for vr in _dictionary_vr(keyword).split(" or ")} | {"UN"})


def _raw(ds: Dataset, keyword: str) -> tuple[str, Any, bool] | None:
    """(VR, value, little endian) of the element as stored; None when absent.

    The value is bytes for a raw element, else what pydicom already converted it to.
    """
    tag = _tag(keyword)
    if tag not in ds:
        return None
    element = ds.get_item(tag, keep_deferred=True)  # never converted (nor validated)
    dictionary = _dictionary_vr(keyword)
    vr = element.VR or dictionary
    if vr == dictionary:  # implicit, or ambiguous ("US or SS") in memory
        vr = vr.split(" or ")[0]
    if vr not in _allowed_vrs(keyword):
        what = f"VR {vr}" if vr in _KNOWN_VRS else "an unknown VR"
        raise MalformedElementError(
            f"DICOM {keyword} is encoded with {what}; it must be {dictionary}"
        )
    little = getattr(element, "is_little_endian", True)
    if vr == "UN":  # decode as the dictionary says
        vr = dictionary.split(" or ")[0]
    value = b"" if element.value is None else element.value  # an empty raw element
    return vr, value, True if little is None else bool(little)


def _texts(keyword: str, value: Any) -> list[str]:
    """The backslash-separated strings of a text value (bytes or already converted)."""
    if isinstance(value, bytes | bytearray):
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise MalformedElementError(f"DICOM {keyword} is not ASCII text") from None
        parts = text.split("\\")
    elif isinstance(value, str):
        parts = value.split("\\")
    elif isinstance(value, list | tuple) or hasattr(value, "__iter__"):
        parts = [str(v) for v in value]
    else:
        parts = [str(value)]
    return [p.strip("\x00 ") for p in parts]


def _binary(keyword: str, vr: str, value: Any, little: bool) -> list[int | float]:
    """The values of a binary-number element (bytes or already converted)."""
    if isinstance(value, bytes | bytearray):
        code = _BINARY_FORMATS[vr]
        size = struct.calcsize(code)
        if len(value) % size:
            raise MalformedElementError(
                f"DICOM {keyword} has a length that is not a multiple of {size}"
            )
        order = "<" if little else ">"
        return list(struct.unpack(f"{order}{len(value) // size}{code}", bytes(value)))
    if isinstance(value, int | float):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise MalformedElementError(f"DICOM {keyword} is not a number") from None


def _numbers(keyword: str, raw: tuple[str, Any, bool], pattern: re.Pattern, kind: type) -> list:
    """The values of a number element: binary, text (IS/DS) or already converted."""
    vr, value, little = raw
    if vr in _BINARY_FORMATS:
        return _binary(keyword, vr, value, little)
    if isinstance(value, int | float):  # converted by pydicom (IS, DSfloat)
        return [value]
    if not isinstance(value, bytes | bytearray | str) and hasattr(value, "__iter__"):
        items = list(value)
        if all(isinstance(v, int | float) for v in items):
            return items
    texts = _texts(keyword, value)
    if all(text == "" for text in texts):
        return []
    if kind is float and any(t.lower().lstrip("+-") in ("nan", "inf", "infinity") for t in texts):
        raise MalformedElementError(f"DICOM {keyword} is not a finite number (NaN or infinity)")
    if not all(pattern.fullmatch(text) for text in texts):
        noun = "an integer" if kind is int else "a decimal number"
        raise MalformedElementError(f"DICOM {keyword} is not {noun}")
    return [kind(text) for text in texts]


def integers(ds: Dataset, keyword: str) -> list[int] | None:
    """Every integer of a US/SS/UL/SL/IS element; None when absent or empty."""
    raw = _raw(ds, keyword)
    if raw is None:
        return None
    values = _numbers(keyword, raw, _INTEGER_STRING, int)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise MalformedElementError(f"DICOM {keyword} is not an integer")
    return values or None


def decimals(ds: Dataset, keyword: str) -> list[float] | None:
    """Every number of a DS/FL/FD element, each finite; None when absent or empty."""
    raw = _raw(ds, keyword)
    if raw is None:
        return None
    values = [float(v) for v in _numbers(keyword, raw, _DECIMAL_STRING, float)]
    if not all(math.isfinite(v) for v in values):
        raise MalformedElementError(f"DICOM {keyword} is not a finite number (NaN or infinity)")
    return values or None


def one_integer(ds: Dataset, keyword: str, low: int, high: int) -> int | None:
    """A single integer in [low, high]; None when absent."""
    values = integers(ds, keyword)
    if values is None:
        return None
    if len(values) != 1:
        raise MalformedElementError(f"DICOM {keyword} must hold one value, not {len(values)}")
    if not low <= values[0] <= high:
        raise MalformedElementError(f"DICOM {keyword} must lie in [{low}, {high}]")
    return values[0]


def one_decimal(ds: Dataset, keyword: str) -> float | None:
    """The first number of a decimal element (finite); None when absent."""
    values = decimals(ds, keyword)
    return None if values is None else values[0]


def code_string(ds: Dataset, keyword: str) -> str | None:
    """The first value of a CS/UI/short text element, stripped; None when absent or empty."""
    raw = _raw(ds, keyword)
    if raw is None:
        return None
    texts = _texts(keyword, raw[1])
    return (texts[0] or None) if texts else None


def lut(item: Dataset, keyword: str, pixel_representation: int) -> tuple[int, int, list[int]]:
    """(first mapped value, bits, entries) of a Modality or VOI LUT item, checked.

    LUTDescriptor is [entries (0 = 65536), first mapped value, bits (8..16)]; LUTData holds one
    value per entry. The first mapped value is signed when the pixels are (PS3.3 C.11.1.1).
    """
    descriptor = integers(item, "LUTDescriptor")
    if descriptor is None or len(descriptor) != 3:
        raise MalformedElementError(f"DICOM {keyword} LUTDescriptor must hold three values")
    count, first, bits = descriptor
    count = count or 65536
    if pixel_representation == 1 and first >= 32768:
        first -= 65536
    if not 8 <= bits <= 16:
        raise MalformedElementError(f"DICOM {keyword} LUTDescriptor bits must lie in [8, 16]")
    raw = _raw(item, "LUTData")
    if raw is None:
        raise MalformedElementError(f"DICOM {keyword} has no LUTData")
    vr, value, little = raw
    if isinstance(value, bytes | bytearray):
        entries = _binary(keyword, "US", value, little)
    else:
        entries = _binary(keyword, vr if vr in _BINARY_FORMATS else "US", value, little)
    if len(entries) != count or not all(isinstance(v, int) and v >= 0 for v in entries):
        raise MalformedElementError(
            f"DICOM {keyword} LUTData must hold the {count} entries its LUTDescriptor announces"
        )
    return first, bits, [int(v) for v in entries]


def first_item(ds: Dataset, keyword: str) -> Dataset | None:
    """The first item of a sequence; None when absent or empty."""
    if _tag(keyword) not in ds:
        return None
    try:
        items = ds[keyword].value
    except Exception:  # noqa: BLE001 - a malformed sequence: pydicom's text may quote values
        raise MalformedElementError(f"DICOM {keyword} is not a readable sequence") from None
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise MalformedElementError(f"DICOM {keyword} is not a sequence")
    return items[0] if len(items) else None
