#!/usr/bin/env bash
# System packages for the napari GUI tests (tests/test_napari.py) on Debian/Ubuntu: a virtual X server and the
# libraries PySide6's xcb platform plugin and vispy's OpenGL (software Mesa) load. Idempotent: apt-get runs only
# when a package is missing; needs root then. The list is what `ldd` of PySide6 6.12's libqxcb.so and Qt libraries
# resolves to (`dpkg -S`), plus Mesa's GLX/DRI software driver and one font for legible screenshots.
set -euo pipefail

PACKAGES=(
  xvfb                                   # Xvfb, started by the test module on a free display
  libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri   # OpenGL through Mesa (llvmpipe/swrast) for vispy and Qt
  libx11-xcb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxcb-shm0 libxcb-sync1 libxcb-xfixes0
  libglib2.0-0 libdbus-1-3 libfontconfig1 fonts-dejavu-core
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "gui_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "gui_deps: missing ${missing[*]}; run as root (or: sudo $0)" >&2
  exit 1
fi
echo "gui_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
