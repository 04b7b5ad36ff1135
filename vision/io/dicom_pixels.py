"""The Image Pixel module of a DICOM object, checked before any pixel is decoded.

`read_pixel_module` reads Rows, Columns, SamplesPerPixel, BitsAllocated, BitsStored,
PixelRepresentation, PlanarConfiguration, PhotometricInterpretation, NumberOfFrames and the
transfer syntax with `dicom_elements` (values never echoed); `check_limits` compares the
decoded size they announce with the pixel and byte limits; `pixel_dataset` is a new data set
holding only those checked values and the pixel data, which is what pydicom decodes, so none of
its messages can quote another element.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from vision.errors import ImageTooLargeError, InvalidInputError, UnsupportedFormatError
from vision.io.dicom_elements import MalformedElementError, code_string, one_integer
from vision.io.limits import check_decoded_bytes, check_max_pixels

GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT")
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)  # FloatPixelData, DoubleFloatPixelData
_OFFSET_TABLES = (0x7FE00001, 0x7FE00002)  # ExtendedOffsetTable, ExtendedOffsetTableLengths
MAX_FRAMES = 2**31 - 1


@dataclass(frozen=True)
class PixelModule:
    """The checked attributes that say how the pixel data is laid out."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    planar_configuration: int
    photometric: str
    frames: int
    frames_given: bool
    syntax: UID

    @property
    def grey(self) -> bool:
        """MONOCHROME1 or MONOCHROME2."""
        return self.photometric in GREY

    @property
    def pixels(self) -> int:
        """Rows * Columns * frames."""
        return self.rows * self.columns * self.frames

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded array (1-bit pixels decode to a byte each)."""
        return self.pixels * self.samples * max(1, self.bits_allocated // 8)

    @property
    def stored_bytes(self) -> int:
        """Bytes the pixel data needs when it is not encapsulated."""
        return (self.pixels * self.samples * self.bits_allocated + 7) // 8


def _check_pixel_data(ds: Dataset) -> None:
    if any(tag in ds for tag in _FLOAT_PIXEL_DATA):
        raise UnsupportedFormatError(
            "DICOM float pixel data (parametric maps) is not supported; send integer pixels"
        )
    if _PIXEL_DATA not in ds:
        raise InvalidInputError("DICOM file has no pixel data (is it an image object?)")


def _syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    text = code_string(meta, "TransferSyntaxUID") if meta is not None else None
    if text is None:  # a data set built in memory: its own encoding
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if implicit:
            return ImplicitVRLittleEndian
        return ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
    syntax = UID(text)
    if syntax not in AllTransferSyntaxes:
        raise UnsupportedFormatError(
            "DICOM TransferSyntaxUID is not a transfer syntax this server knows; send "
            "uncompressed, deflated, RLE, JPEG, JPEG-LS or JPEG 2000 data"
        )
    return syntax


def _photometric(ds: Dataset, samples: int) -> str:
    photometric = code_string(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if photometric == "PALETTE COLOR":
        raise UnsupportedFormatError("DICOM PALETTE COLOR images are not supported; send RGB")
    if photometric not in GREY + _COLOUR:
        raise MalformedElementError(
            "DICOM PhotometricInterpretation is not one of MONOCHROME1, MONOCHROME2, RGB, YBR_*"
        )
    if (samples == 1) != (photometric in GREY):
        raise MalformedElementError(
            "DICOM SamplesPerPixel does not match PhotometricInterpretation (1 for MONOCHROME, "
            "3 for RGB / YBR)"
        )
    return photometric


def _required(ds: Dataset, keyword: str, low: int, high: int) -> int:
    value = one_integer(ds, keyword, low, high)
    if value is None:
        raise InvalidInputError(f"DICOM file lacks {keyword}")
    return value


def read_pixel_module(ds: Dataset) -> PixelModule:
    """The pixel module of `ds`, every value checked; InvalidInputError says which is wrong."""
    _check_pixel_data(ds)
    rows = _required(ds, "Rows", 1, 65535)
    columns = _required(ds, "Columns", 1, 65535)
    samples = one_integer(ds, "SamplesPerPixel", 1, 3) or 1
    if samples == 2:
        raise MalformedElementError("DICOM SamplesPerPixel must be 1 or 3")
    bits = _required(ds, "BitsAllocated", 1, 64)
    if bits not in (1, 8, 16, 32, 64):
        raise MalformedElementError("DICOM BitsAllocated must be 1, 8, 16, 32 or 64")
    stored = one_integer(ds, "BitsStored", 1, bits) or bits
    frames = one_integer(ds, "NumberOfFrames", 1, MAX_FRAMES)
    return PixelModule(
        rows=rows,
        columns=columns,
        samples=samples,
        bits_allocated=bits,
        bits_stored=stored,
        pixel_representation=one_integer(ds, "PixelRepresentation", 0, 1) or 0,
        planar_configuration=(one_integer(ds, "PlanarConfiguration", 0, 1) or 0)
        if samples == 3
        else 0,
        photometric=_photometric(ds, samples),
        frames=frames or 1,
        frames_given=frames is not None,
        syntax=_syntax(ds),
    )


def check_limits(module: PixelModule, max_pixels: int) -> None:
    """Pixel and byte limits on what the module announces, before anything is decoded."""
    if module.frames == 1:
        check_max_pixels(module.columns, module.rows, max_pixels)
    elif max_pixels > 0 and module.pixels > max_pixels:
        raise ImageTooLargeError(
            f"DICOM object is {module.frames} frame(s) of {module.columns}x{module.rows} = "
            f"{module.pixels} pixels; the limit is {max_pixels} (--max-image-pixels)"
        )
    check_decoded_bytes(module.decoded_bytes, max_pixels, "the DICOM pixel data")


def check_pixel_data(ds: Dataset, module: PixelModule) -> bytes:
    """The pixel data bytes; InvalidInputError when not bytes or (native) shorter than needed."""
    value = pixel_buffer(ds, module)
    return value if isinstance(value, bytes) else bytes(value)


def pixel_buffer(ds: Dataset, module: PixelModule) -> bytes | bytearray | memoryview:
    """`check_pixel_data`'s checks, and the pixel data as held (a series instance's is a view
    of its file's bytes, `vision.io.dicom_series`): not copied."""
    value = ds.get_item(_PIXEL_DATA, keep_deferred=True).value
    value = b"" if value is None else value  # empty, of any VR
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidInputError("DICOM PixelData is not a byte string")
    if not module.syntax.is_encapsulated and len(value) < module.stored_bytes:
        raise InvalidInputError(
            f"DICOM pixel data is truncated: {len(value)} bytes, where Rows x Columns x "
            f"SamplesPerPixel x BitsAllocated x frames needs {module.stored_bytes}; send the "
            "complete file"
        )
    return value


def pixel_dataset(ds: Dataset, module: PixelModule) -> Dataset:
    """A data set with only the checked pixel module and the pixel data, for pydicom to decode."""
    clean = Dataset()
    clean.file_meta = FileMetaDataset()
    clean.file_meta.TransferSyntaxUID = module.syntax
    clean.Rows, clean.Columns = module.rows, module.columns
    clean.SamplesPerPixel = module.samples
    clean.PhotometricInterpretation = module.photometric
    clean.BitsAllocated, clean.BitsStored = module.bits_allocated, module.bits_stored
    clean.HighBit = module.bits_stored - 1
    clean.PixelRepresentation = module.pixel_representation
    if module.samples == 3:
        clean.PlanarConfiguration = module.planar_configuration
    if module.frames_given:
        clean.NumberOfFrames = module.frames
    value = check_pixel_data(ds, module)
    encapsulated = module.syntax.is_encapsulated
    vr = "OB" if encapsulated or module.bits_allocated <= 8 else "OW"
    clean[_PIXEL_DATA] = DataElement(_PIXEL_DATA, vr, value, is_undefined_length=encapsulated)
    for tag in _OFFSET_TABLES:
        if tag in ds and isinstance(ds.get_item(tag, keep_deferred=True).value, bytes):
            clean[tag] = DataElement(tag, "OV", ds.get_item(tag, keep_deferred=True).value)
    return clean
