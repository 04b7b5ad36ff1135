"""What the node accepts: storage SOP classes and transfer syntaxes (C-STORE and STOW-RS alike)."""

from __future__ import annotations

from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import sop_class as sc

# The image storage SOP classes whose pixels the node's models can use.
STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    sc.CTImageStorage,
    sc.EnhancedCTImageStorage,
    sc.MRImageStorage,
    sc.EnhancedMRImageStorage,
    sc.ComputedRadiographyImageStorage,
    sc.DigitalXRayImageStorageForPresentation,
    sc.DigitalXRayImageStorageForProcessing,
    sc.DigitalMammographyXRayImageStorageForPresentation,
    sc.DigitalMammographyXRayImageStorageForProcessing,
    sc.SecondaryCaptureImageStorage,
    sc.MultiFrameSingleBitSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    sc.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    sc.MultiFrameTrueColorSecondaryCaptureImageStorage,
    sc.VLPhotographicImageStorage,
    sc.OphthalmicPhotography8BitImageStorage,
    sc.OphthalmicPhotography16BitImageStorage,
    sc.VLMicroscopicImageStorage,
    sc.VLSlideCoordinatesMicroscopicImageStorage,
)

UNCOMPRESSED: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
)
# Offered when a pixel decoder for it is installed (python-gdcm, pyjpegls, pylibjpeg-openjpeg,
# pylibjpeg-rle, pillow; 12-bit JPEG Extended needs the optional GPL pylibjpeg-libjpeg).
COMPRESSED: tuple[UID, ...] = (
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)


def _decodable(syntax: UID) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def transfer_syntaxes() -> list[UID]:
    """The transfer syntaxes accepted: uncompressed always, a compressed one when decodable."""
    return [*UNCOMPRESSED, *(s for s in COMPRESSED if _decodable(s))]


def unsupported_reason(sop_class: str, transfer_syntax: str) -> int | None:
    """The refusal status for an instance (0x0122 SOP class, 0xC122 transfer syntax), or None."""
    if sop_class not in STORAGE_SOP_CLASSES:
        return 0x0122
    if transfer_syntax not in transfer_syntaxes():
        return 0xC122
    return None
