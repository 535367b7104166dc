"""`agent.replay`, with every agent activity's pause made N event-loop iterations longer.

Usage: python tests/tools/replay_with_longer_pause.py N <rig replay options>

The test of RunContext.with_filler's race (tests/test_with_filler_race.py) uses it: the filler
fires a fixed number of iterations after the session first looks idle, inside the handoff, so
where it lands depends on how many iterations the front desk's pause takes. Only the count of
iterations changes: each extra one is an `await asyncio.sleep(0)` after the framework's own
pause (AgentActivity._pause_scheduling_task) has returned.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from livekit.agents.voice import agent_activity

from agent.replay import main

EXTRA = int(sys.argv[1])
_pause = agent_activity.AgentActivity._pause_scheduling_task


async def longer_pause(self: agent_activity.AgentActivity, **kwargs: Any) -> None:
    await _pause(self, **kwargs)
    for _ in range(EXTRA):
        await asyncio.sleep(0)


agent_activity.AgentActivity._pause_scheduling_task = longer_pause  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
