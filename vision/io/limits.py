"""The pixel-count limit shared by every decoder (bottom module: imports no other decoder)."""

from __future__ import annotations

from vision.errors import ImageTooLargeError


def check_max_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ImageTooLargeError when width*height exceeds `max_pixels` (0 = no limit)."""
    pixels = int(width) * int(height)
    if max_pixels > 0 and pixels > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {pixels} pixels; the limit is {max_pixels}"
        )
