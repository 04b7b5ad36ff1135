"""Client-side TLS and token flags shared by `vision infer` and `vision line`.

Tokens are never taken on the command line (`ps` shows argv): they come from a file
(`--token-file`) or the environment (`VISION_TOKEN`; `VISION_API_KEY` is still read).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from serving.security.tls import ClientTls
from vision.errors import ConfigError

TOKEN_ENV = "VISION_TOKEN"
LEGACY_TOKEN_ENV = "VISION_API_KEY"


class _RemovedApiKey(argparse.Action):
    """`--api-key` is refused with the way to pass a token instead."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[str] | None,
        option_string: str | None = None,
    ) -> None:
        """Stop parsing with a message that names the replacements."""
        parser.error(
            "--api-key was removed (the command line is visible in `ps`): put the token in a "
            f"file and pass --token-file FILE, or set {TOKEN_ENV} in the environment"
        )


def add_client_security_args(parser: argparse.ArgumentParser) -> None:
    """Add --tls-ca/--tls-cert/--tls-key and --token-file (and the refusal of --api-key)."""
    group = parser.add_argument_group("security (docs/security.md)")
    group.add_argument("--tls-ca", type=Path, help="PEM CA(s) to trust: connect over TLS")
    group.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    group.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    group.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the bearer token (default: ${TOKEN_ENV} in the environment)",
    )
    group.add_argument("--api-key", action=_RemovedApiKey, help=argparse.SUPPRESS)


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    """The TLS files the flags name, or None for a plaintext channel."""
    if args.tls_ca is None:
        if args.tls_cert is not None or args.tls_key is not None:
            raise ConfigError(
                "--tls-cert/--tls-key need --tls-ca CA.pem (the CA that signed the server)"
            )
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("mutual TLS needs both --tls-cert FILE and --tls-key FILE")
    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key)


def client_token(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The bearer token: the first line of --token-file, else $VISION_TOKEN; "" for none."""
    if args.token_file is not None:
        return read_token_file(args.token_file)
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV, "") or env.get(LEGACY_TOKEN_ENV, "")


def read_token_file(path: Path) -> str:
    """The token in `path` (surrounding whitespace ignored); ConfigError when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc.strerror})") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or any(c.isspace() for c in lines[0]):
        raise ConfigError(
            f"--token-file {path}: write the token alone on one line (as `vision token new` "
            "prints it)"
        )
    return lines[0]
