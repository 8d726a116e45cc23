#!/usr/bin/env bash
# Set up (first time) and open napari with the napari-pix2pix widgets and the nuclei sample.
# Without a display, run the headless demo instead (train on the sample, predict a held-out tile).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" != "Linux" ]; then
  exec .venv/bin/napari-pix2pix gui "$@"
fi
echo "No display: running the headless demo. For napari on a virtual screen: xvfb-run -a .venv/bin/napari-pix2pix gui"
exec .venv/bin/napari-pix2pix demo "$@"
