#!/usr/bin/env bash
# Creates .venv in the repository root and installs the project with the given extras.
# Usage: scripts/setup.sh cpu            (serving install: no torch)
#        scripts/setup.sh cpu,train,dev  (everything the tests need)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-cpu}"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$(echo "$extras" | tr ',' '-')"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch and torchvision (train extra) come from the pinned releases on local disk.
.venv/bin/python -m pip install --quiet -e ".[$extras]"
echo "$want" > "$stamp"
