"""`vision review`: accounts and tokens of the review tool; its `vision serve` flags.

    vision review add-user NAME --role reviewer|supervisor|admin [--dir DIR]
    vision review add-token NAME --role ROLE [--dir DIR]
    vision review export --format coco|voc|masks|dicom-seg --out FILE.zip [--model M]
        [--status accepted,corrected] [--since DATE] [--until DATE] [--dir DIR]
    vision review report --model M [--version V] [--since DATE] [--until DATE] [--dir DIR]

The password is read from standard input when it is not a terminal (one line), else prompted
for twice; never from the command line, where `ps` would show it. The token is printed once:
only its hash is stored.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import sys
from pathlib import Path

DEFAULT_DIR = Path("review-data")


def add_review_arguments(p: argparse.ArgumentParser) -> None:
    """The review tool's `vision serve` flags (the tool is off unless --review-dir is given)."""
    g = p.add_argument_group("review tool at /review/ (off unless --review-dir is given)")
    g.add_argument("--review-dir", type=Path, help="cases, images and the review database")
    g.add_argument("--review-config", type=Path, help="YAML: session timeouts, capture policy")
    g.add_argument(
        "--review-dicomweb",
        metavar="URL",
        help="the PACS's DICOMweb root (e.g. http://127.0.0.1:8042/dicom-web): DICOM cases "
        "open in OHIF at /review/ohif/ (installed by scripts/ohif.sh), read through /review/",
    )


def review_settings_from(args: argparse.Namespace):
    """The review settings the flags describe, or None when the tool is off."""
    if args.review_dir is None:
        given = [f for f in ("review_config", "review_dicomweb") if getattr(args, f, None)]
        if given:
            from vision.errors import ConfigError

            flag = "--" + given[0].replace("_", "-")
            raise ConfigError(f"{flag} needs --review-dir (where the cases live)")
        return None
    from review.settings import load_settings

    settings = load_settings(args.review_dir, args.review_config)
    dicomweb = getattr(args, "review_dicomweb", None)
    return dataclasses.replace(settings, dicomweb_url=dicomweb) if dicomweb else settings


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision review`."""
    from review.accounts import ROLES

    p = argparse.ArgumentParser(prog="vision review", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name, text in (("add-user", "add or replace a user"), ("add-token", "a script token")):
        s = sub.add_parser(name, help=text)
        s.add_argument("name")
        s.add_argument("--role", required=True, choices=ROLES)
        s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the --review-dir")
    e = sub.add_parser("export", help="reviewed cases as training data (a zip)")
    e.add_argument("--format", default="coco", choices=("coco", "voc", "masks", "dicom-seg"))
    e.add_argument("--out", type=Path, required=True, help="the zip to write")
    r = sub.add_parser("report", help="per-class precision / recall against the reviewers (JSON)")
    r.add_argument("--version", default="")
    for s, model_required in ((e, False), (r, True)):
        s.add_argument("--model", default="", required=model_required)
        s.add_argument("--since", default="", help="epoch seconds or an ISO date")
        s.add_argument("--until", default="")
        s.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the --review-dir")
    e.add_argument("--status", default="accepted,corrected")
    return p


def _offline(args: argparse.Namespace) -> int:
    """`export` / `report` on the review data dir, without a server."""
    from review.db import Database
    from review.export import ExportOptions, write_zip
    from review.report import ReportOptions, build
    from review.store import CaseStore

    if not (args.dir / "review.sqlite").is_file():
        raise FileNotFoundError(f"no review database in {args.dir} (give --dir, the --review-dir)")
    store = CaseStore(Database(args.dir / "review.sqlite"), args.dir)
    params = {"model": args.model, "since": args.since, "until": args.until}
    if args.action == "report":
        print(
            json.dumps(
                build(store, ReportOptions.from_params({**params, "version": args.version})),
                indent=1,
            )
        )
        return 0
    options = ExportOptions.from_params({**params, "format": args.format, "status": args.status})
    with open(args.out, "wb") as target:
        write_zip(store, options, target)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str]) -> int:
    """`vision review add-user | add-token | export | report`."""
    args = build_parser().parse_args(argv)
    if args.action in ("export", "report"):
        from review.export import ExportError
        from review.report import ReportError

        try:
            return _offline(args)
        except (ExportError, ReportError) as exc:
            print(f"vision review {args.action}: {exc}", file=sys.stderr)
            return 2
    from review.accounts import AccountError, Accounts
    from review.db import Database
    from review.settings import load_settings

    accounts = Accounts(Database(load_settings(args.dir).database))
    try:
        if args.action == "add-user":
            accounts.add_user(args.name, args.role, _password())
            print(f"user {args.name} ({args.role}) saved in {args.dir}")
        else:
            token = accounts.add_token(args.name, args.role)
            print(token)
            print(f"token {args.name} ({args.role}): shown once, stored hashed", file=sys.stderr)
    except (AccountError, ValueError) as exc:
        print(f"vision review: {exc}", file=sys.stderr)
        return 2
    return 0
