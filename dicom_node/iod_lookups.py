"""highdicom's IOD look-ups, memoised: the same answers, computed once per SOP class.

highdicom asks `is_attribute_in_iod(keyword, sop_class_uid)` (and `does_iod_have_pixel_data`,
which asks it three times) whenever it builds a SEG, an SR or a presentation state: for the
Content Date and Time of every object, for every source image, evidence item and referenced
region. Each call walks every module of the IOD and every attribute of each module (thousands
of entries) in Python: about 10 ms of CPU per photograph's results, out of about 60. The answer
depends only on the arguments and on the standard's tables that highdicom ships (loaded once,
never changed), so it is memoised here, per (keyword, SOP class, excluded path elements); an
unknown SOP class still raises highdicom's KeyError each time. `install()` puts the memoised
functions wherever highdicom's modules hold the originals; the objects built are unchanged
(`tests/dicom_node/test_result_stream.py` compares the answers for every SOP class).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence

from highdicom import _standard_utils as standard

__all__ = ["does_iod_have_pixel_data", "install", "is_attribute_in_iod"]

ORIGINAL_IS_ATTRIBUTE_IN_IOD = standard.is_attribute_in_iod
ORIGINAL_DOES_IOD_HAVE_PIXEL_DATA = standard.does_iod_have_pixel_data


@functools.lru_cache(maxsize=4096)
def _in_iod(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
    return ORIGINAL_IS_ATTRIBUTE_IN_IOD(
        attribute, sop_class_uid, list(exclude) if exclude is not None else None
    )


def is_attribute_in_iod(
    attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None
) -> bool:
    """`highdicom._standard_utils.is_attribute_in_iod`, memoised."""
    exclude = None if exclude_path_elements is None else tuple(exclude_path_elements)
    return _in_iod(str(attribute), str(sop_class_uid), exclude)


@functools.lru_cache(maxsize=1024)
def _has_pixel_data(sop_class_uid: str) -> bool:
    return ORIGINAL_DOES_IOD_HAVE_PIXEL_DATA(sop_class_uid)


def does_iod_have_pixel_data(sop_class_uid: str) -> bool:
    """`highdicom._standard_utils.does_iod_have_pixel_data`, memoised."""
    return _has_pixel_data(str(sop_class_uid))


_REPLACEMENTS = {
    ORIGINAL_IS_ATTRIBUTE_IN_IOD: is_attribute_in_iod,
    ORIGINAL_DOES_IOD_HAVE_PIXEL_DATA: does_iod_have_pixel_data,
}


def install() -> int:
    """Replace the originals in every loaded highdicom module; how many names were replaced.

    Idempotent. `highdicom._standard_utils` itself is patched too, so its own callers
    (`is_multiframe_image`, ...) use the memoised look-up.
    """
    import highdicom.pr  # noqa: F401 - load every module that imported the look-ups by name
    import highdicom.seg  # noqa: F401
    import highdicom.sr  # noqa: F401

    replaced = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "highdicom" or name.startswith("highdicom.")):
            continue
        for attribute, value in list(vars(module).items()):
            replacement = _REPLACEMENTS.get(value) if callable(value) else None
            if replacement is not None:
                setattr(module, attribute, replacement)
                replaced += 1
    return replaced


install()
