"""What `vision serve` is told about security: tokens, TLS, metrics, reflection, rate, audit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.security.policy import METRICS_MODES
from serving.security.ratelimit import RateLimit
from serving.security.tls import TlsFiles


@dataclass(frozen=True)
class SecuritySettings:
    """Auth is on when a token file is given (or `ServerConfig.api_key` is set).

    `metrics`: `public` (anyone), `token` (role `metrics` when auth is on), `off` (no route).
    `reflection`: gRPC server reflection registered (any valid token when auth is on).
    """

    tokens_file: Path | None = None
    tls: TlsFiles | None = None
    metrics: str = "token"
    reflection: bool = True
    rate_limit: RateLimit | None = None
    audit_file: Path | None = None

    def __post_init__(self) -> None:
        if self.metrics not in METRICS_MODES:
            raise ValueError(f"metrics {self.metrics!r}: use one of {', '.join(METRICS_MODES)}")
