#!/usr/bin/env bash
# Builds the callers' media engine (loadgen/lkmedia, Go + libopus) into the cache, keyed by the
# hash of its sources (loadgen/media.py finds it there; a changed source builds a new one).
# Needs Go and the Go module proxy, and Debian's libopus-dev and pkg-config (installed here).
# Idempotent: nothing to do when this checkout's sources are already built.
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"
venv="${LKRIG_VENV:-${RIG_VENV:-$root/.venv}}"

say() { echo "setup.d/25-media-engine: $*" >&2; }

missing=()
for p in libopus-dev pkg-config; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    say "need root to apt-get install ${missing[*]} (or install them yourself)"
    exit 2
  fi
  say "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
command -v go >/dev/null 2>&1 || { say "the Go toolchain ('go') is not on PATH"; exit 2; }
cd "$root"
"$venv/bin/python" -c 'from loadgen.media import ensure_binary; print(ensure_binary())' >&2
