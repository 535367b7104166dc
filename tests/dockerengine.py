"""A private Docker engine for the tests: its own socket, data root, exec root and containerd
namespace under a temp dir; vfs storage; no iptables, no bridge, so nothing on the host's
network changes. There is no registry here: images are imported from tars (`import_image`).

scripts/setup.d/30-docker-engine.sh installs docker.io and the Docker SDK. A missing tool fails
the test with that hint; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rig import procs

HINT = "run `bash scripts/setup` (scripts/setup.d/30-docker-engine.sh installs it)"


def import_image(client: Any, rootfs_tar: bytes, image: str) -> None:
    repo, tag = image.split(":")
    client.api.import_image_from_data(rootfs_tar, repository=repo, tag=tag)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if text in cmd and (p / "stat").read_text().split(") ")[-1][0] != "Z":
                    found.append(f"{p.name}: {cmd}")
    return found


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below `base`, deepest first."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted((m for m in points if m == str(base) or m.startswith(f"{base}/")), reverse=True)


@contextlib.contextmanager
def private_engine() -> Iterator[Any]:
    """A DockerClient on a private dockerd started here, stopped (nothing left) at the end;
    `client.sock` is its socket, for the compose binary."""
    if os.geteuid() != 0:
        pytest.fail("dockerd needs root; run the tests as root (CI does)")
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.fail(f"no dockerd on PATH: {HINT}")
    try:
        import docker
    except ImportError:
        pytest.fail(f"the Docker SDK for Python (`docker`) is not installed: {HINT}")
    # Short paths: a unix socket path must stay under 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="lkrig-dockerd-", dir="/tmp"))
    (base / "daemon.json").write_text("{}")  # not the host's /etc/docker/daemon.json
    sock = base / "docker.sock"
    ns = f"lkrig-test-{os.getpid()}"
    log = open(base / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [dockerd, "--host", f"unix://{sock}", "--data-root", str(base / "data"),
         "--exec-root", str(base / "exec"), "--pidfile", str(base / "dockerd.pid"),
         "--config-file", str(base / "daemon.json"), "--containerd-namespace", ns,
         "--containerd-plugins-namespace", f"{ns}-plugins", "--storage-driver", "vfs",
         "--iptables=false", "--ip6tables=false", "--bridge", "none", "--userland-proxy=false"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=procs.die_with_parent(signal.SIGTERM))
    client = None
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited with code {proc.returncode}:\n"
                            + (base / "dockerd.log").read_text()[-3000:])
            if sock.exists():
                with contextlib.suppress(Exception):
                    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=60)
                    client.ping()
                    break
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not answer within 30 s:\n"
                            + (base / "dockerd.log").read_text()[-3000:])
            time.sleep(0.2)
        client.sock = sock  # for the compose binary
        yield client
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                for c in client.containers.list(all=True):
                    c.remove(force=True)
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        time.sleep(0.5)
        left = processes_mentioning(str(base)) + processes_mentioning(ns)
        # dockerd leaves its bind mount of the host's network namespace (exec-root/netns/default).
        for mount in mounts_under(base):
            subprocess.run(["umount", "-l", mount], check=False)
        mounted = mounts_under(base)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"dockerd left processes running: {left}"
        assert not mounted and not base.exists(), f"dockerd left {mounted or base}"


