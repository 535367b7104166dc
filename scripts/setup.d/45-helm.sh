#!/usr/bin/env bash
# Builds helm from its Go module into the cache, keyed by the version pinned below (the one place
# it is pinned: tests/tools/toolpaths.py reads these two lines to find the binary).
# tests/test_helm_chart.py renders and lints deploy/helm/lkrig with it; no cluster is needed.
# Needs Go and the Go module proxy (a few minutes cold on 2 cores: done here, never in a test).
# Idempotent: nothing to do when this version is already built.
set -euo pipefail
cache="${LKRIG_CACHE:-${RIG_CACHE:-$HOME/.cache/lkrig}}"

HELM_MODULE="helm.sh/helm/v4"
HELM_VERSION="v4.3.2"

say() { echo "setup.d/45-helm: $*" >&2; }
die() { say "$*"; exit 2; }

bin="$cache/helm/$HELM_VERSION/helm"
[[ -x "$bin" ]] && exit 0

command -v go >/dev/null 2>&1 || die "the Go toolchain ('go') is not on PATH; install Go >= 1.26 (helm $HELM_VERSION is built from its module)"
# One download first, so a missing proxy is one clear line rather than go install's dependency noise.
go mod download "$HELM_MODULE@$HELM_VERSION" >/dev/null 2>&1 \
  || die "could not download $HELM_MODULE@$HELM_VERSION from the Go module proxy ($(go env GOPROXY)); check the network"

say "building helm $HELM_VERSION from $HELM_MODULE (first time: a few minutes)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Helm's Makefile stamps the version with these flags; without them `helm version` says "v4.x".
ldflags="-X $HELM_MODULE/internal/version.version=$HELM_VERSION -X $HELM_MODULE/internal/version.metadata="
GOBIN="$work" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$HELM_MODULE/cmd/helm@$HELM_VERSION" \
  || die "go install $HELM_MODULE/cmd/helm@$HELM_VERSION failed (the error is above; is the Go module proxy reachable?)"
got="$("$work/helm" version --template '{{.Version}}')"
[[ "$got" == "$HELM_VERSION" ]] || die "the built helm reports version '$got', expected $HELM_VERSION"
mkdir -p "$(dirname "$bin")"
mv "$work/helm" "$bin"
say "$bin"
