"""Latency profiles: named YAML files giving a distribution per provider component.

    # agent/profiles/typical.yaml
    seed: 7
    stt_final:      {lognormal: {median: 150, sigma: 0.3}}   # milliseconds
    llm_ttft:       {uniform: [250, 600]}
    llm_token:      {fixed: 12}                               # per token (word)
    tts_first_byte: {lognormal: {median: 180, sigma: 0.4}, spike: {p: 0.05, add: 1200}}
    tool:           {fixed: 300}

Every component must be given; `spike` adds `add` ms with probability `p` to any distribution.

At run time a JSON file named by LKRIG_LATENCY_OVERRIDE, `{"add_ms": 800, "components":
["llm_ttft"]}`, adds to every later sample of those components in running sessions (`rig run
--fault slow-provider@...`); deleting the file ends it.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lkrig_instrument import envnames

PROFILES_DIR = Path(__file__).parent / "profiles"
COMPONENTS = ("stt_final", "llm_ttft", "llm_token", "tts_first_byte", "tool")


class ProfileError(ValueError):
    """A profile that does not exist or does not parse; the message names file and field."""


@dataclass(frozen=True)
class Distribution:
    kind: str  # fixed | uniform | lognormal
    a: float  # fixed value, uniform low, lognormal median (ms)
    b: float = 0.0  # uniform high, lognormal sigma
    spike_p: float = 0.0
    spike_add: float = 0.0

    def sample_ms(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        else:
            value = rng.lognormvariate(math.log(self.a), self.b)
        if self.spike_p and rng.random() < self.spike_p:
            value += self.spike_add
        return value


@dataclass(frozen=True)
class Profile:
    name: str
    seed: int
    components: dict[str, Distribution]


def _dirs() -> list[Path]:
    """agent/profiles, then LKRIG_PROFILE_DIR (your own profiles, by name, without editing ours)."""
    extra = envnames.get("LKRIG_PROFILE_DIR")
    return [PROFILES_DIR, *([Path(extra)] if extra else [])]


def available() -> list[str]:
    return sorted({p.stem for d in _dirs() for p in d.glob("*.yaml")})


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{where}: expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ProfileError(f"{where}: must be {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _distribution(spec: Any, where: str) -> Distribution:
    if not isinstance(spec, dict):
        raise ProfileError(f"{where}: expected a mapping like {{fixed: 100}}, got {spec!r}")
    extra = set(spec) - {"fixed", "uniform", "lognormal", "spike"}
    if extra:
        raise ProfileError(f"{where}: unknown key {sorted(extra)[0]!r}")
    kinds = [k for k in ("fixed", "uniform", "lognormal") if k in spec]
    if len(kinds) != 1:
        raise ProfileError(f"{where}: give exactly one of fixed, uniform, lognormal")
    kind = kinds[0]
    body = spec[kind]
    if kind == "fixed":
        a, b = _number(body, f"{where}.fixed"), 0.0
    elif kind == "uniform":
        if not (isinstance(body, list) and len(body) == 2):
            raise ProfileError(f"{where}.uniform: expected [low, high] in ms, got {body!r}")
        a, b = (_number(v, f"{where}.uniform") for v in body)
        if b < a:
            raise ProfileError(f"{where}.uniform: high {b} is below low {a}")
    else:
        if not (isinstance(body, dict) and set(body) == {"median", "sigma"}):
            raise ProfileError(f"{where}.lognormal: expected {{median: ms, sigma: s}}, got {body!r}")
        a = _number(body["median"], f"{where}.lognormal.median", positive=True)
        b = _number(body["sigma"], f"{where}.lognormal.sigma")
    p = add = 0.0
    if "spike" in spec:
        spike = spec["spike"]
        if not (isinstance(spike, dict) and set(spike) == {"p", "add"}):
            raise ProfileError(f"{where}.spike: expected {{p: probability, add: ms}}, got {spike!r}")
        p = _number(spike["p"], f"{where}.spike.p")
        if p > 1:
            raise ProfileError(f"{where}.spike.p: a probability is at most 1, got {p}")
        add = _number(spike["add"], f"{where}.spike.add")
    return Distribution(kind, a, b, p, add)


def load(name_or_path: str) -> Profile:
    """A profile by name (agent/profiles/<name>.yaml) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        found = [d / f"{name_or_path}.yaml" for d in _dirs() if (d / f"{name_or_path}.yaml").is_file()]
        path = found[0] if found else PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"{path}: no such latency profile; available: {', '.join(available())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of components, got {type(data).__name__}")
    unknown = set(data) - {"seed", "description", *COMPONENTS}
    if unknown:
        raise ProfileError(f"{path}: unknown field {sorted(unknown)[0]!r}; "
                           f"fields are seed, description, {', '.join(COMPONENTS)}")
    missing = [c for c in COMPONENTS if c not in data]
    if missing:
        raise ProfileError(f"{path}: missing field {missing[0]!r}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ProfileError(f"{path}: seed: expected an integer, got {seed!r}")
    comps = {c: _distribution(data[c], f"{path}: {c}") for c in COMPONENTS}
    return Profile(path.stem, seed, comps)


class Override:
    """The runtime latency override file, re-read only when its mtime changes (one stat per
    sample: samples come a few per turn)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._add: dict[str, float] = {}

    def add_ms(self, component: str) -> float:
        if not self.path:
            return 0.0
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            self._mtime, self._add = None, {}
            return 0.0
        if mtime != self._mtime:
            self._mtime, self._add = mtime, {}
            try:
                data = json.loads(Path(self.path).read_text())
                self._add = {str(c): float(data["add_ms"]) for c in data["components"]}
            except (OSError, ValueError, KeyError, TypeError):
                pass  # half-written: the next write changes the mtime again
        return self._add.get(component, 0.0)


OVERRIDE = Override(os.environ.get("LKRIG_LATENCY_OVERRIDE"))


class Latency:
    """Draws injected latencies for one session; deterministic for (profile seed, job seed)."""

    def __init__(self, profile: Profile, seed: int = 0, *, time_scale: float = 1.0,
                 on_sample: Callable[[str, float], None] | None = None) -> None:
        self.profile = profile
        self.time_scale = time_scale
        self._rng = random.Random(f"{profile.seed}:{seed}")
        self._on_sample = on_sample

    def seconds(self, component: str) -> float:
        value = self.profile.components[component].sample_ms(self._rng) / 1000.0
        value += OVERRIDE.add_ms(component) / 1000.0
        if self._on_sample:
            self._on_sample(component, value)
        return value / self.time_scale

    async def sleep(self, component: str) -> None:
        import asyncio

        delay = self.seconds(component)
        if delay > 0:
            await asyncio.sleep(delay)
