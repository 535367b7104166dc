"""Scenarios: one file each, one agent pattern each. `diff seed.py fix_*.py` shows the fix."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).parent
# scenarios that use an API some livekit-agents versions lack: (class, attribute)
REQUIRES = {"builtin_with_filler": ("RunContext", "with_filler")}


class ScenarioError(ValueError):
    pass


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))


def load(name: str) -> ModuleType:
    if name not in available():
        raise ScenarioError(f"unknown scenario {name!r} (agent/scenarios/{name}.py does not exist);"
                            f" available: {', '.join(available())}")
    if name in REQUIRES:
        import livekit.agents as lka

        cls, attr = REQUIRES[name]
        if not hasattr(getattr(lka, cls), attr):
            raise ScenarioError(f"scenario {name!r} needs {cls}.{attr}, which livekit-agents "
                                f"{lka.__version__} does not have")
    return importlib.import_module(f"{__name__}.{name}")
