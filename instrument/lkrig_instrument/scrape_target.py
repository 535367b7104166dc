"""A worker's own Prometheus scrape target, with a stable name: file-based discovery.

Scaled replicas of one compose service differ only by address, and an address changes when a
container is started again, so Prometheus' DNS discovery would label each worker `172.x.y.z:9100`
and make a new one at every restart. Instead each worker writes, into a directory Prometheus
watches (`file_sd_configs`), one file holding its address and `worker=<its name>`. The name is
its container's name (Docker's DNS answers a container's address with it, e.g. `lkrig-agent-2`),
which stays the same over kills and restarts; `LKRIG_WORKER_NAME` overrides it.

Off unless `LKRIG_SCRAPE_TARGETS` names the directory (docker-compose.yml sets it; the native
stack writes its own Prometheus config with the names in it).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import socket
import struct
from pathlib import Path

DIR_VAR = "LKRIG_SCRAPE_TARGETS"
NAME_VAR = "LKRIG_WORKER_NAME"
SAFE = re.compile(r"[^a-z0-9._-]+")


def own_address() -> str:
    """The address other containers reach this one at (Docker puts it in /etc/hosts)."""
    return socket.gethostbyname(socket.gethostname())


def nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str | None:
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    except OSError:
        pass
    return None


def read_name(packet: bytes, at: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at `at`: the name and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(64):  # a loop of pointers is not a name
        n = packet[at]
        if n & 0xC0 == 0xC0:
            end = at + 2 if end is None else end
            at = ((n & 0x3F) << 8) | packet[at + 1]
        elif n == 0:
            return ".".join(labels), (at + 1 if end is None else end)
        else:
            labels.append(packet[at + 1:at + 1 + n].decode("ascii", "replace"))
            at += 1 + n
    raise ValueError("a DNS name with a pointer loop")


def ptr_lookup(address: str, server: str, port: int = 53, timeout: float = 2.0) -> str | None:
    """Ask the DNS server itself for the name of `address` (PTR). The C resolver would answer
    from /etc/hosts first, where Docker puts the container's id, not its name."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in
                     [*reversed(address.split(".")), "in-addr", "arpa"]) + b"\0"
    query = struct.pack(">HHHHHH", 0x6C6B, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 12, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (server, port))
        packet = s.recv(4096)
    ident, _flags, questions, answers = struct.unpack(">HHHH", packet[:8])
    if ident != 0x6C6B or not answers:
        return None
    at = 12
    for _ in range(questions):
        at = read_name(packet, at)[1] + 4
    for _ in range(answers):
        at = read_name(packet, at)[1]
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", packet[at:at + 10])
        at += 10
        if rtype == 12:
            return read_name(packet, at)[0]
        at += length
    return None


def own_name(address: str) -> str:
    """LKRIG_WORKER_NAME, else the container's name from its DNS server's reverse lookup
    (`lkrig-agent-2.lkrig_default` gives `lkrig-agent-2`), else the host name."""
    name = os.environ.get(NAME_VAR, "").strip()
    if not name and (server := nameserver()):
        try:
            name = (ptr_lookup(address, server) or "").split(".", 1)[0]
        except (OSError, ValueError, struct.error, IndexError):
            name = ""
    return SAFE.sub("-", (name or socket.gethostname()).lower()).strip("-") or "worker"


def announce(metrics_port: int) -> Path | None:
    """Write this worker's target file (and remove it when the process exits normally: a worker
    that is drained away is gone, one that is killed stays a target that is down). Returns the
    file, or None when discovery is off."""
    folder = os.environ.get(DIR_VAR, "").strip()
    if not folder:
        return None
    address = own_address()
    name = own_name(address)
    path = Path(folder) / f"{name}.json"
    group = [{"targets": [f"{address}:{metrics_port}"], "labels": {"worker": name}}]
    tmp = path.with_suffix(".tmp")  # Prometheus reads *.json only: never a half-written file
    tmp.write_text(json.dumps(group) + "\n")
    tmp.replace(path)
    atexit.register(path.unlink, missing_ok=True)
    return path
