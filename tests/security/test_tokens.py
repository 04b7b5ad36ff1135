"""Token files, hashing, `vision token`, and the rate limiter's buckets (no server)."""

from __future__ import annotations

import json
import stat

import pytest
import yaml

from app.cli import main as vision
from serving.security.guard import Call, Guard, Outcome, bearer
from serving.security.policy import (
    ADMIN_ROLE,
    INFER_ROLE,
    KSERVE_RULES,
    OPEN,
    http_access,
    metrics_rules,
    normalised_path,
)
from serving.security.ratelimit import RateLimit, RateLimiter
from serving.security.tokens import (
    TokenEntry,
    TokenFileError,
    TokenStore,
    load_tokens,
    save_tokens,
    scrypt_hash,
    sha256_of,
)


def _new(capsys, *argv: str) -> str:
    assert vision(["token", "new", *argv]) == 0
    return capsys.readouterr().out.strip()


def test_token_new_prints_once_and_stores_only_the_hash(tmp_path, capsys):
    file = tmp_path / "tokens.yaml"
    token = _new(capsys, "scanner-1", "--role", "infer", "--file", str(file))
    assert token.startswith("vt_") and len(token) > 40
    text = file.read_text()
    assert token not in text and sha256_of(token).hex() in text
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert load_tokens(file).authenticate(token).name == "scanner-1"
    assert load_tokens(file).authenticate(token + "x") is None


def test_token_new_scrypt_list_revoke_json(tmp_path, capsys):
    file = tmp_path / "tokens.json"
    token = _new(
        capsys, "ops", "--role", "admin", "--role", "metrics", "--scrypt", "--file", str(file)
    )
    document = json.loads(file.read_text())
    assert document["tokens"][0]["scrypt"].startswith("scrypt$") and token not in file.read_text()
    store = load_tokens(file)
    assert store.authenticate(token).roles == {"admin", "metrics"}
    assert store.lookup(token) is not None  # verified once: cached, no second scrypt run
    assert vision(["token", "list", "--file", str(file)]) == 0
    assert capsys.readouterr().out == "ops\tadmin,metrics\n"
    assert vision(["token", "new", "ops", "--role", "infer", "--file", str(file)]) == 2
    assert "exists" in capsys.readouterr().err
    assert vision(["token", "revoke", "ops", "--file", str(file)]) == 0
    assert load_tokens(file).authenticate(token) is None
    assert vision(["token", "revoke", "ops", "--file", str(file)]) == 2


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"tokens": [{"name": "a", "roles": ["root"], "sha256": "00" * 32}]}, "unknown role"),
        ({"tokens": [{"name": "a", "roles": [], "sha256": "00" * 32}]}, "non-empty list"),
        ({"tokens": [{"name": "a", "roles": ["infer"]}]}, "exactly one of"),
        ({"tokens": [{"name": "a", "roles": ["infer"], "sha256": "xyz"}]}, "64 hex digits"),
        ({"tokens": [{"name": "a", "roles": ["infer"], "scrypt": "md5$1"}]}, "scrypt$N$r$p"),
        ({"tokens": [{"roles": ["infer"], "sha256": "00" * 32}]}, "needs a 'name'"),
        ({"tokens": [{"name": "a", "roles": ["infer"], "sha256": "00" * 32}] * 2}, "unique"),
        (["not", "a", "mapping"], "'tokens' list"),
    ],
)
def test_bad_token_files_say_what_to_fix(tmp_path, document, message):
    file = tmp_path / "tokens.yaml"
    file.write_text(yaml.safe_dump(document))
    with pytest.raises(TokenFileError, match=message.replace("$", r"\$")):
        load_tokens(file)


def test_missing_token_file_names_it(tmp_path):
    with pytest.raises(TokenFileError, match="cannot read token file"):
        load_tokens(tmp_path / "absent.yaml")


def test_bearer_parsing():
    assert bearer(["Bearer abc"]) == ("abc", "")
    assert bearer([b"bearer abc"]) == ("abc", "")
    for values in ([], ["abc"], ["Basic abc"], ["Bearer "], ["Bearer a", "Bearer a"]):
        assert bearer(values)[0] is None


def _guard(tmp_path, **options) -> tuple[Guard, dict[str, str]]:
    tokens = {"infer": "t-infer", "admin": "t-admin"}
    entries = [
        TokenEntry(role, frozenset({role}), sha256=sha256_of(t)) for role, t in tokens.items()
    ]
    file = tmp_path / "tokens.yaml"
    save_tokens(file, entries)
    return Guard(file, **options), tokens


def _call(access, token: str | None = None, peer: str = "10.0.0.1") -> Call:
    values = [f"Bearer {token}"] if token else []
    return Call("grpc", "/x.Y/Z", access, values, peer)


def test_guard_outcomes(tmp_path):
    guard, tokens = _guard(tmp_path)
    assert guard.check(_call(OPEN)).allowed
    assert guard.check(_call(INFER_ROLE)).outcome is Outcome.UNAUTHENTICATED
    assert guard.check(_call(INFER_ROLE, "nope")).outcome is Outcome.UNAUTHENTICATED
    assert guard.check(_call(INFER_ROLE, tokens["infer"])).allowed
    denied = guard.check(_call(ADMIN_ROLE, tokens["infer"]))
    assert denied.outcome is Outcome.PERMISSION_DENIED and "role admin" in denied.message
    assert guard.check(_call(None, tokens["admin"])).outcome is Outcome.PERMISSION_DENIED


def test_guard_reload_picks_up_new_and_revoked_tokens(tmp_path):
    guard, tokens = _guard(tmp_path)
    save_tokens(
        guard.tokens_file, [TokenEntry("late", frozenset({"infer"}), sha256=sha256_of("t-late"))]
    )
    assert guard.check(_call(INFER_ROLE, "t-late")).outcome is Outcome.UNAUTHENTICATED
    guard.reload()
    assert guard.check(_call(INFER_ROLE, "t-late")).allowed
    assert guard.check(_call(INFER_ROLE, tokens["infer"])).outcome is Outcome.UNAUTHENTICATED
    guard.tokens_file.write_text("tokens: [oops")
    with pytest.raises(TokenFileError):
        guard.reload()
    assert guard.check(_call(INFER_ROLE, "t-late")).allowed  # a broken file keeps the old tokens


def test_rate_limit_per_token_and_per_peer(tmp_path):
    guard, tokens = _guard(tmp_path, rate_limit=RateLimit(0.001, 2))
    for _ in range(2):
        assert guard.check(_call(INFER_ROLE, tokens["infer"])).allowed
    limited = guard.check(_call(INFER_ROLE, tokens["infer"]))
    assert limited.outcome is Outcome.RATE_LIMITED and limited.retry_after_s > 0
    assert guard.check(_call(INFER_ROLE, tokens["admin"])).outcome is Outcome.PERMISSION_DENIED
    # strangers spend their peer's bucket: guessing tokens is rate limited too
    for _ in range(2):
        assert guard.check(_call(INFER_ROLE, "guess")).outcome is Outcome.UNAUTHENTICATED
    assert guard.check(_call(INFER_ROLE, "guess")).outcome is Outcome.RATE_LIMITED
    assert (
        guard.check(_call(INFER_ROLE, "guess", peer="10.0.0.2")).outcome is Outcome.UNAUTHENTICATED
    )
    assert guard.check(_call(OPEN)).allowed  # health is never limited


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(RateLimit(2.0, 3), clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.allow("a") == 0.0
    assert limiter.allow("a") > 0
    now[0] = 100.0
    assert [limiter.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # capped at the burst
    assert limiter.allow("a") > 0
    assert limiter.allow("b") == 0.0  # buckets are per client


@pytest.mark.parametrize(
    ("text", "rate", "burst"), [("50", 50, 50), ("0.5", 0.5, 1), ("10:40", 10, 40)]
)
def test_rate_limit_parse(text, rate, burst):
    assert RateLimit.parse(text) == RateLimit(rate, burst)


@pytest.mark.parametrize("text", ["", "x", "0", "-1", "5:0", "inf", "nan:3", "5:a"])
def test_rate_limit_parse_refuses(text):
    with pytest.raises(ValueError, match="RPS"):
        RateLimit.parse(text)


def test_http_rules():
    rules = (*metrics_rules("token"), *KSERVE_RULES)
    assert http_access(rules, "GET", "/v2/health/ready") is OPEN
    assert http_access(rules, "HEAD", "/v2/health/ready") is OPEN
    assert http_access(rules, "POST", "/v2/health/ready") is None
    assert http_access(rules, "POST", "/v2/repository/models/a/unload") is ADMIN_ROLE
    assert http_access(rules, "POST", "/v2/models/a/infer") is INFER_ROLE
    assert http_access(rules, "GET", "/v2/models/a/b/c") is None
    assert http_access(metrics_rules("public"), "GET", "/metrics") is OPEN
    assert metrics_rules("off") == ()
    with pytest.raises(ValueError, match="public, token, off"):
        metrics_rules("maybe")
    assert normalised_path("/v2/models/a") == "/v2/models/a"
    for tricky in ("//v2", "/v2/./models", "/v2/models/..", "/v2/../metrics"):
        assert normalised_path(tricky) is None


def test_store_compares_every_entry():
    entries = [
        TokenEntry(f"n{i}", frozenset({"infer"}), sha256=sha256_of(f"t{i}")) for i in range(3)
    ]
    store = TokenStore(entries)
    assert [store.lookup(f"t{i}").name for i in range(3)] == ["n0", "n1", "n2"]
    assert not TokenStore().has_slow_entries
    slow = TokenStore([TokenEntry("s", frozenset({"infer"}), scrypt=scrypt_hash("pw"))])
    assert slow.has_slow_entries and slow.lookup("pw") is None and slow.authenticate("pw")
