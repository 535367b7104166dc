#!/usr/bin/env bash
# Builds the LiveKit CLI (`lk`, for `lk perf load-test`) from its Go module, for the side-by-side
# loadgen benchmark (docs/benchmarks.md). Same approach as scripts/install-livekit-server.sh: the
# module may carry `replace` directives, which `go install mod@version` refuses, so we download
# it and build inside a writable copy. Cached per version under $LKRIG_CACHE (~/.cache/lkrig).
#   bash bench/install-lk.sh            # prints the binary's path
#   LK_CLI_VERSION=v2.x.y bash bench/install-lk.sh
# Exit 2 when the module cannot be had or built, with the Go tool's own error.
set -euo pipefail
cache="${LKRIG_CACHE:-${RIG_CACHE:-$HOME/.cache/lkrig}}"
version="${LK_CLI_VERSION:-v2.12.6}"
mod="github.com/livekit/livekit-cli/v2@$version"
out="$cache/lk/$version/lk"

if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-lk: the Go toolchain ('go') is not on PATH" >&2
  exit 2
fi
json="$(go mod download -json "$mod" 2>&1 || true)"
dir="$(printf '%s' "$json" | python3 -c 'import json,sys
try:
    d = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
print(d.get("Dir", ""))')"
if [[ -z "$dir" ]]; then
  err="$(printf '%s' "$json" | python3 -c 'import json,sys
try:
    print(json.load(sys.stdin).get("Error", ""))
except ValueError:
    pass')"
  echo "install-lk: could not download $mod through the Go module proxy ($(go env GOPROXY)):" >&2
  echo "  ${err:-$json}" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
echo "install-lk: building $mod (several minutes on 2 cores)..." >&2
mkdir -p "$(dirname "$out")"
if ! (cd "$work" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" ./cmd/lk); then
  echo "install-lk: building $mod failed (see the Go errors above)" >&2
  rm -f "$out.tmp"
  exit 2
fi
mv "$out.tmp" "$out"
echo "$out"
