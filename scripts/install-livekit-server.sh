#!/usr/bin/env bash
# Builds livekit-server from its Go module at the exact version docker-compose.yml pins for the
# livekit/livekit-server image, so the native stack and the compose stack run the same server.
# From v1.13.0 the module's go.mod carries `replace` directives, which `go install mod@version`
# refuses; so we download the module and build inside a writable copy of it.
# Idempotent: the binary is cached per version under $LKRIG_CACHE.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LKRIG_CACHE:-${RIG_CACHE:-$HOME/.cache/lkrig}}"

version="$(sed -n 's#^ *image: *livekit/livekit-server:\(v[0-9.]*\) *$#\1#p' "$here/docker-compose.yml" | head -n1)"
if [[ -z "$version" ]]; then
  echo "install-livekit-server: no 'image: livekit/livekit-server:vX.Y.Z' line in $here/docker-compose.yml" >&2
  exit 2
fi
out="$cache/livekit-server/$version/livekit-server"

if [[ -n "${LIVEKIT_SERVER_BIN:-}" ]]; then
  got="$("$LIVEKIT_SERVER_BIN" --version 2>/dev/null | awk '{print $NF}')"
  if [[ "v$got" != "$version" && "$got" != "$version" ]]; then
    echo "install-livekit-server: LIVEKIT_SERVER_BIN=$LIVEKIT_SERVER_BIN reports version '$got', docker-compose.yml pins $version" >&2
    exit 2
  fi
  echo "$LIVEKIT_SERVER_BIN"
  exit 0
fi
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-livekit-server: the Go toolchain ('go') is not on PATH; install Go >= 1.26 or set" \
       "LIVEKIT_SERVER_BIN to a livekit-server $version binary" >&2
  exit 2
fi
mod="github.com/livekit/livekit-server@$version"
if ! dir="$(go mod download -json "$mod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"; then
  echo "install-livekit-server: could not download $mod from the Go module proxy ($(go env GOPROXY));" \
       "check the network or set LIVEKIT_SERVER_BIN to a livekit-server $version binary" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
echo "install-livekit-server: building $mod (a few minutes on 2 cores)..." >&2
mkdir -p "$(dirname "$out")"
(cd "$work" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" ./cmd/server)
mv "$out.tmp" "$out"
echo "$out"
