"""The pixel and byte limits shared by every decoder (bottom module: imports no other decoder).

One setting, `max_pixels` (`--max-image-pixels`), bounds both: an image may have at most that
many pixels, and its decoded data at most `BYTES_PER_PIXEL` bytes per allowed pixel (enough for
three 16-bit samples or one 64-bit float), so a decompression bomb is refused from what its
header announces, and a deflate stream is inflated only up to that many bytes.
"""

from __future__ import annotations

from vision.errors import ImageTooLargeError

BYTES_PER_PIXEL = 8
# Room for the elements around the pixel data in an inflated (deflated-syntax) DICOM data set.
DICOM_HEADER_BYTES = 4 * 1024 * 1024


def check_max_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageTooLargeError when width*height exceeds `max_pixels` (0 = no limit)."""
    pixels = int(width) * int(height)
    if max_pixels > 0 and pixels > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {pixels} pixels; the limit is {max_pixels} "
            "(--max-image-pixels): send a smaller image"
        )


def max_decoded_bytes(max_pixels: int) -> int:
    """The most decoded bytes an image may take under `max_pixels` (0: no limit)."""
    return max(0, max_pixels) * BYTES_PER_PIXEL


def check_decoded_bytes(size: int, max_pixels: int, what: str) -> None:
    """Raise ImageTooLargeError when `what` would decode to more than the byte limit."""
    limit = max_decoded_bytes(max_pixels)
    if limit and size > limit:
        raise ImageTooLargeError(
            f"{what} would decode to {size} bytes; the limit is {limit} "
            f"({BYTES_PER_PIXEL} bytes per pixel of --max-image-pixels): send a smaller image"
        )
