#!/usr/bin/env bash
# Installs what tests/tools/dashboard_browser.py needs to render the Grafana dashboards in a real
# browser against a real Prometheus (Grafana itself has no image or package here; the stand-in page
# in tests/tools/grafana-standin/ does the query side of its Prometheus datasource):
#   - Debian's chromium (without recommends), driven headless at /usr/bin/chromium;
#   - playwright-core, pinned by tests/tools/grafana-standin/package-lock.json, by `npm ci`
#     (playwright-core downloads no browser: it drives Debian's).
# scripts/setup installs chromium too (with recommends) when it can; this step makes sure of it.
# Idempotent: apt only when chromium is missing, npm ci only when node_modules is older than the
# lock file. Exits non-zero when anything is missing (scripts/setup makes that fatal with CI=true).
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"

say() { echo "setup.d/22-browser: $*" >&2; }
die() { say "$*"; exit 2; }

# --- chromium ----------------------------------------------------------------------------------------
if [[ "$(dpkg-query -W -f='${Status}' chromium 2>/dev/null)" != "install ok installed" ]]; then
  command -v apt-get >/dev/null 2>&1 || die "no apt-get: install Chromium yourself at /usr/bin/chromium"
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
      || die "need root to apt-get install chromium"
    sudo=(sudo -n)
  fi
  say "apt-get install --no-install-recommends chromium"
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed (are Debian's package servers reachable?)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || die "apt-get install chromium failed (see apt's error above)"
fi
[[ -x /usr/bin/chromium ]] || die "chromium is installed but /usr/bin/chromium is not there"
/usr/bin/chromium --headless --no-sandbox --version >/dev/null 2>&1 \
  || die "/usr/bin/chromium does not start (chromium --version failed)"

# --- playwright-core ---------------------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node is missing; install Node.js 20+ (the driver runs on it)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 20 ]] || die "Node.js $(node --version) is too old; playwright-core needs 20+"
dir="$root/tests/tools/grafana-standin"
if [[ ! -f "$dir/node_modules/playwright-core/package.json" \
      || ! -f "$dir/node_modules/.package-lock.json" \
      || "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]]; then
  command -v npm >/dev/null 2>&1 || die "npm is missing; install Node.js 20+ with npm"
  say "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || die "npm ci failed in $dir (is the npm registry reachable?)"
fi
