"""Replacement values: keyed pseudonymous UIDs, per-patient date shifts, dummies by VR.

Everything derived from an original value is an HMAC-SHA256 under the de-identification key, so
the same input maps to the same output under one key (a study stays a study, a SEG made from a
source still references it), and nothing maps back without the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

# D: "a non-zero length value that may be a dummy value and consistent with the VR" (PS3.15 E.1).
DUMMY = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "FD": 0.0,
    "FL": 0.0,
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "SL": 0,
    "SS": 0,
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UL": 0,
    "UR": "ANONYMOUS",
    "US": 0,
    "UT": "ANONYMOUS",
}
MAX_SHIFT_DAYS = 365


def _digest(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def pseudonymous_uid(key: bytes, uid: str) -> str:
    """`2.25.<int>` of a UUID (version 8, RFC 9562) made of HMAC(key, uid): PS3.5 B.2."""
    value = int.from_bytes(_digest(key, "uid", uid.strip("\x00 "))[:16], "big")
    value &= ~(0xF << 76)
    value |= 0x8 << 76  # version 8
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 9562 variant
    return f"2.25.{value}"


def pseudonym(key: bytes, patient_id: str) -> str:
    """A Patient ID replacement: the same for one patient under one key (PS3.15 E.1.1 note 3)."""
    return "ANON-" + _digest(key, "patient", patient_id).hex()[:16].upper()


def shift_days(key: bytes, patient_id: str) -> int:
    """The patient's date offset: 1 to `MAX_SHIFT_DAYS` days, earlier or later, never 0."""
    n = int.from_bytes(_digest(key, "dates", patient_id)[:8], "big") % (2 * MAX_SHIFT_DAYS)
    return n - MAX_SHIFT_DAYS if n < MAX_SHIFT_DAYS else n - MAX_SHIFT_DAYS + 1


def shift_date(text: str, days: int) -> str | None:
    """A DA value (YYYYMMDD) moved by `days`; None when it is not a valid full date."""
    try:
        date = dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None
    if len(text) != 8:
        return None
    return (date + dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(text: str, days: int) -> str | None:
    """A DT value moved by `days` (time of day, fraction and UTC offset kept); None if invalid."""
    shifted = shift_date(text[:8], days) if len(text) >= 8 else None
    return None if shifted is None else shifted + text[8:]


def shift_value(vr: str, value: str, days: int) -> str | None:
    """A DA / DT / TM value (multi-valued with backslashes) shifted; TM is kept (whole days)."""
    if vr == "TM":
        return value
    shift = shift_date if vr == "DA" else shift_datetime
    parts = [shift(v.strip(), days) for v in value.split("\\")]
    return None if any(p is None for p in parts) else "\\".join(parts)  # type: ignore[arg-type]
