"""Bearer tokens with roles, kept as hashes in a YAML or JSON file (`--auth-tokens FILE`).

    tokens:
      - name: scanner-1
        roles: [infer]
        sha256: 9f86d0...          # hex SHA-256 of the token (what `vision token new` writes)
      - name: ops
        roles: [admin, metrics]
        scrypt: scrypt$16384$8$1$<salt b64>$<hash b64>

A token is random (`vision token new` makes 256-bit ones), so SHA-256 is enough; scrypt is
accepted for tokens chosen by people, at ~50 ms per check of an unknown token. Tokens are
compared as hashes with `hmac.compare_digest`, every entry every time (no early exit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serving.security.policy import ROLES

TOKEN_PREFIX = "vt_"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_CACHE_LIMIT = 1024


class TokenFileError(ValueError):
    """The token file cannot be used; the message says which entry and how to fix it."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to."""

    name: str
    roles: frozenset[str]


@dataclass(frozen=True)
class TokenEntry:
    """One stored token: its owner and the token's hash (never the token)."""

    name: str
    roles: frozenset[str]
    sha256: bytes = b""
    scrypt: str = ""

    def to_json(self) -> dict[str, Any]:
        """The entry as written to the file."""
        entry: dict[str, Any] = {"name": self.name, "roles": sorted(self.roles)}
        if self.sha256:
            entry["sha256"] = self.sha256.hex()
        else:
            entry["scrypt"] = self.scrypt
        return entry


def sha256_of(token: str) -> bytes:
    """The SHA-256 digest of a token."""
    return hashlib.sha256(token.encode()).digest()


def scrypt_hash(token: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) of a token."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


def _scrypt_matches(token: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    expected = base64.b64decode(digest)
    given = hashlib.scrypt(
        token.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=256 * 1024 * 1024,
        dklen=len(expected),
    )
    return hmac.compare_digest(given, expected)


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenStore:
    """The known tokens; `authenticate` maps a presented token to its principal."""

    def __init__(self, entries: Sequence[TokenEntry] = ()) -> None:
        self.entries = tuple(entries)
        self._verified: dict[bytes, Principal] = {}  # sha256(token) -> principal, scrypt hits

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def has_slow_entries(self) -> bool:
        """Whether any entry is scrypt-hashed (an unknown token then costs scrypt checks)."""
        return any(entry.scrypt for entry in self.entries)

    def lookup(self, token: str) -> Principal | None:
        """The principal for `token` among SHA-256 entries and verified scrypt tokens (cheap)."""
        digest = sha256_of(token)
        found = self._verified.get(digest)
        for entry in self.entries:
            if entry.sha256 and hmac.compare_digest(digest, entry.sha256):
                found = Principal(entry.name, entry.roles)
        return found

    def verify_slow(self, token: str) -> Principal | None:
        """Check `token` against the scrypt entries; a match is remembered (bounded)."""
        for entry in self.entries:
            if entry.scrypt and _scrypt_matches(token, entry.scrypt):
                principal = Principal(entry.name, entry.roles)
                if len(self._verified) >= _CACHE_LIMIT:
                    self._verified.clear()
                self._verified[sha256_of(token)] = principal
                return principal
        return None

    def authenticate(self, token: str) -> Principal | None:
        """The principal a token belongs to, None for an unknown token."""
        return self.lookup(token) or (self.verify_slow(token) if self.has_slow_entries else None)

    def with_entry(self, entry: TokenEntry) -> TokenStore:
        """A store that also holds `entry` (its name must be new)."""
        if any(existing.name == entry.name for existing in self.entries):
            raise TokenFileError(f"a token named {entry.name!r} exists: revoke it first")
        return TokenStore((*self.entries, entry))

    def without(self, name: str) -> TokenStore:
        """A store without the token called `name`."""
        kept = tuple(entry for entry in self.entries if entry.name != name)
        if len(kept) == len(self.entries):
            raise TokenFileError(f"no token named {name!r}")
        return TokenStore(kept)


def _roles(value: Any, where: str) -> frozenset[str]:
    roles = [value] if isinstance(value, str) else value
    if not isinstance(roles, list) or not roles:
        raise TokenFileError(f"{where}: 'roles' must be a non-empty list of {sorted(ROLES)}")
    unknown = set(roles) - ROLES
    if unknown:
        raise TokenFileError(f"{where}: unknown role(s) {sorted(unknown)}; use {sorted(ROLES)}")
    return frozenset(roles)


def _entry(raw: Any, where: str) -> TokenEntry:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
        raise TokenFileError(f"{where}: each token needs a 'name', 'roles' and a hash")
    where = f"{where} ({raw['name']!r})"
    roles = _roles(raw.get("roles"), where)
    sha, scrypt = raw.get("sha256"), raw.get("scrypt")
    if (sha is None) == (scrypt is None):
        raise TokenFileError(f"{where}: give exactly one of 'sha256' or 'scrypt'")
    if sha is not None:
        try:
            digest = bytes.fromhex(str(sha))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise TokenFileError(f"{where}: 'sha256' must be 64 hex digits")
        return TokenEntry(raw["name"], roles, sha256=digest)
    if (
        not isinstance(scrypt, str)
        or len(scrypt.split("$")) != 6
        or scrypt.split("$")[0] != "scrypt"
    ):
        raise TokenFileError(f"{where}: 'scrypt' must be scrypt$N$r$p$salt$hash (base64)")
    return TokenEntry(raw["name"], roles, scrypt=scrypt)


def parse_tokens(document: Any, source: str) -> TokenStore:
    """A store from a parsed document `{tokens: [...]}`; `source` names it in errors."""
    raws = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(raws, list):
        raise TokenFileError(f"{source}: expected a mapping with a 'tokens' list")
    entries = [_entry(raw, f"{source}: token {i + 1}") for i, raw in enumerate(raws)]
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TokenFileError(f"{source}: token names must be unique, repeated: {duplicates}")
    return TokenStore(entries)


def load_tokens(path: Path) -> TokenStore:
    """The store a token file holds (YAML, or JSON, which YAML reads too)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from exc
    try:
        document = yaml.safe_load(text) if text.strip() else {"tokens": []}
    except yaml.YAMLError as exc:
        raise TokenFileError(f"{path}: not valid YAML/JSON ({type(exc).__name__})") from exc
    return parse_tokens(document, str(path))


def save_tokens(path: Path, entries: Iterable[TokenEntry]) -> None:
    """Write the entries atomically (mode 0600): JSON for `.json` files, YAML otherwise."""
    document = {"tokens": [entry.to_json() for entry in entries]}
    if path.suffix.lower() == ".json":
        text = json.dumps(document, indent=2) + "\n"
    else:
        text = yaml.safe_dump(document, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
