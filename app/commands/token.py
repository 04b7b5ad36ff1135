"""`vision token`: make or revoke bearer tokens in a token file (only hashes are stored).

    vision token new NAME --role infer [--role admin] --file tokens.yaml [--scrypt]
    vision token revoke NAME --file tokens.yaml
    vision token list --file tokens.yaml

`new` prints the token once on stdout; the file keeps its SHA-256 (or scrypt) hash. A running
server reads the file again on SIGHUP.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving.security.policy import ROLES
from serving.security.tokens import (
    TokenEntry,
    TokenFileError,
    TokenStore,
    load_tokens,
    new_token,
    save_tokens,
    scrypt_hash,
    sha256_of,
)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vision token`."""
    p = argparse.ArgumentParser(prog="vision token", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="make a token, print it once, store its hash")
    new.add_argument("name", help="who the token is for (shown in the audit log)")
    new.add_argument(
        "--role", action="append", required=True, choices=sorted(ROLES), help="repeat for more"
    )
    new.add_argument("--scrypt", action="store_true", help="store an scrypt hash, not SHA-256")
    revoke = sub.add_parser("revoke", help="remove a token from the file")
    revoke.add_argument("name")
    listing = sub.add_parser("list", help="names and roles (never tokens)")
    for command in (new, revoke, listing):
        command.add_argument("--file", type=Path, required=True, help="the token file (YAML/JSON)")
    return p


def _existing(path: Path) -> TokenStore:
    return load_tokens(path) if path.exists() else TokenStore()


def make(name: str, roles: list[str], path: Path, use_scrypt: bool = False) -> str:
    """Add a token for `name` with `roles` to the file at `path`; returns the token."""
    token = new_token()
    if use_scrypt:
        entry = TokenEntry(name, frozenset(roles), scrypt=scrypt_hash(token))
    else:
        entry = TokenEntry(name, frozenset(roles), sha256=sha256_of(token))
    save_tokens(path, _existing(path).with_entry(entry).entries)
    return token


def main(argv: list[str]) -> int:
    """`vision token new|revoke|list ...`."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "new":
            token = make(args.name, args.role, args.file, args.scrypt)
            print(token)
            print(
                f"token {args.name!r} ({', '.join(sorted(set(args.role)))}) added to {args.file}:"
                " this is the only time it is shown; send 'authorization: Bearer <token>'."
                " A running server picks it up on SIGHUP.",
                file=sys.stderr,
            )
        elif args.action == "revoke":
            save_tokens(args.file, load_tokens(args.file).without(args.name).entries)
            print(f"token {args.name!r} removed from {args.file}", file=sys.stderr)
        else:
            for entry in load_tokens(args.file).entries:
                print(f"{entry.name}\t{','.join(sorted(entry.roles))}")
    except TokenFileError as exc:
        print(f"vision token: {exc}", file=sys.stderr)
        return 2
    return 0
