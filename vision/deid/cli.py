"""`vision deid IN OUT`: de-identify a DICOM file or a folder of them (the tree mirrored).

The key file (default ~/.config/vision/deid.key) is created with 32 random bytes (mode 0600)
when absent; the same key maps the same inputs to the same outputs. The run's JSON report
(default OUT/deid-report.json, or beside an output file) counts the actions per attribute and
lists refused files with the reason - file paths relative to IN, never an attribute value.
Exit code 0 when every DICOM file was written, 1 when some were refused.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from vision.deid import (
    DEFAULT_KEY_FILE,
    Deidentifier,
    DeidOptions,
    DeidRefusedError,
    PrivateTag,
    Regions,
    load_or_create_key,
)
from vision.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision deid`."""
    p = argparse.ArgumentParser(prog="vision deid", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="a DICOM file or a folder (searched recursively)")
    p.add_argument("output", type=Path, help="the output file or folder (must not be the input)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="32-byte key file")
    p.add_argument("--retain-uids", action="store_true", help="Retain UIDs Option")
    p.add_argument(
        "--retain-dates",
        action="store_true",
        help="Retain Longitudinal Temporal Information, Modified Dates (shift per patient)",
    )
    p.add_argument(
        "--keep-private",
        action="append",
        default=[],
        metavar="LIST",
        help="private attributes to keep: GGGG,CREATOR,EE[;GGGG,CREATOR,EE...] (repeatable)",
    )
    p.add_argument("--regions", type=Path, help="burned-in regions to blank (JSON or YAML)")
    p.add_argument("--report", type=Path, help="JSON report (default OUT/deid-report.json)")
    return p


def _pairs(source: Path, target: Path) -> list[tuple[Path, Path]]:
    if source.is_file():
        if target.is_dir():
            target = target / source.name
        return [(source, target)]
    if target == source or target.is_relative_to(source):
        raise ConfigError(f"{target}: the output folder must be outside the input folder")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    return [(p, target / p.relative_to(source)) for p in files]


def _options(args: argparse.Namespace) -> DeidOptions:
    tags = [t for item in args.keep_private for t in item.split(";") if t.strip()]
    return DeidOptions(
        retain_uids=args.retain_uids,
        retain_dates=args.retain_dates,
        keep_private=tuple(PrivateTag.parse(t) for t in tags),
        regions=Regions.load(args.regions) if args.regions else Regions(),
    )


class _Run:
    """The counts and refusals of one run (what goes into the report)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written, self.skipped = 0, 0
        self.actions: Counter[str] = Counter()
        self.attributes: Counter[tuple[str, str, str, str]] = Counter()
        self.refused: list[dict[str, str]] = []
        self.blanked: list[dict[str, object]] = []

    def name(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else path.name

    def one(self, deid: Deidentifier, src: Path, dst: Path) -> None:
        try:
            ds = pydicom.dcmread(src)
        except (InvalidDicomError, EOFError):
            self.skipped += 1
            return
        try:
            result = deid.apply(ds)
        except DeidRefusedError as exc:
            self.refused.append({"file": self.name(src), "reason": str(exc)})
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        result.dataset.save_as(dst, enforce_file_format=True)
        self.written += 1
        report = result.report
        for row in report.rows:
            self.actions[row.action] += 1
            self.attributes[(row.tag, row.keyword, row.action, row.why)] += 1
        if report.pixels == "blanked":
            self.blanked.append(
                {
                    "file": self.name(src),
                    "reason": report.burned_in_reason,
                    "regions": report.blanked,
                    "decompressed": report.decompressed,
                }
            )

    def to_dict(self, options: DeidOptions) -> dict[str, object]:
        return {
            "options": {
                "retain_uids": options.retain_uids,
                "retain_dates_modified": options.retain_dates,
                "keep_private": [
                    f"{t.group:04X},{t.creator},{t.element:02X}" for t in options.keep_private
                ],
                "region_rules": len(options.regions.rules),
            },
            "written": self.written,
            "refused": self.refused,
            "not_dicom": self.skipped,
            "actions": dict(sorted(self.actions.items())),
            "attributes": [
                {"tag": t, "keyword": k, "action": a, "why": w, "count": n}
                for (t, k, a, w), n in sorted(self.attributes.items())
            ],
            "blanked": self.blanked,
        }


def deid(argv: list[str]) -> int:
    """`vision deid IN OUT [flags]`."""
    args = build_parser().parse_args(argv)
    source, target = args.input.resolve(), args.output.resolve()
    if not source.exists():
        raise FileNotFoundError(f"{args.input}: no such file or folder")
    pairs = _pairs(source, target)
    if any(dst.resolve() == src for src, dst in pairs):
        raise ConfigError(f"{args.output}: would overwrite an input; choose another output")
    options = _options(args)
    deidentifier = Deidentifier(options, load_or_create_key(args.key_file))
    run = _Run(source)
    for src, dst in pairs:
        run.one(deidentifier, src, dst)
    report = args.report or ((target if source.is_dir() else target.parent) / "deid-report.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(run.to_dict(options), indent=2) + "\n")
    actions = ", ".join(f"{a} {n}" for a, n in sorted(run.actions.items())) or "none"
    print(
        f"de-identified {run.written} file(s), refused {len(run.refused)}, "
        f"not DICOM {run.skipped}; actions: {actions}; report {report}"
    )
    for item in run.refused:
        print(f"refused {item['file']}: {item['reason']}")
    return 1 if run.refused else 0
