#!/usr/bin/env bash
# What bench/lk_compare.py needs beyond the rig (tests/test_bench.py runs it):
#   - opusenc (Debian's opus-tools), which encodes lkpub's Opus clip;
#   - bench/lkpub (Go, server-sdk-go/v2), built into the cache keyed by the hash of its sources
#     (about a minute cold on 2 cores: done here, so the tests do not pay it), and its clip.
# Needs Go and the Go module proxy. Idempotent: nothing to do when both are already built.
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"
venv="${LKRIG_VENV:-${RIG_VENV:-$root/.venv}}"

say() { echo "setup.d/40-bench-tools: $*" >&2; }

missing=()
for p in opus-tools; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    say "need root to apt-get install ${missing[*]} (or install them yourself)"
    exit 2
  fi
  say "apt-get install ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || { say "apt-get install ${missing[*]} failed (check apt sources and network)"; exit 2; }
  fi
fi
command -v go >/dev/null 2>&1 || { say "the Go toolchain ('go') is not on PATH (bench/lkpub is Go)"; exit 2; }
cd "$root"
"$venv/bin/python" -c '
import sys
from bench.lk_compare import lkpub_binary, opus_clip
print(lkpub_binary(), opus_clip(), sep="\n", file=sys.stderr)' \
  || { say "could not build bench/lkpub or its clip (the error is above; is the Go module proxy reachable?)"; exit 2; }
