#!/usr/bin/env bash
# Creates .venv in the repository root and installs the project with the given extras.
# Usage: scripts/setup.sh cpu            (serving install: no torch)
#        scripts/setup.sh cpu,train,dev  (everything the tests need)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-cpu}"
cd "$root"
py="${PYTHON:-python3}"

# The line-client tests need real video parts from Debian: ffmpeg (libx264, writes the H.264
# line videos) and a GStreamer RTSP server driven by the system Python (python3-gi):
# plugins-good (qtdemux, rtph264pay), -bad (h264parse), -ugly (x264enc), libav (avdec_h264).
# The DICOM-node tests need a real PACS and DICOM tools: Orthanc with its DICOMweb plugin, dcmtk.
# The review page's browser tests drive Debian's Chromium (Playwright, never its own browser
# download); npm fetches the prebuilt OHIF viewer (scripts/ohif.sh).
# Installed with the dev extra when missing; without apt (or root) those tests skip and say why.
apt_packages=(ffmpeg gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  gstreamer1.0-libav python3-gi orthanc orthanc-dicomweb dcmtk dicom3tools chromium npm)
install_apt_packages() {
  local missing=() pkg
  for pkg in "${apt_packages[@]}"; do
    # npm: a nodejs from another source (e.g. nodesource) bundles it and conflicts with Debian's
    if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then
      continue
    fi
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "setup: apt-get unavailable (or not root): not installing ${missing[*]};" \
      "the line-client RTSP tests will skip" >&2
    return 0
  fi
  echo "setup: apt-get install ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
    || { apt-get update && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${missing[@]}"; } \
    || echo "setup: apt-get install failed: the line-client RTSP tests will skip" >&2
}
case ",$extras," in
  *,dev,*)
    install_apt_packages
    # OHIF for the review tool (pinned in review/ohif.py; returns at once when installed).
    "$root/scripts/ohif.sh" || echo "setup: OHIF not installed: the OHIF link stays hidden" >&2
    ;;
esac
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
