"""`vision dicom-node SUBCOMMAND`: the DICOM node's command line.

`check-rules RULES DICOM...` says which routing rule each file would match and why, so that a
PACS administrator can test rules before going live. Exit 0: every file matched a rule; 1: some
did not (or could not be read); 2: the rules file is invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_node.routing import RoutingRules, Rule
from vision.config import CONFIG_FILENAME
from vision.errors import ConfigError

BUNDLED = "bundled"


def _check_rules_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vision dicom-node check-rules",
        description="Say which routing rule each DICOM file would match, and why.",
    )
    p.add_argument("rules", help=f"the rules file (YAML), or '{BUNDLED}' for the bundled rules")
    p.add_argument("files", nargs="+", type=Path, metavar="DICOM", help="DICOM files to test")
    p.add_argument(
        "--repository",
        type=Path,
        help="model repository: also check that every model a rule names is in it",
    )
    return p


def _repository_models(folder: Path) -> set[str]:
    if not folder.is_dir():
        raise ConfigError(f"--repository {folder}: no such folder; give the model repository")
    return {p.parent.name for p in folder.glob(f"*/{CONFIG_FILENAME}")}


def _load(rules: str, repository: Path | None) -> RoutingRules:
    path = None if rules == BUNDLED else Path(rules)
    known = _repository_models(repository) if repository is not None else None
    return RoutingRules.load(path, known_models=known)


def _block(path: Path, rules: RoutingRules) -> tuple[bool, list[str]]:
    """The lines printed for one file, and whether it matched a rule."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return False, [f"{path}: cannot read as DICOM ({type(exc).__name__}): not routed"]
    lines: list[str] = []
    route = rules.match(ds)
    if route is None:
        lines.append(f"{path}: no rule matched: the series would be set aside")
    else:
        lines.append(f"{path}: rule {route.rule!r} -> {', '.join(route.models)}")
    for rule, matched, reasons in rules.explain(ds):
        lines.extend(_rule_lines(rule, matched, reasons))
        if matched:
            break  # later rules are never tried
    return route is not None, lines


def _rule_lines(rule: Rule, matched: bool, reasons: list[str]) -> list[str]:
    mark = "matches" if matched else "does not match"
    return [f"  {rule.name}: {mark}"] + [f"    {reason}" for reason in reasons]


def check_rules(argv: list[str]) -> int:
    """`vision dicom-node check-rules RULES DICOM...`; exit 0, 1 (some unmatched), 2 (bad rules)."""
    args = _check_rules_parser().parse_args(argv)
    try:
        rules = _load(args.rules, args.repository)
    except ConfigError as exc:
        print(f"vision dicom-node check-rules: {exc}", file=sys.stderr)
        return 2
    all_matched = True
    for path in args.files:
        matched, lines = _block(path, rules)
        print("\n".join(lines))
        all_matched &= matched
    return 0 if all_matched else 1


SUBCOMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "check-rules": ("say which routing rule DICOM files would match, and why", check_rules),
}


def main(argv: list[str]) -> int:
    """`vision dicom-node <subcommand> ...`."""
    p = argparse.ArgumentParser(prog="vision dicom-node", description=__doc__)
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    for name, (help_text, _) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        p.parse_args(argv)  # usage (exit 2), or --help (exit 0)
        return 2
    return SUBCOMMANDS[argv[0]][1](argv[1:])
