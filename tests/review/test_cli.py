"""`vision review add-user / add-token` and the `vision serve` review flags."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from app.cli import main
from app.commands.serve import build_parser
from review.accounts import Accounts
from review.db import Database


def test_add_user_reads_the_password_from_stdin(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-password\n"))
    assert main(["review", "add-user", "ana", "--role", "supervisor", "--dir", str(tmp_path)]) == 0
    accounts = Accounts(Database(tmp_path / "review.sqlite"))
    assert accounts.verify_password("ana", "s3cret-password") == "supervisor"
    assert accounts.verify_password("ana", "wrong-password") is None
    assert "s3cret" not in capsys.readouterr().out


def test_short_passwords_and_unknown_roles_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["review", "add-user", "bo", "--role", "reviewer", "--dir", str(tmp_path)]) == 2
    assert "at least 8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["review", "add-user", "bo", "--role", "boss", "--dir", str(tmp_path)])


def test_add_token_prints_it_once_and_stores_a_hash(tmp_path: Path, capsys) -> None:
    assert main(["review", "add-token", "ci", "--role", "reviewer", "--dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    accounts = Accounts(Database(tmp_path / "review.sqlite"))
    assert accounts.token_principal(token).role == "reviewer"
    stored = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.is_file())
    assert token.encode() not in stored


def test_serve_flags(tmp_path: Path) -> None:
    from app.commands.review import review_settings_from

    args = build_parser().parse_args(["--review-dir", str(tmp_path)])
    assert review_settings_from(args).database == tmp_path / "review.sqlite"
    assert review_settings_from(build_parser().parse_args([])) is None
    assert main(["serve", "--review-config", str(tmp_path / "x.yaml")]) == 2
