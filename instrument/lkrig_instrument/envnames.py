"""The rig's environment variables share one prefix, LKRIG_. The RIG_ names some had in 0.2 still
work until 0.3: `get` reads a setting by its new name, else by its old one, saying once per
process that the old one is deprecated.

Every reader of a renamed variable goes through `get`; whatever sets one for a child process
sets the new name.
"""

from __future__ import annotations

import functools
import logging
import os

REMOVED_IN = "0.3"  # the release whose readers no longer look at the old names

# Old name -> new name. RIG_PROFILE and RIG_SCENARIO could not become LKRIG_PROFILE and
# LKRIG_SCENARIO: those are the `profile` and `scenario` labels of a user's own agent, which the
# operator fixes and no dispatch overrides, while these two name the latency profile and the
# scenario an agent runs when its dispatch names none.
RENAMED: dict[str, str] = {
    "RIG_CACHE": "LKRIG_CACHE",
    "RIG_INSTRUMENT": "LKRIG_INSTRUMENT",
    "RIG_LLM_SCRIPT": "LKRIG_LLM_SCRIPT",
    "RIG_PROFILE": "LKRIG_LATENCY_PROFILE",
    "RIG_PROFILE_DIR": "LKRIG_PROFILE_DIR",
    "RIG_PROVIDERS": "LKRIG_PROVIDERS",
    "RIG_PROVIDERS_FACTORY": "LKRIG_PROVIDERS_FACTORY",
    "RIG_REPO": "LKRIG_REPO",
    "RIG_SCENARIO": "LKRIG_DEFAULT_SCENARIO",
    "RIG_VENV": "LKRIG_VENV",
}
OLD_NAMES = {new: old for old, new in RENAMED.items()}

log = logging.getLogger("lkrig.env")


@functools.cache
def deprecated(old: str) -> None:
    """Says, once per process and name, that `old` is read in place of its new name."""
    log.warning("%s is deprecated, use %s; the old name stops working in %s",
                old, RENAMED[old], REMOVED_IN)


def get(name: str, default: str = "") -> str:
    """The setting `name` (an LKRIG_ name) if set and not empty, else its old RIG_ name's value
    (with the deprecation warning), else `default`."""
    if not name.startswith("LKRIG_"):
        raise ValueError(f"envnames.get({name!r}): read a setting by its LKRIG_ name")
    value = os.environ.get(name, "")
    if value:
        return value
    old = OLD_NAMES.get(name)
    if old and os.environ.get(old):
        deprecated(old)
        return os.environ[old]
    return default
