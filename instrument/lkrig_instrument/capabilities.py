"""What the running livekit-agents version offers to the counting, said once in the log.

Every check is on the public API (exported names, public methods), never on a version table
alone, except where the difference is behaviour rather than API (the refusal that interrupts the
handle came with 1.4.3 and has no attribute to test).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("lkrig.instrument")

# Set in the environment once said, so that job processes forked by a worker whose main process
# already said it (lkrig_instrument.server_options) stay quiet.
_SAID_ENV = "LKRIG_CAPABILITIES_SAID"
_said = False


def agents_version() -> str:
    """The running livekit-agents version (the `agents_version` label), or "unknown"."""
    try:
        from livekit.agents import __version__

        return str(__version__)
    except Exception:
        return "unknown"


def _version() -> tuple[int, ...]:
    return tuple(int(p) for p in agents_version().split(".")[:3] if p.isdigit())


def has_tool_execution_updated() -> bool:
    import livekit.agents as lka

    return hasattr(lka, "ToolExecutionUpdatedEvent")


def has_with_filler() -> bool:
    from livekit.agents import RunContext

    return hasattr(RunContext, "with_filler")


def missing() -> list[str]:
    """One sentence per hook this version lacks, saying what the counts lose by it."""
    version = agents_version()
    out = []
    if not has_tool_execution_updated():
        out.append(
            f"livekit-agents {version} has no `tool_execution_updated` session event: log lines "
            "of counted errors and stuck sessions cannot name the tools that were running")
    if not has_with_filler():
        out.append(
            f"livekit-agents {version} has no `RunContext.with_filler`: the `filler_dropped` "
            "kind cannot happen on it and stays 0")
    parsed = _version()
    if parsed and parsed < (1, 4, 3):
        out.append(
            f"livekit-agents {version} leaves a refused SpeechHandle pending instead of "
            "interrupting it (changed in 1.4.3): a draining refusal is counted from its exception, "
            "or, if your code catches that, when the session ends")
    return out


def report_once() -> None:
    """Log what this version lacks, once per process (and once per worker when the worker's
    main process already said it)."""
    global _said
    if _said or os.environ.get(_SAID_ENV):
        _said = True
        return
    _said = True
    for line in missing():
        log.warning("lkrig_instrument: %s", line)
    os.environ[_SAID_ENV] = "1"
