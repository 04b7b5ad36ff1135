"""Who may call what: the access rule of every RPC and HTTP route (one table per transport).

Roles: `infer` (inference and model information), `admin` (repository load / unload / index
and every administrative route), `metrics` (Prometheus `/metrics`; statistics also accept
`admin`). A method or route that has no rule here is refused when auth is on, and
`tests/security/test_access_matrix.py` fails until it gets one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from starlette.routing import compile_path

INFER, ADMIN, METRICS = "infer", "admin", "metrics"
ROLES = frozenset({INFER, ADMIN, METRICS})


@dataclass(frozen=True)
class Access:
    """What a call needs: `open` (nobody signs in), `health` (open for the whole-server
    query only), `signed_in` (any known token), `roles` (a token with one of `roles`), or
    `delegated` (an HTTP mount that authenticates its own users)."""

    kind: str
    roles: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> str:
        """The rule in words, for refusals and the docs."""
        if self.kind == "roles":
            return "a token with role " + " or ".join(sorted(self.roles))
        return {"signed_in": "any valid token", "health": "nothing (server health)"}.get(
            self.kind, self.kind
        )


OPEN = Access("open")
HEALTH = Access("health")
SIGNED_IN = Access("signed_in")
DELEGATED = Access("delegated")
INFER_ROLE = Access("roles", frozenset({INFER}))
ADMIN_ROLE = Access("roles", frozenset({ADMIN}))
METRICS_ROLE = Access("roles", frozenset({METRICS}))
STATISTICS = Access("roles", frozenset({METRICS, ADMIN}))

_VISION = "/vision.v1.VisionService/"
_KSERVE = "/inference.GRPCInferenceService/"
_HEALTH = "/grpc.health.v1.Health/"
REFLECTION_METHODS = ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",)

GRPC_POLICY: Mapping[str, Access] = {
    **{
        _VISION + name: INFER_ROLE
        for name in (
            "Detect",
            "Segment",
            "Explain",
            "Inspect",
            "SegmentVolume",
            "ListModels",
            "GetModelMetadata",
        )
    },
    _KSERVE + "ServerLive": OPEN,
    _KSERVE + "ServerReady": OPEN,
    **{
        _KSERVE + name: INFER_ROLE
        for name in (
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelInfer",
            "ModelStreamInfer",
        )
    },
    # Triton's system shared memory is part of the inference data path (same-host clients
    # register a region, then infer from it), so it needs `infer`, as ModelInfer does.
    **{
        _KSERVE + name: INFER_ROLE
        for name in (
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
        )
    },
    _KSERVE + "ModelStatistics": STATISTICS,
    _KSERVE + "RepositoryIndex": ADMIN_ROLE,
    _KSERVE + "RepositoryModelLoad": ADMIN_ROLE,
    _KSERVE + "RepositoryModelUnload": ADMIN_ROLE,
    _HEALTH + "Check": HEALTH,
    _HEALTH + "Watch": HEALTH,
    **{method: SIGNED_IN for method in REFLECTION_METHODS},
}


def grpc_access(method: str) -> Access | None:
    """The rule for a full gRPC method name (`/package.Service/Method`), None when it has none."""
    return GRPC_POLICY.get(method)


@dataclass(frozen=True)
class HttpRule:
    """Requests whose method is in `methods` and whose path matches `path` (Starlette syntax,
    `{name}` placeholders; a trailing `/` makes it a prefix) need `access`."""

    methods: frozenset[str]
    path: str
    access: Access

    def __post_init__(self) -> None:
        pattern = self.path.rstrip("/") + "/{rest:path}" if self.path.endswith("/") else self.path
        object.__setattr__(self, "_regex", compile_path(pattern)[0])

    def matches(self, method: str, path: str) -> bool:
        """Whether a request (HEAD counts as GET) falls under this rule."""
        method = "GET" if method == "HEAD" else method
        return (not self.methods or method in self.methods) and bool(self._regex.match(path))

    def model(self, path: str) -> str:
        """The `{name}` (a model) in a path this rule matches, "" when it has none."""
        match = self._regex.match(path)
        return match.groupdict().get("name", "") if match else ""


def rule(methods: str, path: str, access: Access) -> HttpRule:
    """An `HttpRule` from a space-separated method list ("" for any method)."""
    return HttpRule(frozenset(methods.split()), path, access)


_MODEL = "/v2/models/{name}"
_VERSION = "/v2/models/{name}/versions/{version}"

KSERVE_RULES: tuple[HttpRule, ...] = (
    rule("GET", "/v2/health/live", OPEN),
    rule("GET", "/v2/health/ready", OPEN),
    rule("GET", "/v2", INFER_ROLE),
    rule("GET", "/v2/models/stats", STATISTICS),
    rule("GET", _MODEL + "/stats", STATISTICS),
    rule("GET", _VERSION + "/stats", STATISTICS),
    rule("GET", _MODEL + "/ready", INFER_ROLE),
    rule("GET", _VERSION + "/ready", INFER_ROLE),
    rule("GET", _MODEL, INFER_ROLE),
    rule("GET", _VERSION, INFER_ROLE),
    rule("POST", _MODEL + "/infer", INFER_ROLE),
    rule("POST", _VERSION + "/infer", INFER_ROLE),
    rule("POST", "/v2/repository/index", ADMIN_ROLE),
    rule("POST", "/v2/repository/models/{name}/load", ADMIN_ROLE),
    rule("POST", "/v2/repository/models/{name}/unload", ADMIN_ROLE),
    rule("GET POST", "/v2/systemsharedmemory/", INFER_ROLE),  # as the gRPC shared-memory RPCs
)

METRICS_MODES = ("public", "token", "off")


def metrics_rules(mode: str) -> tuple[HttpRule, ...]:
    """`/metrics` under `--metrics public|token|off` (off: the route is not mounted)."""
    if mode not in METRICS_MODES:
        raise ValueError(f"metrics mode {mode!r}: use one of {', '.join(METRICS_MODES)}")
    if mode == "off":
        return ()
    return (rule("GET", "/metrics", OPEN if mode == "public" else METRICS_ROLE),)


def http_rule(rules: Iterable[HttpRule], method: str, path: str) -> HttpRule | None:
    """The first rule that covers the request, None when none does."""
    for candidate in rules:
        if candidate.matches(method, path):
            return candidate
    return None


def http_access(rules: Iterable[HttpRule], method: str, path: str) -> Access | None:
    """The first matching rule's access, None when no rule covers the request."""
    found = http_rule(rules, method, path)
    return found.access if found is not None else None


_UNSAFE_PATH = re.compile(r"//|/\.\.?(/|$)")


def normalised_path(path: str) -> str | None:
    """The path rules are matched against; None for `//`, `/./` or `/../` segments (refused:
    a router that collapses them must never reach a route its rule did not cover)."""
    return None if _UNSAFE_PATH.search(path) else path
