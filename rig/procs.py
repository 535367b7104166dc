"""Process plumbing for the native stack: sessions, identity, ports, health probes (Linux /proc).

Every service runs as the leader of its own session (setsid), so everything it forks (agent job
processes, forkservers) carries the leader's session id even after the leader is gone. Stopping a
service means signalling every live process of that session; "stopped" means none is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int  # since boot; with the pid it names one process, across pid reuse


def proc_info(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcInfo(
        pid=pid, state=fields[0], pgid=int(fields[2]), sid=int(fields[3]), start_ticks=int(fields[19])
    )


def running(info: ProcInfo) -> bool:
    """Whether the process has not finished exiting. A multi-threaded process's leader thread can
    be a zombie while its other threads still exit, holding the process's files and sockets (its
    ports still listen): it runs until its last thread is gone."""
    if info.state not in ("Z", "X"):
        return True
    try:
        tasks = os.listdir(f"/proc/{info.pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            raw = Path(f"/proc/{info.pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X"):
            return True
    return False


def session_members(sid: int, not_before_ticks: int = 0) -> list[int]:
    """Running pids in session `sid` that started no earlier than the leader did."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = proc_info(int(entry))
        if info and info.sid == sid and info.start_ticks >= not_before_ticks and running(info):
            members.append(info.pid)
    return members


def is_same_process(pid: int, start_ticks: int) -> bool:
    info = proc_info(pid)
    return info is not None and info.start_ticks == start_ticks and running(info)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the supervisor dies, so a killed `rig up` leaves nothing."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))

    return preexec


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_session(sid: int, start_ticks: int, grace: float, reap: object = None) -> list[int]:
    """SIGTERM the session, SIGKILL what is left after `grace` seconds; return pids still alive.

    `reap` is an optional callable, polled while waiting, that reaps our own children (zombies
    of our children would otherwise look alive to kill(0), though /proc shows them as Z).
    """
    members = session_members(sid, start_ticks)
    if not members:
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGTERM)  # the leader's group; members that changed group get it below
    for pid in members:
        _signal(pid, signal.SIGTERM)
    for sig_deadline, final in ((grace, False), (5.0, True)):
        deadline = time.monotonic() + sig_deadline
        while time.monotonic() < deadline:
            if callable(reap):
                reap()
            members = session_members(sid, start_ticks)
            if not members:
                return []
            time.sleep(0.05)
        if final:
            break
        for pid in members:
            _signal(pid, signal.SIGKILL)
    return session_members(sid, start_ticks)


# --- ports -----------------------------------------------------------------------------------------


def tcp_port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could listen on host:port now.

    SO_REUSEADDR as the servers themselves set it, so a TIME_WAIT left by the last run does not
    count as busy, while a live listener (on this address or the wildcard) still does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_owner(port: int) -> str | None:
    """Best effort 'pid N (cmd)' of the process listening on a TCP port, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                    inodes.add(parts[9])
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    cmd = (
                        Path(f"/proc/{entry}/cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode(errors="replace")
                    )
                    return f"pid {entry} ({cmd.strip()[:80]})"
    return None


# --- health ----------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body), or None if nothing answered. Loopback only: no proxy, whatever the env says."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return None
