"""Which Table E.1-1 action applies to an attribute, under the options in use.

`rule_for(tag)` finds the table row (exact tag, or the repeating groups 50xx / 60xx of curves and
overlays); `action(rule, options)` gives the action code: an option's code overrides the Basic
Profile's where the option is in use and its column has one (PS3.15 E.1: "A requirement for an
Option, when implemented, overrides any requirement for the underlying Profile").

The choice codes (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) depend on the attribute's Type in the IOD at hand,
which a generic de-identifier does not know. They resolve so the object stays valid in the IODs
this server reads and writes, with no identifying value left in any case:

- X/Z, X/Z/D -> Z (zero length is allowed for Type 2 and Type 3, so it never breaks an IOD and
  carries no more information than removal), except D for the Type 1 attributes in `TYPE1`;
- X/D -> X, except D for `TYPE1`; Z/D -> Z, except D for `TYPE1`;
- X/Z/U* -> U* (the sequence kept, every UID in it replaced: results reference their sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from vision.deid.table import COLUMNS, TABLE_E1_1

# Type 1 in an IOD this server reads or writes (PS3.3): Acquisition DateTime in Ophthalmic
# Photography; Content Date / Time in the SR Document General and Segmentation modules; Device
# Serial Number in Enhanced General Equipment (SEG).
TYPE1 = frozenset({0x0008002A, 0x00080023, 0x00080033, 0x00181000})

OPTION_COLUMNS = {"uids": "retain_uids", "mod": "retain_dates"}


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1: the Basic Profile's code and each option column's (or '')."""

    tag: str
    name: str
    basic: str
    options: dict[str, str]
    in_standard_iods: bool


@cache
def _table() -> tuple[dict[int, Rule], list[Rule]]:
    exact: dict[int, Rule] = {}
    patterns: list[Rule] = []
    for line in TABLE_E1_1.splitlines():
        cells = dict(zip(COLUMNS, line.split(",", len(COLUMNS) - 1), strict=True))
        options = {k: cells[k] for k in COLUMNS[3:-1] if cells[k]}
        rule = Rule(cells["tag"], cells["name"], cells["basic"], options, cells["iod"] == "Y")
        if "x" in rule.tag:
            patterns.append(rule)
        else:
            exact[int(rule.tag, 16)] = rule
    return exact, patterns


def rules() -> list[Rule]:
    """Every row of the table (exact tags, then the repeating-group patterns)."""
    exact, patterns = _table()
    return [*exact.values(), *patterns]


def _matches(pattern: str, tag: int) -> bool:
    text = f"{tag:08X}"
    return all(p in ("x", t) for p, t in zip(pattern.upper().replace("X", "x"), text, strict=True))


def rule_for(tag: int) -> Rule | None:
    """The table row for `tag`, or None when the table does not list it."""
    exact, patterns = _table()
    if tag in exact:
        return exact[tag]
    group = tag >> 16
    for rule in patterns:
        # 50xx / 60xx are the even groups 5000-501E / 6000-601E only (PS3.5 7.6).
        if group & 1 == 0 and (group & 0xFF) <= 0x1E and _matches(rule.tag, tag):
            return rule
    return None


def action(rule: Rule, tag: int, retain_uids: bool, retain_dates: bool) -> tuple[str, str]:
    """(action code, what decided it: 'basic', an option name or 'basic (choice)')."""
    in_use = {"uids": retain_uids, "mod": retain_dates}
    for column, used in in_use.items():
        code = rule.options.get(column)
        if used and code:
            return code, OPTION_COLUMNS[column]
    code = rule.basic
    if "/" not in code:
        return code, "basic"
    return _choose(code, tag), f"basic ({code})"


def _choose(code: str, tag: int) -> str:
    if code == "X/Z/U*":
        return "U*"
    if tag in TYPE1 and "D" in code:
        return "D"
    return "Z" if "Z" in code else "X"
