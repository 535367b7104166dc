"""`AgentSession(**providers_or(stt=..., llm=..., tts=...), ...)`: the user's own STT, LLM and TTS,
or, with LKRIG_PROVIDERS=scripted, the rig's scripted ones with injected latency.

livekit-agents offers no public hook to replace the providers a session was built with, and
patching the plugin classes would change the code under test. So the swap is opt-in, in the one
place the user's code chooses its providers. Pass factories (`lambda: deepgram.STT()`) rather than
instances when the real ones need keys the rig does not have: factories of swapped providers are
never called.

The scripted providers are not part of this package: LKRIG_PROVIDERS_FACTORY names a callable,
`module:function` (default `agent.providers.byo:build`, the rig's), imported only when the swap is
on. It gets the names asked for and returns the providers it scripts (a subset), plus the name of
the latency profile under `"profile"`, which becomes the session's `profile` label.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from . import envnames
from .settings import SCRIPTED_PROFILE

MODE_ENV = "LKRIG_PROVIDERS"  # "scripted", or unset / "real"
FACTORY_ENV = "LKRIG_PROVIDERS_FACTORY"
DEFAULT_FACTORY = "agent.providers.byo:build"
KINDS = ("stt", "llm", "tts")


class ProviderSwapError(RuntimeError):
    """The scripted providers were asked for but cannot be had; the message says why."""


def _load_factory(spec: str) -> Callable[[tuple[str, ...]], Mapping[str, Any]]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ProviderSwapError(f"{FACTORY_ENV}={spec!r}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ProviderSwapError(
            f"{MODE_ENV}=scripted: cannot import {module_name} ({e}); the rig's scripted providers "
            f"need the rig's checkout on PYTHONPATH (rig up --native and the byo compose file set "
            f"it), or point {FACTORY_ENV} at your own") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ProviderSwapError(f"{FACTORY_ENV}={spec!r}: {module_name} has no function {attr}")
    return factory  # type: ignore[no-any-return]


def _resolve(value: Any) -> Any:
    """A factory (a lambda, a class) is called; an instance or a model string is kept."""
    return value() if callable(value) else value


def providers_or(**providers: Any) -> dict[str, Any]:
    """`stt`, `llm`, `tts` (instances or factories) as given, or the scripted ones instead.

    Returns keyword arguments for `AgentSession`. With LKRIG_PROVIDERS=scripted, every kind the
    factory scripts replaces the user's; the others are the user's. Unknown keys are an error:
    a misspelt `ttss=` must not silently keep a real provider.
    """
    unknown = sorted(set(providers) - set(KINDS))
    if unknown:
        raise TypeError(f"providers_or: unknown provider {unknown[0]!r}; expected {', '.join(KINDS)}")
    mode = envnames.get(MODE_ENV).strip() or "real"
    if mode not in ("real", "scripted"):
        raise ProviderSwapError(f"{MODE_ENV}={mode!r}: expected 'scripted' or 'real'")
    scripted: Mapping[str, Any] = {}
    if mode == "scripted":
        factory = _load_factory(envnames.get(FACTORY_ENV).strip() or DEFAULT_FACTORY)
        scripted = factory(tuple(providers))
        profile = scripted.get("profile")
        if profile:
            SCRIPTED_PROFILE.set(str(profile))
    return {kind: scripted[kind] if kind in scripted else _resolve(value)
            for kind, value in providers.items()}
