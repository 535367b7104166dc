#!/usr/bin/env bash
# Makes stand-ins for the base images the compose stack names, for a machine that reaches no image
# registry (tests/test_compose_images.py builds and runs the real stack on them). Each is a rootfs
# tar in $LKRIG_CACHE/base-images/, listed in images.json with the exact name the files use and the
# image settings `docker import --change` gives it; rebuilt only when its recipe changes.
#
#   python:3.11.13-slim-bookworm   debootstrap minbase bookworm + Debian's python3 (3.11), pip, venv;
#                                  `python` and `pip` on PATH, no EXTERNALLY-MANAGED marker
#   golang:1.26-bookworm           debootstrap minbase bookworm + gcc, libc6-dev, git, make,
#                                  pkg-config, and this machine's Go toolchain in /usr/local/go
#   livekit/livekit-server:vX      the natively built server (scripts/install-livekit-server.sh)
#                                  at /livekit-server, with a static busybox (sh, wget, awk)
#   prom/prometheus:vX             Debian's prometheus at /bin/prometheus, its libc, busybox;
#                                  user nobody, /prometheus its data folder, as upstream's image
#   redis:X-alpine                 Debian's redis-server and redis-cli, their libraries, busybox
#
# What differs from the registry's images is said in docs/compose-standins.md. The Debian-based
# ones trust this machine's CA bundle, so that the images' RUN steps reach the package registries.
# Grafana has no image or package here: nothing stands in for it.
set -euo pipefail
root="${LKRIG_REPO:-${RIG_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}}"
cache="${LKRIG_CACHE:-${RIG_CACHE:-$HOME/.cache/lkrig}}"
out="$cache/base-images"

say() { echo "setup.d/35-base-images: $*" >&2; }
die() { say "$*"; exit 2; }

[[ "$(id -u)" == 0 ]] || die "needs root (debootstrap, chroot); run scripts/setup as root"
need=()
for p in debootstrap busybox-static prometheus redis-server; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  say "apt-get install ${need[*]}"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed (see apt's error above)"
fi
command -v go >/dev/null 2>&1 || die "the Go toolchain ('go') is not on PATH (the golang stand-in copies it)"

# Names, from the files that use them.
from_lines="$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$root/agent/Dockerfile" "$root/loadgen/Dockerfile" \
  "$root/compose/byo-agent.Dockerfile" | sort -u)"
python_image="$(grep '^python:' <<<"$from_lines")" || die "no python:* FROM line in the Dockerfiles"
golang_image="$(grep '^golang:' <<<"$from_lines")" || die "no golang:* FROM line in loadgen/Dockerfile"
image_of() { sed -n "s#^ *image: *\\($1:[^ ]*\\) *\$#\\1#p" "$root/docker-compose.yml" | head -n1; }
livekit_image="$(image_of livekit/livekit-server)"
prometheus_image="$(image_of prom/prometheus)"
redis_image="$(image_of redis)"
[[ -n "$livekit_image" && -n "$prometheus_image" && -n "$redis_image" ]] \
  || die "docker-compose.yml lacks an image: line for livekit/livekit-server, prom/prometheus or redis"
livekit_bin="$(bash "$root/scripts/install-livekit-server.sh")" || die "no livekit-server binary (see above)"
goroot="$(go env GOROOT)"
go_version="$(go env GOVERSION)"
go_wants="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$root/loadgen/lkmedia/go.mod")"
# GOTOOLCHAIN=local in the image: its Go must be at least what go.mod names.
printf '%s\n%s\n' "$go_wants" "${go_version#go}" | sort -V -C \
  || die "this machine's $go_version is older than loadgen/lkmedia/go.mod's go $go_wants"
# The stand-in carries this machine's Go under the image's tag: the tag must name that release.
go_tag="${golang_image#golang:}"; go_tag="${go_tag%%-*}"
[[ "${go_version#go}" == "$go_tag" || "${go_version#go}" == "$go_tag".* ]] \
  || die "this machine's $go_version is not the Go release $golang_image names; install Go $go_tag"

mkdir -p "$out"
exec 8>"$out/.lock"
flock -w 1200 8 || die "another setup holds $out/.lock"

ca=/etc/ssl/certs/ca-certificates.crt
[[ -f "$ca" ]] || die "no CA bundle at $ca"
ca_hash="$(sha256sum "$ca" | cut -c1-16)"
deb_version() { dpkg-query -W -f='${Version}' "$1"; }

# key PARTS...: a stand-in's cache key, from its name, its inputs and its recipe's version (bump
# a recipe's version when its steps change); fresh NAME KEY: is its tar up to date.
key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
fresh() { [[ -f "$out/$1.tar" && "$(cat "$out/$1.key" 2>/dev/null)" == "$2" ]]; }
finish() {  # finish NAME KEY DIR: tar the rootfs, record the key, drop the folder
  tar --numeric-owner -C "$3" -cf "$out/$1.tar.tmp" . && mv "$out/$1.tar.tmp" "$out/$1.tar"
  echo "$2" >"$out/$1.key"
  rm -rf "$3"
  say "  $1: $(du -h "$out/$1.tar" | cut -f1)"
}

debian_root() {  # debian_root DIR PACKAGES: minbase bookworm with these packages, this machine's apt sources and CA
  local dir="$1" pkgs="$2"
  rm -rf "$dir"
  debootstrap --variant=minbase --include="$pkgs" bookworm "$dir" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; die "debootstrap failed for $dir"; }
  rm -f "$dir.log"
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    rm -f "$dir/etc/apt/sources.list"
    cp /etc/apt/sources.list.d/debian.sources "$dir/etc/apt/sources.list.d/"
  fi
  cp "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
}

busybox_root() {  # busybox_root DIR: a static busybox with its applets in /bin, /etc/passwd, /tmp
  local dir="$1" applet
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,etc,tmp,lib,lib64,proc,sys,dev}
  chmod 1777 "$dir/tmp"
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $("$dir/bin/busybox" --list); do
    [[ -e "$dir/bin/$applet" ]] || ln -s busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
}

with_libs() {  # with_libs DIR BINARY...: copy each binary's shared libraries (ldd) into DIR
  local dir="$1" lib; shift
  for lib in $(ldd "$@" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}

work="$(mktemp -d "$out/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- python --------------------------------------------------------------------------------------------
k="$(key "$python_image" "$ca_hash" python-recipe-1)"
if fresh python "$k"; then say "  python up to date"; else
  say "debootstrap for $python_image (about a minute)"
  d="$work/python"
  debian_root "$d" ca-certificates,netbase,python3,python3-pip,python3-venv
  ln -sf /usr/bin/python3 "$d/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$d/usr/local/bin/pip"
  rm -f "$d"/usr/lib/python3*/EXTERNALLY-MANAGED
  finish python "$k" "$d"
fi

# --- golang --------------------------------------------------------------------------------------------
k="$(key "$golang_image" "$ca_hash" "$go_version" golang-recipe-1)"
if fresh golang "$k"; then say "  golang up to date"; else
  say "debootstrap for $golang_image (about a minute)"
  d="$work/golang"
  debian_root "$d" ca-certificates,netbase,gcc,libc6-dev,git,make,pkg-config,wget
  cp -a "$goroot" "$d/usr/local/go"
  mkdir -p "$d/go/bin" "$d/go/src"
  chmod -R 1777 "$d/go"
  finish golang "$k" "$d"
fi

# --- livekit-server ----------------------------------------------------------------------------------
k="$(key "$livekit_image" "$(sha256sum "$livekit_bin" | cut -c1-16)" livekit-recipe-1)"
if fresh livekit-server "$k"; then say "  livekit-server up to date"; else
  d="$work/livekit-server"
  busybox_root "$d"
  cp "$livekit_bin" "$d/livekit-server"
  finish livekit-server "$k" "$d"
fi

# --- prometheus ------------------------------------------------------------------------------------------
k="$(key "$prometheus_image" "$(deb_version prometheus)" prometheus-recipe-1)"
if fresh prometheus "$k"; then say "  prometheus up to date"; else
  d="$work/prometheus"
  busybox_root "$d"
  rm -f "$d/bin/prometheus"
  cp /usr/bin/prometheus "$d/bin/prometheus"
  with_libs "$d" /usr/bin/prometheus
  mkdir -p "$d/etc/prometheus" "$d/prometheus"
  chown 65534:65534 "$d/prometheus"
  finish prometheus "$k" "$d"
fi

# --- redis ---------------------------------------------------------------------------------------------
k="$(key "$redis_image" "$(deb_version redis-server)" redis-recipe-2)"
if fresh redis "$k"; then say "  redis up to date"; else
  d="$work/redis"
  busybox_root "$d"
  mkdir -p "$d/usr/local/bin" "$d/usr/local/libexec" "$d/data"
  cp /usr/bin/redis-cli "$d/usr/local/bin/"
  cp /usr/bin/redis-server "$d/usr/local/libexec/redis-server"
  # The official image builds Redis with protected mode off by default (it would refuse every
  # other container of an unauthenticated setup); a later --protected-mode argument still wins.
  printf '#!/bin/sh\nexec /usr/local/libexec/redis-server --protected-mode no "$@"\n' >"$d/usr/local/bin/redis-server"
  chmod 755 "$d/usr/local/bin/redis-server"
  with_libs "$d" /usr/bin/redis-server /usr/bin/redis-cli
  finish redis "$k" "$d"
fi

# --- images.json: what tests/dockerengine.py imports, under which name, with which settings --------------
python3 - "$out" "$python_image" "$golang_image" "$livekit_image" "$prometheus_image" "$redis_image" \
    "${go_version#go}" <<'PY'
import json, sys
from pathlib import Path
out, python, golang, livekit, prometheus, redis, go_version = sys.argv[1:]
path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
images = {
    python: ("python", ["ENV PATH=" + path, "ENV LANG=C.UTF-8", 'CMD ["python3"]']),
    golang: ("golang", ["ENV PATH=/go/bin:/usr/local/go/bin:" + path, "ENV GOPATH=/go",
                        "ENV GOTOOLCHAIN=local", f"ENV GOLANG_VERSION={go_version}", "WORKDIR /go"]),
    livekit: ("livekit-server", ["ENV PATH=/bin", 'ENTRYPOINT ["/livekit-server"]']),
    prometheus: ("prometheus", ["ENV PATH=/bin", "USER nobody", "WORKDIR /prometheus",
                                'ENTRYPOINT ["/bin/prometheus"]',
                                'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]']),
    redis: ("redis", ["ENV PATH=/usr/local/bin:/bin", "WORKDIR /data", 'CMD ["redis-server"]']),
}
entries = []
for name, (stem, changes) in images.items():
    key = (Path(out) / f"{stem}.key").read_text().strip()
    entries.append({"image": name, "tar": f"{stem}.tar", "key": key, "changes": changes})
(Path(out) / "images.json").write_text(json.dumps(entries, indent=1) + "\n")
PY
say "images.json: $python_image, $golang_image, $livekit_image, $prometheus_image, $redis_image"
