"""A worker's scrape target for Prometheus' file discovery (lkrig_instrument/scrape_target.py);
its use on the compose stack: tests/test_compose_images.py (the `worker` label is the container's
name)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lkrig_instrument import scrape_target


def test_a_worker_announces_its_scrape_target_under_a_stable_name(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """scrape_target.announce: one file_sd file per worker, named and labelled by its name (the
    container's, from reverse DNS; LKRIG_WORKER_NAME first), never by its address."""
    monkeypatch.setenv(scrape_target.DIR_VAR, str(tmp_path))
    monkeypatch.setattr(scrape_target, "own_address", lambda: "172.18.0.7")
    monkeypatch.setattr(scrape_target, "nameserver", lambda: "127.0.0.11")
    monkeypatch.setattr(scrape_target, "ptr_lookup", lambda ip, server: "lkrig-agent-2.lkrig_default")
    monkeypatch.delenv(scrape_target.NAME_VAR, raising=False)
    path = scrape_target.announce(9100)
    assert path == tmp_path / "lkrig-agent-2.json"
    assert json.loads(path.read_text()) == [{"targets": ["172.18.0.7:9100"],
                                             "labels": {"worker": "lkrig-agent-2"}}]
    monkeypatch.setenv(scrape_target.NAME_VAR, "Agent 3")
    assert scrape_target.own_name("172.18.0.7") == "agent-3"
    monkeypatch.delenv(scrape_target.DIR_VAR)
    assert scrape_target.announce(9100) is None


def test_the_name_comes_from_the_dns_server_not_from_etc_hosts(tmp_path: Path) -> None:
    """Docker's /etc/hosts maps the container's address to its id; its DNS server (resolv.conf)
    answers the reverse lookup with the container's name. A real UDP server here answers the
    query ptr_lookup sends, with the name compressed as DNS servers do."""
    import socket
    import struct
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    asked: list[str] = []

    def answer() -> None:
        query, peer = server.recvfrom(512)
        qname_end = query.index(b"\0", 12) + 1
        asked.append(scrape_target.read_name(query, 12)[0])
        rdata = b"\x0dlkrig-agent-2\x0dlkrig_default\0"
        reply = (query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + query[12:qname_end + 4]
                 + b"\xc0\x0c" + struct.pack(">HHIH", 12, 1, 600, len(rdata)) + rdata)
        server.sendto(reply, peer)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        name = scrape_target.ptr_lookup("172.18.0.7", "127.0.0.1", port=server.getsockname()[1])
    finally:
        t.join(5)
        server.close()
    assert asked == ["7.0.18.172.in-addr.arpa"]
    assert name == "lkrig-agent-2.lkrig_default"
    conf = tmp_path / "resolv.conf"
    conf.write_text("# docker\nnameserver 127.0.0.11\noptions ndots:0\n")
    assert scrape_target.nameserver(conf) == "127.0.0.11"
