#!/bin/sh
# Starts livekit-server inside the compose stack from the native stack's config file
# (livekit/livekit.yaml, mounted read-only), so both stacks run one configuration.
#
# That file pins the server to loopback: it advertises 127.0.0.1 (rtc.node_ip), gathers ICE
# candidates only on 127.0.0.0/8 (rtc.ips) and adds loopback candidates
# (rtc.enable_loopback_candidate). In a container the agents and callers are other hosts on the
# compose network, and livekit-server has no flag or environment variable for rtc.ips, so this
# copies the file without exactly those three keys (the server then advertises its container
# address) and keeps everything else. Listen addresses, keys and the UDP port come from the
# command line and environment (docker-compose.yml).
#
# usage: livekit-entrypoint.sh CONFIG [livekit-server arguments...]
# env:   LIVEKIT_SERVER_BIN (default /livekit-server, the image's binary),
#        LKRIG_CONTAINER_CONFIG (where the copy goes; default /tmp/livekit.yaml)
set -eu
src="${1:?usage: livekit-entrypoint.sh CONFIG [livekit-server arguments...]}"
shift
out="${LKRIG_CONTAINER_CONFIG:-/tmp/livekit.yaml}"
server="${LIVEKIT_SERVER_BIN:-/livekit-server}"
[ -r "$src" ] || { echo "livekit-entrypoint: cannot read $src (is livekit/livekit.yaml mounted?)" >&2; exit 2; }

# A key is dropped with everything indented below it (and a list at its own indentation).
# POSIX awk only: the image's awk is busybox's.
awk '
function indent(s) { match(s, /^ */); return RLENGTH }
BEGIN {
  drop["rtc.node_ip"]; drop["rtc.ips"]; drop["rtc.enable_loopback_candidate"]
  skip = -1; depth = 0
}
/^[ ]*(#.*)?$/ { if (skip < 0) print; next }
{
  ind = indent($0)
  if (skip >= 0) {
    if (ind > skip || (ind == skip && $0 ~ /^ *- /)) next
    skip = -1
  }
  if (match($0, /^ *[A-Za-z0-9_]+:/)) {
    key = substr($0, ind + 1, RLENGTH - ind - 1)
    while (depth > 0 && ind <= at[depth]) depth--
    depth++; at[depth] = ind; name[depth] = key
    path = name[1]
    for (i = 2; i <= depth; i++) path = path "." name[i]
    if (path in drop) { skip = ind; depth--; next }
  }
  print
}
' "$src" >"$out"
exec "$server" --config "$out" "$@"
