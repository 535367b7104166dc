"""What bench/lk_compare.py reads: a participant process's CPU, and livekit-server's count of
the packets it received."""

from __future__ import annotations

from bench import agentload as al
from rig import procs


def proc_cpu_s(pid: int) -> float:
    return al.cpu_ticks(pid) / al.CLK_TCK


def incoming_packets(metrics_url: str) -> float:
    """livekit-server's count of packets received: livekit_packet_total{direction="incoming"}
    (v1.13.5: labels country, direction, transmission, node_id, node_type). The server adds a
    track's RTP packets to it from the track's stats every 5 s (connectionquality's
    UpdateInterval), not per packet, so a window needs 5 s or more to see each track counted;
    the WebSocket's signal messages are counted too (a few per participant)."""
    got = procs.http_get(metrics_url, timeout=5)
    if got is None:
        raise RuntimeError(f"livekit-server metrics at {metrics_url} did not answer")
    total = 0.0
    for line in got[1].decode().splitlines():
        if line.startswith("livekit_packet_total{") and 'direction="incoming"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
