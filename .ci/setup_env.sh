#!/usr/bin/env bash
# Headless napari + PyQt6 + torch (CPU) environment for napari-trex on Debian 12, Python >= 3.11, as root.
# Recipe verified in ../shared/design/env.md. Usage: VENV=.venv bash .ci/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

# 1. Debian packages: Xvfb plus the xcb/GL libraries Qt6's xcb plugin and vispy need.
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    xvfb xauth \
    libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-randr0 \
    libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0 \
    libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libfontconfig1 libdbus-1-3 fonts-dejavu-core \
    >/dev/null
fi

# 2. venv; the torch CPU wheel FIRST, so nothing later resolves torch to a multi-GB CUDA build.
python3 -c 'import sys; assert sys.version_info >= (3, 11), "napari 0.9 needs Python >= 3.11"'
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
# 3. the project itself with its test extra (napari[pyqt6], pytest, pytest-qt, pytest-xvfb, pytest-timeout).
"$VENV/bin/python" -m pip install -q -e ".[testing]"
"$VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.13.0"), torch.__version__'
