"""partition-agent on the native stack (rig/netcut.py through rig/backends/native.py): the busiest
agent worker is cut off from livekit-server while it keeps running, and joins again.

A real stack (livekit-server, Prometheus, two agent workers, each started in a cgroup of its own)
and the same FaultScheduler `rig run` drives. What "cut off" means is checked the way the agent
meets it: a socket made in the victim's cgroup cannot reach livekit-server's port, while one made
in the other agent's cgroup can; after the partition both can, and nothing of it is left (no
iptables rule, no cgroup). Needs root, iptables and cgroup v2, which scripts/setup provides; the
check that refuses the fault elsewhere is netcut.unavailable().
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from stackutil import wait_until

from rig import faultrun, faults, netcut
from rig.backends.native import NativeBackend

pytestmark = pytest.mark.timeout(240)
OFFSET = 11800


def reaches(cgroup: Path, port: int) -> bool:
    """Whether a process started in `cgroup` connects to 127.0.0.1:port within 2 s."""
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
    return subprocess.run([sys.executable, "-c", probe], preexec_fn=netcut.enter(cgroup),
                          capture_output=True, timeout=30).returncode == 0


def test_partition_agent_cuts_the_busiest_agent_off_livekit_and_joins_it_again(tmp_path: Path) -> None:
    assert netcut.unavailable() is None, netcut.unavailable()
    said: list[str] = []
    backend = NativeBackend(agents=2, loadgen_workers=1, run_dir=tmp_path / "stack", port_offset=OFFSET,
                            env_file=tmp_path / ".env", isolate_agents=True)
    scheduler = faultrun.FaultScheduler(backend, said.append)
    groups: dict[str, Path | None] = {}
    try:
        backend.start()
        port = backend.info.ports.livekit
        groups = {a.name: backend.stack.service(a.name).cgroup for a in backend.info.agents}
        assert all(g is not None and reaches(g, port) for g in groups.values()), groups
        scheduler.schedule([faults.parse("partition-agent@0s:for=8s")], time.monotonic())
        wait_until(lambda: scheduler.records or scheduler.errors, 30, "the partition")
        assert not scheduler.errors, scheduler.errors
        victim = str(scheduler.records[0]["detail"]).split()[0]
        other = next(n for n in groups if n != victim)
        assert (reaches(groups[victim], port), reaches(groups[other], port)) == (False, True)
        assert backend.dead() is None and victim in scheduler.busy  # it runs on, cut off
        wait_until(lambda: len(scheduler.records) == 2 or scheduler.errors, 30, "the end of the partition")
        scheduler.join(10.0)
        assert not scheduler.errors, scheduler.errors
        assert [r["name"] for r in scheduler.records] == ["partition-agent", "partition-agent:end"]
        assert reaches(groups[victim], port) and not scheduler.busy and backend.dead() is None
        rules = subprocess.run(["iptables", "-w", "-S", "OUTPUT"], capture_output=True, text=True).stdout
        assert str(groups[victim].name) not in rules, rules
    finally:
        scheduler.join(10.0, restart=False)
        left = backend.stop()
    assert left == []
    assert not [g for g in groups.values() if g and g.exists()], groups
    print(f"partition: {said}")
