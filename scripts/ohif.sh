#!/usr/bin/env bash
# Installs the prebuilt OHIF viewer (npm package @ohif/app, exact version) for the review tool.
# `npm pack` fetches the published tarball (nothing to build) into a cache outside the
# repository; its dist/ is unpacked beside it. review/ohif.py serves that dist/ under
# /review/ohif/ and writes its app-config.js at run time.
# Usage: scripts/ohif.sh            (idempotent: returns at once when the dist is in place)
# Where: $VISION_OHIF_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/vision/ohif
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The one pin, read from review/ohif.py so the script and the server never disagree.
version="$(sed -n 's/^OHIF_VERSION = "\([0-9][0-9.]*\)"$/\1/p' "$root/review/ohif.py")"
[ -n "$version" ] || { echo "ohif: no OHIF_VERSION in review/ohif.py" >&2; exit 1; }
base="${VISION_OHIF_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vision/ohif}"
target="$base/$version"
if [ -f "$target/dist/index.html" ] && [ -f "$target/.complete" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "ohif: npm missing (apt-get install npm): the OHIF link stays hidden" >&2
  exit 0
fi
mkdir -p "$target"
tmp="$(mktemp -d "$base/.unpack.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "ohif: npm pack @ohif/app@$version into $target" >&2
(cd "$tmp" && npm pack --silent "@ohif/app@$version" >/dev/null)
tarball="$(ls "$tmp"/ohif-app-"$version".tgz)"
tar -xzf "$tarball" -C "$tmp" package/dist
[ -f "$tmp/package/dist/index.html" ] || { echo "ohif: no dist/index.html in $tarball" >&2; exit 1; }
rm -rf "$target/dist"
mv "$tmp/package/dist" "$target/dist"
mv "$tarball" "$target/"
touch "$target/.complete"
echo "ohif: installed $target/dist" >&2
