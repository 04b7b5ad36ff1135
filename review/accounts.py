"""Local accounts, bearer tokens and sessions of the review tool.

Passwords are hashed with scrypt (`hashlib.scrypt`, a memory-hard KDF; n=2**14, r=8, p=1, a
16-byte salt per user), compared in constant time. Bearer tokens and session ids are random
32-byte values; only their SHA-256 digests are stored, so a copy of the database opens nothing.
A session expires after `idle_s` without a request or `absolute_s` after sign-in, whichever
comes first; each has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from review.db import Database

ROLES = ("reviewer", "supervisor", "admin")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
KDF = f"scrypt:n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}"
MIN_PASSWORD = 8
TOUCH_S = 15.0  # the idle clock is written at most this often
MAX_FAILURES, FAILURE_WINDOW_S = 10, 300.0  # failed sign-ins per user name, then a pause


class AccountError(ValueError):
    """A refused account operation (bad role, short password, unknown user)."""


class TooManyFailuresError(Exception):
    """Too many failed sign-ins for one user name lately; `retry_after_s` until the next try."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Principal:
    """Who is asking: the user (or token) name, role, and the session's CSRF token if any."""

    name: str
    role: str
    csrf: str | None = None  # None for bearer tokens: they need no CSRF token
    session: str | None = None  # the session cookie value, for sign-out

    @property
    def supervises(self) -> bool:
        """True for supervisors and admins (they may reopen closed cases)."""
        return self.role in ("supervisor", "admin")


def check_role(role: str) -> str:
    """`role` if it is one of ROLES, else AccountError saying which are."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024
    )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    """Users, tokens and sessions in the review database."""

    def __init__(self, db: Database, idle_s: float = 1800.0, absolute_s: float = 43200.0) -> None:
        self.db = db
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._failures: dict[str, list[float]] = {}
        self._failures_lock = threading.Lock()

    # --- users and tokens -----------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str) -> None:
        """Create or replace user `name` with `role`; the password is stored scrypt-hashed."""
        check_role(role)
        if not name or len(password) < MIN_PASSWORD:
            raise AccountError(f"give a user name and a password of at least {MIN_PASSWORD} chars")
        salt = secrets.token_bytes(16)
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO users (name, role, salt, hash, kdf, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, salt, _scrypt(password, salt), KDF, time.time()),
            )
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def add_token(self, name: str, role: str) -> str:
        """A new bearer token for scripts (shown once; only its digest is stored)."""
        check_role(role)
        token = secrets.token_urlsafe(32)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO tokens (digest, name, role, created_at) VALUES (?, ?, ?, ?)",
                (_digest(token), name, role, time.time()),
            )
        return token

    def verify_password(self, name: str, password: str) -> str | None:
        """The user's role when `password` is right, else None (same work either way)."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT role, salt, hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        salt = row["salt"] if row else b"\0" * 16
        computed = _scrypt(password, salt)
        if row is None or not hmac.compare_digest(computed, row["hash"]):
            return None
        return str(row["role"])

    def token_principal(self, token: str) -> Principal | None:
        """The principal of a bearer token, or None when it is unknown."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT name, role FROM tokens WHERE digest = ?", (_digest(token),)
            ).fetchone()
        return Principal(f"token:{row['name']}", row["role"]) if row else None

    # --- sessions ---------------------------------------------------------------------------

    def sign_in(self, name: str, password: str) -> tuple[str, Principal] | None:
        """A new session (cookie value, principal) when the password is right, else None.

        After MAX_FAILURES wrong passwords for a name within FAILURE_WINDOW_S, further tries
        raise TooManyFailuresError until the oldest failure leaves the window.
        """
        self._check_failures(name)
        role = self.verify_password(name, password)
        if role is None:
            with self._failures_lock:
                self._failures.setdefault(name, []).append(time.monotonic())
            return None
        with self._failures_lock:
            self._failures.pop(name, None)
        session, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
        with self.db.write() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
                (now - self.idle_s, now - self.absolute_s),
            )
            conn.execute(
                "INSERT INTO sessions (digest, user, csrf, created_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?)",
                (_digest(session), name, csrf, now, now),
            )
        return session, Principal(name, role, csrf, session)

    def _check_failures(self, name: str) -> None:
        now = time.monotonic()
        with self._failures_lock:
            recent = [t for t in self._failures.get(name, []) if now - t < FAILURE_WINDOW_S]
            self._failures[name] = recent
        if len(recent) >= MAX_FAILURES:
            raise TooManyFailuresError(FAILURE_WINDOW_S - (now - recent[0]))

    def session_principal(self, session: str) -> Principal | None:
        """The principal of a live session (its idle clock restarted), or None if expired.

        The idle clock is written at most every TOUCH_S seconds, so reads take no write lock.
        """
        now, digest = time.time(), _digest(session)
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT s.user, s.csrf, s.created_at, s.last_seen, u.role FROM sessions s "
                "JOIN users u ON u.name = s.user WHERE s.digest = ?",
                (digest,),
            ).fetchone()
        if row is None:
            return None
        expired = now - row["last_seen"] > self.idle_s or now - row["created_at"] > self.absolute_s
        if expired or now - row["last_seen"] > TOUCH_S:
            with self.db.write() as conn:
                if expired:
                    conn.execute("DELETE FROM sessions WHERE digest = ?", (digest,))
                else:
                    touch = "UPDATE sessions SET last_seen = ? WHERE digest = ?"
                    conn.execute(touch, (now, digest))
        if expired:
            return None
        return Principal(row["user"], row["role"], row["csrf"], session)

    def sign_out(self, session: str) -> None:
        """End a session."""
        with self.db.write() as conn:
            conn.execute("DELETE FROM sessions WHERE digest = ?", (_digest(session),))
