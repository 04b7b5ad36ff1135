"""`vision infer` and `vision line` over mutual TLS with a token from a file or the environment,
against a real secured server on loopback; `--api-key` is refused; the DICOM node's default host."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main as vision
from app.commands.serve import build_parser as serve_parser
from app.commands.serve import dicom_settings_from
from serving.client_args import add_client_security_args, client_tls, client_token
from serving.security import SecuritySettings, TlsFiles
from tests.security.conftest import make_tokens, start_secured
from tests.serving.tiny_models import build_inspection_repository
from vision.errors import ConfigError


@pytest.fixture(scope="module")
def mtls_server(pki, tmp_path_factory):
    """mTLS on both ports and a token per role, over a repository with inspection rules."""
    folder = tmp_path_factory.mktemp("client-flags")
    tokens = make_tokens(folder)
    files = TlsFiles(pki.server.cert, pki.server.key, pki.ca.pair.cert)
    repository = build_inspection_repository(folder / "models")
    running = start_secured(repository, SecuritySettings(tls=files, tokens_file=tokens.file))
    yield running, tokens
    running.stop()


def _tls_flags(pki) -> list[str]:
    client = pki.client
    return ["--tls-ca", str(pki.ca.pair.cert), "--tls-cert", str(client.cert)] + [
        "--tls-key",
        str(client.key),
    ]


def _image(folder: Path, name: str = "in.png") -> Path:
    image = np.zeros((48, 64), np.uint8)
    image[10:30, 20:50] = 255
    path = folder / name
    cv2.imwrite(str(path), image)
    return path


def test_infer_over_mtls_with_token_file(mtls_server, pki, tmp_path, capsys):
    running, tokens = mtls_server
    token_file = tmp_path / "token"
    token_file.write_text(tokens.by_role["infer"] + "\n")
    args = ["infer", str(_image(tmp_path)), "--model", "bright", "--server", running.address]
    assert vision(args + _tls_flags(pki) + ["--token-file", str(token_file)]) == 0
    assert " px" in capsys.readouterr().out


def test_infer_token_from_environment(mtls_server, pki, tmp_path, capsys, monkeypatch):
    running, tokens = mtls_server
    monkeypatch.setenv("VISION_TOKEN", tokens.by_role["infer"])
    args = ["infer", str(_image(tmp_path)), "--model", "bright", "--server", running.address]
    assert vision(args + _tls_flags(pki)) == 0
    assert "bright" in capsys.readouterr().out


def test_infer_without_token_is_unauthenticated(mtls_server, pki, tmp_path, monkeypatch):
    running, _ = mtls_server
    monkeypatch.delenv("VISION_TOKEN", raising=False)
    monkeypatch.delenv("VISION_API_KEY", raising=False)
    args = ["infer", str(_image(tmp_path)), "--model", "bright", "--server", running.address]
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        vision(args + _tls_flags(pki))


def test_line_over_mtls_with_token_file(mtls_server, pki, tmp_path):
    running, tokens = mtls_server
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        _image(frames, f"{index:02d}.png")
    token_file = tmp_path / "token"
    token_file.write_text(tokens.by_role["infer"])
    log = tmp_path / "verdicts.jsonl"
    args = ["line", "--source", str(frames), "--model", "bright", "--server", running.address]
    args += ["--policy", "every", "--log", str(log), "--quiet", "--token-file", str(token_file)]
    assert vision(args + _tls_flags(pki)) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    verdicts = [r for r in records if r.get("status") in {"PASS", "FAIL"}]
    assert len(verdicts) == 3, records


@pytest.mark.parametrize("command", ["infer", "line"])
def test_api_key_flag_is_refused_with_the_fix(command, capsys):
    args = [command, "x.png", "--model", "m"] if command == "infer" else [command]
    args += ["--source", "x", "--model", "m"] if command == "line" else []
    with pytest.raises(SystemExit) as exit_info:
        vision(args + ["--api-key", "secret"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and "VISION_TOKEN" in err and "secret" not in err


def _parsed(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_client_security_args(parser)
    return parser.parse_args(argv)


def test_token_file_must_hold_one_token(tmp_path):
    empty, two = tmp_path / "empty", tmp_path / "two"
    empty.write_text("\n")
    two.write_text("a\nb\n")
    for path in (empty, two, tmp_path / "missing"):
        with pytest.raises(ConfigError, match="--token-file"):
            client_token(_parsed(["--token-file", str(path)]), {})
    assert client_token(_parsed([]), {"VISION_TOKEN": "vt_x"}) == "vt_x"
    assert client_token(_parsed([]), {}) == ""


def test_tls_flags_need_each_other():
    with pytest.raises(ConfigError, match="--tls-ca"):
        client_tls(_parsed(["--tls-cert", "c.pem", "--tls-key", "k.pem"]))
    with pytest.raises(ConfigError, match="--tls-key"):
        client_tls(_parsed(["--tls-ca", "ca.pem", "--tls-cert", "c.pem"]))
    assert client_tls(_parsed([])) is None
    assert client_tls(_parsed(["--tls-ca", "ca.pem"])).cert is None


def test_dicom_node_listens_on_loopback_by_default():
    pytest.importorskip("pynetdicom", reason="the dicom extra is not installed")
    from dicom_node.model import NodeSettings

    assert NodeSettings().host == "127.0.0.1"
    args = serve_parser().parse_args(["--dicom-port", "11112"])
    assert dicom_settings_from(args).host == "127.0.0.1"
