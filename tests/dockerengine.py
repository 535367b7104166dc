"""A private Docker engine for the tests: its own socket, exec root and containerd namespace under
a temp dir, and nothing on this machine's network changes. Two kinds:

- on this machine's network, with no bridge and no iptables (`private_engine()`): containers run
  with host networking or none; image builds reach the package registries (`network: host`);
- in a network namespace of its own (`private_engine(netns=True)`): bridges, iptables and
  published ports as on a workstation, all inside that namespace (`client.netns` names it; the
  rig reaches the stack from inside it, `netns.run_in`), and no way out of it.

The data root is a temp dir (vfs storage), or a kept one (`data_root=`, overlay2) that carries
built images and their build cache from one engine to the next: a build engine, then a
namespaced one on the same data root. There is no registry here: images are imported from tars
(`import_image`, `import_standins`).

scripts/setup.d/30-docker-engine.sh installs docker.io and the Docker SDK, 35-base-images.sh the
base images' stand-ins. A missing tool fails the test with that hint; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rig import paths, procs

sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))
from toolpaths import REPO, compose_bin

HINT = "run `bash scripts/setup` (scripts/setup.d/30-docker-engine.sh installs it)"
STANDINS = paths.cache_dir() / "base-images"
STANDIN_LABEL = "lkrig.standin"


def import_image(client: Any, rootfs_tar: bytes, image: str) -> None:
    repo, tag = image.split(":")
    client.api.import_image_from_data(rootfs_tar, repository=repo, tag=tag)


def standins() -> list[dict[str, Any]]:
    """The base images' stand-ins scripts/setup.d/35-base-images.sh made: image, tar, key, changes."""
    index = STANDINS / "images.json"
    if not index.exists():
        pytest.fail(f"no {index}: run `bash scripts/setup` (scripts/setup.d/35-base-images.sh makes"
                    " the base images' stand-ins)")
    return json.loads(index.read_text())


def import_standins(client: Any) -> list[str]:
    """Import every stand-in under its exact name, unless the engine has it at the same key;
    return the names imported now."""
    done = []
    for entry in standins():
        with contextlib.suppress(Exception):
            have = client.images.get(entry["image"]).labels or {}
            if have.get(STANDIN_LABEL) == entry["key"]:
                continue
        repo, tag = entry["image"].rsplit(":", 1)
        client.api.import_image_from_file(
            str(STANDINS / entry["tar"]), repository=repo, tag=tag,
            changes=[*entry["changes"], f"LABEL {STANDIN_LABEL}={entry['key']}"])
        done.append(entry["image"])
    return done


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


# Variables that would steer `docker compose` away from the files and project it is given.
STEERING = ("COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "LIVEKIT_REDIS_HOST",
            "DOCKER_CONTEXT")


def compose_argv(client: Any, env_file: Path, *args: str, files: tuple[Path, ...] = (),
                 env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """`docker compose` on docker-compose.yml (plus `files`) against the private engine."""
    full_env = {k: v for k, v in os.environ.items() if k not in STEERING}
    full_env.update(DOCKER_HOST=f"unix://{client.sock}", **(env or {}))
    argv = [str(compose_bin()), "--env-file", str(env_file), "-f", str(REPO / "docker-compose.yml"),
            *(a for f in files for a in ("-f", str(f))), *args]
    return argv, full_env


def compose(client: Any, env_file: Path, *args: str, files: tuple[Path, ...] = (), timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv, full_env = compose_argv(client, env_file, *args, files=files, env=env)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)


def run_in(netns: Path, fn: Any, *args: Any) -> Any:
    """fn(*args) in a thread that joined the network namespace `netns` (a thread's own setting),
    so its sockets connect from inside it; returns its result or raises its exception."""
    import ctypes
    import threading

    out: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns({netns})")
            finally:
                os.close(fd)
            out["value"] = fn(*args)
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, name=f"in {netns.name}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@contextlib.contextmanager
def _namespace(name: str) -> Iterator[Path]:
    """A named network namespace with its loopback up, deleted at the end."""
    for cmd in (["ip", "netns", "add", name], ["ip", "-n", name, "link", "set", "lo", "up"]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            pytest.fail(f"{' '.join(cmd)} failed: {r.stderr.strip()} (iproute2, as root)")
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def private_engine(*, data_root: Path | None = None, netns: bool = False) -> Iterator[Any]:
    """A DockerClient on a private dockerd started here, stopped (nothing left) at the end;
    `client.sock` is its socket, for the compose binary, and with `netns`, `client.netns` the path
    of its network namespace. With `data_root` (kept, overlay2) only one engine uses it at a time."""
    if netns and shutil.which("iptables") is None:
        pytest.fail(f"no iptables on PATH (the namespaced engine sets up its bridges with it): {HINT}")
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
    # One per engine, so two may run at once. mkdtemp's suffix may hold "_", which containerd
    # refuses next to another separator or at the end: letters and digits only.
    ns = "lkrig-" + "".join(ch for ch in base.name.removeprefix("lkrig-dockerd-") if ch.isalnum())
    lock = None
    if data_root is not None:
        data_root.mkdir(parents=True, exist_ok=True)
        lock = open(data_root.parent / f"{data_root.name}.lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
    storage = ["--data-root", str(data_root), "--storage-driver", "overlay2"] if data_root else \
        ["--data-root", str(base / "data"), "--storage-driver", "vfs"]
    # In its own namespace the engine sets up bridges and iptables there, and publishes ports
    # through its userland proxy (a 127.0.0.1 binding needs it); on this machine's network, none.
    network = ["--iptables=true", "--ip6tables=false", "--bridge", "none"] if netns else \
        ["--iptables=false", "--ip6tables=false", "--bridge", "none", "--userland-proxy=false"]
    stack = contextlib.ExitStack()
    prefix: list[str] = []
    netns_path = None
    if netns:
        netns_path = stack.enter_context(_namespace(ns))
        prefix = ["nsenter", f"--net={netns_path}"]
    log = open(base / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [*prefix, dockerd, "--host", f"unix://{sock}", *storage,
         "--exec-root", str(base / "exec"), "--pidfile", str(base / "dockerd.pid"),
         "--config-file", str(base / "daemon.json"), "--containerd-namespace", ns,
         "--containerd-plugins-namespace", f"{ns}-plugins", *network],
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
        client.netns = netns_path
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
        if data_root is not None:
            for mount in mounts_under(data_root):
                subprocess.run(["umount", "-l", mount], check=False)
        mounted = mounts_under(base) + (mounts_under(data_root) if data_root else [])
        shutil.rmtree(base, ignore_errors=True)
        stack.close()
        if lock is not None:
            lock.close()
        assert not left, f"dockerd left processes running: {left}"
        assert not mounted and not base.exists(), f"dockerd left {mounted or base}"


