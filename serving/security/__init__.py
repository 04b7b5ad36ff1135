"""Security: bearer tokens with roles, access rules, TLS / mTLS, rate limits, the audit log."""

from serving.security.audit import AuditLog
from serving.security.guard import Guard, Outcome, Verdict
from serving.security.policy import ADMIN, INFER, METRICS, ROLES, Access
from serving.security.ratelimit import RateLimit, RateLimiter
from serving.security.settings import SecuritySettings
from serving.security.tls import ClientTls, GrpcTls, HttpTls, TlsError, TlsFiles
from serving.security.tokens import Principal, TokenFileError, TokenStore

__all__ = [
    "ADMIN",
    "INFER",
    "METRICS",
    "ROLES",
    "Access",
    "AuditLog",
    "ClientTls",
    "GrpcTls",
    "Guard",
    "HttpTls",
    "Outcome",
    "Principal",
    "RateLimit",
    "RateLimiter",
    "SecuritySettings",
    "TlsError",
    "TlsFiles",
    "TokenFileError",
    "TokenStore",
    "Verdict",
]
