#!/usr/bin/env bash
# Installs what tests/test_compose_faults.py needs to run the compose faults (rig/backends/compose.py)
# against a real Docker engine, with no image registry:
#   - Debian's docker.io (dockerd, containerd, runc); the test starts a private dockerd of its own
#     (own socket, data and exec roots under its temp dir, no iptables, no bridge) and stops it;
#   - busybox-static: the test's image is a rootfs of that one static binary (`docker import`);
#   - the Docker SDK for Python (`docker`, the pyproject dev extra) into the project venv.
# Installing docker.io starts no daemon here: without systemd, invoke-rc.d finds no runlevel and
# does not start the service (on a systemd host the package enables and starts docker.service,
# as it always does; the test does not use it).
# Idempotent: each step is skipped when what it would install is already there.
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"
venv="${LKRIG_VENV:-${RIG_VENV:-$root/.venv}}"

DOCKER_SDK_VERSION="7.2.0"   # keep equal to pyproject.toml's dev extra

say() { echo "setup.d/30-docker-engine: $*" >&2; }
die() { say "$*"; exit 2; }

# --- docker.io, busybox-static -----------------------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "no dpkg: install a Docker engine (dockerd) and a static busybox at /bin/busybox yourself"
missing=()
for p in docker.io busybox-static; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then missing+=("$p"); fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
      || die "need root to apt-get install ${missing[*]}"
    sudo=(sudo -n)
  fi
  say "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed (are Debian's package servers reachable?)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed (see apt's error above)"
fi
command -v dockerd >/dev/null 2>&1 || die "docker.io is installed but dockerd is not on PATH"

# --- the Docker SDK for Python -------------------------------------------------------------------
[[ -x "$venv/bin/python" ]] || die "no project venv at $venv (run scripts/setup first)"
py="$venv/bin/python"
if [[ "$("$py" -m pip show docker 2>/dev/null | sed -n 's/^Version: //p')" != "$DOCKER_SDK_VERSION" ]]; then
  say "pip install docker==$DOCKER_SDK_VERSION into $venv"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$py" -m pip install -q "docker==$DOCKER_SDK_VERSION" \
    || die "pip could not install docker==$DOCKER_SDK_VERSION (is PyPI reachable?)"
fi
