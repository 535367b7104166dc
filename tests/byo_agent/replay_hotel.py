"""Replays the hotel desk offline (text mode, no server) in whatever venv runs this file, and
prints JSON: what the instrumentation counted, what the framework itself logged, and the
Prometheus text of this process.

    python tests/byo_agent/replay_hotel.py --runs 3

The conversation is the one tests/test_byo.py's caller speaks; the agent is built by its own
code (`new_session`, `Concierge`), with LKRIG_PROVIDERS=scripted and its conversation script.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TURNS = ("Hi, I have a question about my bill.", "What is my balance?")
# The framework's own words for each kind: what its log says, independent of our taxonomy.
FRAMEWORK_TEXTS = {
    "draining": "cannot schedule new speech, the speech scheduling is draining/pausing",
    "circular_wait": "circular wait",
}


class FrameworkLog(logging.Handler):
    """Records of the framework's loggers (livekit.agents, asyncio) that carry an error text."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.kinds: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if not (record.name.startswith("livekit.agents") or record.name == "asyncio"):
            return
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + str(record.exc_info[1])
        for kind, needle in FRAMEWORK_TEXTS.items():
            if needle in text:
                self.kinds[kind] += 1


async def _idle(session: Any, said: list[str], n: int, timeout: float) -> bool:
    """Waits until the agent said more than n lines and has nothing left to say."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = session.current_speech is not None or len(said) <= n
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.6:
            return True
        await asyncio.sleep(0.02)
    return False


async def one_run(agent_mod: Any, time_scale: float) -> dict[str, Any]:
    from lkrig_instrument import LEDGER

    from agent.replay_io import ClockedAudioOutput

    said: list[str] = []
    errors: collections.Counter[str] = collections.Counter()
    session = agent_mod.new_session(vad=None)
    session.output.audio = ClockedAudioOutput(time_scale)

    def on_item(ev: Any) -> None:
        item = ev.item
        if getattr(item, "type", "") == "message" and item.role == "assistant":
            said.append(item.text_content or "")

    session.on("conversation_item_added", on_item)

    def on_error(kind: str, labels: dict[str, str], owner: object) -> None:
        if owner is session.lkrig_probe:
            errors[kind] += 1

    LEDGER.add_listener(on_error)
    framework = FrameworkLog()
    logging.getLogger().addHandler(framework)
    try:
        await session.start(agent_mod.Concierge())
        ok = await _idle(session, said, 0, 20)
        for text in TURNS:
            if not ok:
                break
            n = len(said)
            session.lkrig_probe.count_turn()
            session.generate_reply(user_input=text)
            ok = await _idle(session, said, n, 20)
    finally:
        try:
            await asyncio.wait_for(session.aclose(), 5)
        except (TimeoutError, RuntimeError):
            pass
        probe = session.lkrig_probe
        probe.finish()
        LEDGER.remove_listener(on_error)
        logging.getLogger().removeHandler(framework)
    return {"said": said, "errors": dict(errors), "framework_logged": dict(framework.kinds),
            "handoffs": probe.handoffs, "stuck": probe.stuck, "completed": ok}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sys.path[:0] = [str(HERE), str(REPO), str(REPO / "instrument")]
    os.environ.setdefault("LKRIG_PROVIDERS", "scripted")
    os.environ.setdefault("LKRIG_LLM_SCRIPT", str(HERE / "hotel_desk" / "conversation.yaml"))
    os.environ.setdefault("LKRIG_LATENCY_PROFILE", args.profile)
    os.environ.setdefault("LKRIG_STUCK_TIMEOUT", "8")
    import importlib

    agent_mod = importlib.import_module("hotel_desk.agent")
    runs = [await one_run(agent_mod, args.time_scale) for _ in range(args.runs)]
    return {"runs": runs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--profile", default="fast")
    p.add_argument("--time-scale", type=float, default=4.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = asyncio.run(main_async(args))
    import livekit.agents as lka
    from prometheus_client import generate_latest

    out["agents_version"] = lka.__version__
    out["metrics"] = generate_latest().decode()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
