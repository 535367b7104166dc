"""The state file of a native stack (<run dir>/state.json): the supervising process, the
processes it started and where the stack answers. `rig down` stops what it lists, possibly from
another shell; `rig up` refuses to start over a stack it shows running. Secrets stay out of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rig import procs
from rig.stackerror import StackError
from rig.supervisor import Service

STATE_FILE = "state.json"


def read_state(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(
            f"{path}: unreadable state file ({exc}); remove it after checking nothing runs"
        ) from exc


def write_state(run_dir: Path, services: list[Service], info: dict[str, Any] | None, detached: bool) -> None:
    """Record this process as the supervisor of `services`; `info` is the stack's public StackInfo."""
    me = procs.proc_info(os.getpid())
    state = {
        "version": 1,
        "supervisor": {
            "pid": os.getpid(),
            "start_ticks": me.start_ticks if me else 0,
            "detached": detached,
        },
        "services": [
            {"name": s.name, "pid": s.popen.pid, "start_ticks": s.start_ticks, "log": str(s.log)}
            for s in services
            if s.popen
        ],
        "info": info,
    }
    path = run_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(path)


def alive_services(state: dict[str, Any]) -> list[str]:
    """'name (pid N)' for each recorded service that still has a process."""
    return [
        f"{s['name']} (pid {s['pid']})"
        for s in state.get("services", [])
        if procs.session_members(s["pid"], s["start_ticks"])
    ]
