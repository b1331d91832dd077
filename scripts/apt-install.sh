#!/usr/bin/env bash
# Installs Debian packages a recipe needs, once. Idempotent: nothing happens when what the
# recipe needs is already there. As root (like CI) it runs apt-get update once and installs
# the packages; otherwise it stops with an error that names them.
# Usage: scripts/apt-install.sh [--no-install-recommends] NEED[,NEED...] PACKAGE...
#   NEED: a command on PATH (wasm-opt) or an absolute path (/usr/bin/chromium); every one
#   must exist for the install to be skipped. NEED `-` means the caller found something
#   missing (e.g. `python3 -m venv` failed), so the packages are installed.
set -euo pipefail
apt_flags=()
if [ "${1:-}" = --no-install-recommends ]; then
  apt_flags+=(--no-install-recommends)
  shift
fi
needs=${1:?usage: scripts/apt-install.sh [--no-install-recommends] NEED[,NEED...] PACKAGE...}
shift
[ $# -gt 0 ] || { echo "apt-install: no package named for $needs" >&2; exit 2; }

present() {
  case $1 in
    -) return 1 ;;
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
missing=()
IFS=, read -r -a wanted <<<"$needs"
for need in "${wanted[@]}"; do
  present "$need" || missing+=("$need")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then
  echo "${missing[*]} missing: install Debian's $* (apt-get install $*)" >&2
  exit 1
fi
echo "installing Debian's $* for ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_flags[@]}" "$@" >/dev/null
for need in "${wanted[@]}"; do
  [ "$need" = - ] || present "$need" || { echo "apt-install: $need still missing after installing $*" >&2; exit 1; }
done
