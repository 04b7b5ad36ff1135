"""The transport-free decision for one call: who is calling, may they, and are they too fast.

The gRPC interceptor and the HTTP middleware describe each call as a `Call` and turn the
`Verdict` into a status (UNAUTHENTICATED / 401, PERMISSION_DENIED / 403,
RESOURCE_EXHAUSTED / 429). Every refusal and sign-in goes to the audit log, never the token.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.security.audit import AuditLog
from serving.security.policy import ADMIN, ROLES, Access
from serving.security.ratelimit import RateLimit, RateLimiter
from serving.security.tokens import Principal, TokenEntry, TokenStore, load_tokens, sha256_of

log = logging.getLogger(__name__)

API_KEY_NAME = "VISION_API_KEY"  # the principal name of the environment's single key
_SEEN_LIMIT = 10_000
_LIMITED_LOG_EVERY_S = 10.0

NO_TOKEN = "no token: send 'authorization: Bearer <token>' (make tokens with `vision token new`)"
MALFORMED = "malformed authorization: send exactly one 'authorization: Bearer <token>'"
UNKNOWN = "unknown or revoked token: send a token listed in the server's token file"


class Outcome(enum.Enum):
    """How a call was judged."""

    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True)
class Call:
    """One call as the guard sees it: the rule it falls under and what the caller sent."""

    api: str  # "grpc" or "http"
    target: str  # the gRPC method, or "METHOD /path"
    access: Access | None  # None: no rule covers it
    authorization: Sequence[str | bytes]  # every authorization header / metadata value
    peer: str  # the client's address, without port
    subject: str = ""  # what an admin call acts on (a model name), for the audit log


@dataclass(frozen=True)
class Verdict:
    """The decision; `message` is safe to send to the caller."""

    outcome: Outcome
    message: str = ""
    principal: Principal | None = None
    retry_after_s: float = 0.0

    @property
    def allowed(self) -> bool:
        """Whether the call may go on."""
        return self.outcome is Outcome.ALLOWED


def _store(tokens_file: Path | None, api_key: str) -> TokenStore:
    store = load_tokens(tokens_file) if tokens_file is not None else TokenStore()
    if api_key:
        store = store.with_entry(TokenEntry(API_KEY_NAME, ROLES, sha256=sha256_of(api_key)))
    return store


def bearer(values: Sequence[str | bytes]) -> tuple[str | None, str]:
    """(token, "") from exactly one `Bearer <token>` value, else (None, why it was refused)."""
    if not values:
        return None, NO_TOKEN
    value = values[0]
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    scheme, _, token = text.strip().partition(" ")
    if len(values) != 1 or scheme.lower() != "bearer" or not token.strip():
        return None, MALFORMED
    return token.strip(), ""


class Guard:
    """Judges calls against the token store, the access rules and the rate limit."""

    def __init__(
        self,
        tokens_file: Path | None = None,
        api_key: str = "",
        rate_limit: RateLimit | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.tokens_file = tokens_file
        self._api_key = api_key
        self.store = _store(tokens_file, api_key)
        self.enabled = tokens_file is not None or bool(api_key)
        self.limiter = RateLimiter(rate_limit) if rate_limit is not None else None
        self.audit = audit or AuditLog()
        self._seen: set[tuple[str, str]] = set()
        self._limited_logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Read the token file again (SIGHUP); an unusable file keeps the current tokens."""
        if self.tokens_file is None:
            return
        self.store = _store(self.tokens_file, self._api_key)
        with self._lock:
            self._seen.clear()
        self.audit.record("tokens_reloaded", tokens=len(self.store))

    def check(self, call: Call) -> Verdict:
        """Allow, or say why not (unknown caller, wrong role, too fast)."""
        if call.access is not None and call.access.kind in ("open", "delegated"):
            return Verdict(Outcome.ALLOWED)
        if not self.enabled:
            return self._limited(call, None) or Verdict(Outcome.ALLOWED)
        token, problem = bearer(call.authorization)
        principal = self.store.lookup(token) if token else None
        if token and principal is None and self.store.has_slow_entries:
            # scrypt costs; a stranger's guesses spend their own peer's budget first
            limited = self._limited(call, None)
            if limited:
                return limited
            principal = self.store.verify_slow(token)
        limited = self._limited(call, principal)
        if limited:
            return limited
        if principal is None:
            return self._refuse(call, Outcome.UNAUTHENTICATED, problem or UNKNOWN, None)
        return self._authorise(call, principal)

    def _authorise(self, call: Call, principal: Principal) -> Verdict:
        access = call.access
        if access is None:
            message = (
                "no access rule covers this call, so it is refused to every token (rules live "
                "in serving/security/policy.py)"
            )
            return self._refuse(call, Outcome.PERMISSION_DENIED, message, principal)
        if access.kind == "roles" and not principal.roles & access.roles:
            message = (
                f"token {principal.name!r} (roles {', '.join(sorted(principal.roles))}) "
                f"may not call {call.target}: it needs {access.describe()}"
            )
            return self._refuse(call, Outcome.PERMISSION_DENIED, message, principal)
        self._signed_in(call, principal)
        if access.kind == "roles" and access.roles == {ADMIN}:
            self.audit.record(
                "admin_call",
                api=call.api,
                target=call.target,
                subject=call.subject,
                token=principal.name,
                peer=call.peer,
            )
        return Verdict(Outcome.ALLOWED, principal=principal)

    def _signed_in(self, call: Call, principal: Principal) -> None:
        key = (principal.name, call.peer)
        with self._lock:
            if key in self._seen:
                return
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen.add(key)
        self.audit.record(
            "sign_in",
            api=call.api,
            token=principal.name,
            roles=sorted(principal.roles),
            peer=call.peer,
        )

    def _refuse(
        self, call: Call, outcome: Outcome, message: str, principal: Principal | None
    ) -> Verdict:
        self.audit.record(
            outcome.value,
            api=call.api,
            target=call.target,
            peer=call.peer,
            token=principal.name if principal else None,
            reason=message.partition(":")[0],
        )
        return Verdict(outcome, message, principal)

    def _limited(self, call: Call, principal: Principal | None) -> Verdict | None:
        if self.limiter is None:
            return None
        key = f"token:{principal.name}" if principal else f"peer:{call.peer}"
        wait = self.limiter.allow(key)
        if wait == 0.0:
            return None
        self._log_limited(call, key, principal)
        message = (
            f"rate limit of {self.limiter.limit.rate:g} requests/s (burst "
            f"{self.limiter.limit.burst:g}) exceeded: retry in {wait:.2f} s or slow down"
        )
        return Verdict(Outcome.RATE_LIMITED, message, principal, retry_after_s=wait)

    def _log_limited(self, call: Call, key: str, principal: Principal | None) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._limited_logged.get(key, -_LIMITED_LOG_EVERY_S) < _LIMITED_LOG_EVERY_S:
                return
            if len(self._limited_logged) >= _SEEN_LIMIT:
                self._limited_logged.clear()
            self._limited_logged[key] = now
        self.audit.record(
            "rate_limited",
            api=call.api,
            target=call.target,
            peer=call.peer,
            token=principal.name if principal else None,
        )
