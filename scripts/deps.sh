#!/usr/bin/env bash
# Installs the Debian packages shmpipe builds with, when any is missing. Needs root
# (or sudo) only when something is missing. Sourced by scripts/demo and scripts/test.
set -euo pipefail
shmpipe_packages=(
  cmake ninja-build g++ pkg-config python3 procps
  libboost1.81-dev libboost-filesystem1.81-dev libboost-json1.81-dev
  catch2 libtomlplusplus-dev libcli11-dev libzmq3-dev cppzmq-dev
  # the Python module and its tests
  pybind11-dev python3-dev python3-pytest python3-numpy
  # tests: scraping metrics, parsing them, a terminal for watch; building the .deb
  curl python3-prometheus-client tmux dpkg-dev file
)
missing=()
for p in "${shmpipe_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "shmpipe: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
