"""Hosts as network namespaces on one machine, for the multi-host topology test.

Each host is a namespace with its own loopback and one address on a private /24. The bridge that
joins them sits in a namespace of its own too, so nothing is added to the machine's own network,
and nothing outside the namespaces is ever addressed. Needs root (CAP_NET_ADMIN) and iproute2.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

SUBNET = "10.77.0"  # .1 unused; hosts from .2


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Hosts:
    """`with Hosts(["lk-a", "agents-a"]) as hosts:` hosts.addr["lk-a"], hosts.run("lk-a", argv)."""

    names: list[str]
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    addr: dict[str, str] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)

    def ns(self, name: str) -> str:
        return f"lkrig-{self.tag}-{name}"

    def __enter__(self) -> Hosts:
        switch = self.ns("switch")
        try:
            _ip("netns", "add", switch)
            self.made.append(switch)
            _ip("-n", switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", switch, "link", "set", "br0", "up")
            for i, name in enumerate(self.names):
                ns, port = self.ns(name), f"p{i}"
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _ip("-n", switch, "link", "set", port, "master", "br0", "up")
                self.addr[name] = f"{SUBNET}.{i + 2}"
                _ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for ns in reversed(self.made):  # deleting a namespace deletes its veth ends with it
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        self.made.clear()

    def argv(self, name: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def run(self, name: str, argv: list[str], timeout: float = 300, **kw: object
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(name, argv), capture_output=True, text=True, timeout=timeout,
                              **kw)  # type: ignore[call-overload]

    def inside(self, name: str, fn: Callable[[], T]) -> T:
        """fn() on a thread that has entered host `name`'s network namespace (setns(2) moves one
        thread only), so its sockets connect from that host; its result, or its exception."""
        got: list[T] = []
        failed: list[BaseException] = []

        def body() -> None:
            fd = os.open(f"/run/netns/{self.ns(name)}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {self.ns(name)}")
            finally:
                os.close(fd)
            try:
                got.append(fn())
            except BaseException as exc:  # handed to the caller's thread
                failed.append(exc)

        t = threading.Thread(target=body, name=f"in-{name}")
        t.start()
        t.join()
        if failed:
            raise failed[0]
        return got[0]
