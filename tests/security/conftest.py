"""A secured server on loopback (tokens of each role, HTTP, DICOM node when installed), and
test-time certificates."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from app.commands.token import make
from serving.config import ServerConfig
from serving.security import SecuritySettings
from tests.security.certs import Authority, Pair
from tests.serving.conftest import ServerThread
from tests.serving.tiny_models import build_repository

ROLES = ("infer", "admin", "metrics")


@dataclass(frozen=True)
class Tokens:
    """A token file and one token per role (plus the file's path)."""

    file: Path
    by_role: dict[str, str]


def make_tokens(folder: Path) -> Tokens:
    """A token file with one token per role, made by `vision token`'s own code."""
    file = folder / "tokens.yaml"
    return Tokens(file, {role: make(f"{role}-client", [role], file) for role in ROLES})


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    return make_tokens(tmp_path_factory.mktemp("tokens"))


@dataclass(frozen=True)
class Pki:
    """A CA with a server and a client certificate, and a stranger CA with its own client."""

    ca: Authority
    server: Pair
    client: Pair
    stranger: Authority
    stranger_client: Pair


def make_pki(folder: Path) -> Pki:
    """Fresh certificates under `folder`."""
    ca, stranger = Authority(folder / "ca"), Authority(folder / "stranger", "stranger CA")
    return Pki(
        ca,
        ca.issue("server", "vision-server", server=True),
        ca.issue("client", "scanner-1", server=False),
        stranger,
        stranger.issue("client", "intruder", server=False),
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class NodeServerThread(ServerThread):
    """ServerThread whose server may also run the DICOM node (its routes join the HTTP app)."""

    def __init__(self, config: ServerConfig, dicom=None) -> None:
        super().__init__(config, dicom=dicom)

    @property
    def http_base(self) -> str:
        scheme = "https" if self.config.security.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.http_port}"


def dicom_settings(state: Path):
    """DICOM node settings on loopback, or None when the dicom extra is not installed."""
    try:
        import pynetdicom  # noqa: F401

        from dicom_node.model import NodeSettings
    except ImportError:
        return None
    state.mkdir(parents=True, exist_ok=True)
    rules = state / "rules.yaml"
    rules.write_text("rules:\n  - name: any-ct\n    modality: [CT]\n    models: [bright]\n")
    return NodeSettings(
        host="127.0.0.1", port=0, min_free_disk_mb=1, state_dir=state, rules_file=rules
    )


def start_secured(
    models: Path, security: SecuritySettings, dicom=None, **overrides
) -> NodeServerThread:
    """A server on loopback (free gRPC and HTTP ports) with `security`."""
    settings = {
        "models": models,
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_port": 0,
        "max_image_pixels": 2_000_000,
        "drain_timeout_s": 5.0,
        "security": security,
        **overrides,
    }
    thread = NodeServerThread(replace(ServerConfig(), **settings), dicom)
    return thread.start()


@pytest.fixture(scope="module")
def secured(repository: Path, tokens: Tokens, tmp_path_factory) -> Iterator[NodeServerThread]:
    """Auth on (a token per role), metrics behind role `metrics`, reflection on, audit file."""
    folder = tmp_path_factory.mktemp("secured")
    security = SecuritySettings(tokens_file=tokens.file, audit_file=folder / "audit.jsonl")
    running = start_secured(repository, security, dicom_settings(folder / "dicom"))
    yield running
    running.stop()
