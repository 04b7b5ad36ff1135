"""The de-identification key: 32 random bytes in a file only its owner can read (0600).

The key makes the pseudonymous UIDs, the Patient ID pseudonym and the date offset: keep it to map
new objects consistently with earlier ones, and keep it secret (with it, a known original UID can
be checked against a pseudonym). It is never logged or written anywhere else.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from vision.errors import ConfigError

KEY_BYTES = 32
DEFAULT_KEY_FILE = Path.home() / ".config" / "vision" / "deid.key"


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (32 random bytes, mode 0600) when the file does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"key file {path} is readable by others (mode {mode:o}): chmod 600 it")
    key = path.read_bytes()
    if len(key) < 16:
        raise ConfigError(
            f"key file {path} holds {len(key)} bytes: need at least 16 (delete it "
            "to have a new one made, which changes every pseudonym)"
        )
    return key
