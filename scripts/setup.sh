#!/usr/bin/env bash
# Set up napari-pix2pix on Debian/Ubuntu: system libraries for Qt and a virtual screen (when run as
# root), then a virtual environment in .venv with the plugin and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

QT_PACKAGES="xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon0 libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 libxcb-render-util0
  libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libdbus-1-3 libfontconfig1"
missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $QT_PACKAGES 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
if ! command -v Xvfb >/dev/null || [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing system packages for Qt and Xvfb"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $QT_PACKAGES >/dev/null
  else
    echo "note: Qt/Xvfb system packages may be missing; as root run: apt-get install $QT_PACKAGES" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "== installing napari-pix2pix and its dependencies (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
