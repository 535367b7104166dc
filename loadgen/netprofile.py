"""Network profiles: `loadgen/networks/*.yaml`, what a caller's network does to its media.

Chosen per run (Locust's `network` parameter, `rig run --network NAME`), like the latency
profile; the op that starts a call carries the profile's numbers to the media engine
(loadgen/lkmedia/netem.go), which impairs that call's packets both ways. A malformed file is one
error naming the file, the line and the field, for example
`loadgen/networks/4g.yaml:9: uplink.loss.r: expected a number in [0, 1], got 1.5`.

    version: 1
    description: text
    uplink:               # caller -> server: the caller's microphone packets
      loss: {p: 0.002, r: 0.6, loss_bad: 1.0, loss_good: 0.0}   # Gilbert-Elliott, per packet
      # or  loss: {rate: 0.003, burst: 1.5}: loss only in the bad state, r = 1/burst
      delay_ms: 35        # mean added one-way delay
      jitter_ms: 10       # its standard deviation (floor delay_ms - jitter_ms + exponential part)
      rate_kbps: 5000     # bottleneck rate (0 or absent: none)
      queue_ms: 200       # the bottleneck's drop-tail queue, as waiting time (default 200)
    downlink: ...         # server -> caller: the agent's audio, before the caller decodes it

Every field of a direction is optional (absent: no loss, no delay, no cap). Plain Python and
PyYAML: the Locust processes and the voice drivers both import this.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import convscript
from loadgen.convscript import ScriptError

FORMAT_VERSION = 1
NETWORKS_DIR = Path(__file__).resolve().parent / "networks"
# Extra directory of the user's own profiles; its files shadow shipped ones of the same name.
EXTRA_DIR_ENV = "LOADGEN_NETWORKS_DIR"
DEFAULT = "perfect"
DEFAULT_QUEUE_MS = 200.0

_TOP_KEYS = {"version", "description", "uplink", "downlink"}
_LINK_KEYS = {"loss", "delay_ms", "jitter_ms", "rate_kbps", "queue_ms"}
_GE_KEYS = {"p", "r", "loss_bad", "loss_good"}
_SHORT_KEYS = {"rate", "burst"}


class NetworkError(ValueError):
    """A profile that cannot be used; str() is `file:line: field: what is wrong`, or names the
    profile that does not exist."""


@dataclass(frozen=True)
class Link:
    """One direction. Loss: Gilbert-Elliott per packet (good->bad p, bad->good r, then lost with
    loss_bad or loss_good in the state reached); delay: floor delay_ms - jitter_ms plus an
    exponential part of mean jitter_ms; a bottleneck of rate_kbps with a queue_ms queue."""

    p: float = 0.0
    r: float = 0.0
    loss_bad: float = 0.0
    loss_good: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_kbps: float = 0.0
    queue_ms: float = DEFAULT_QUEUE_MS

    @property
    def impaired(self) -> bool:
        return self.p > 0 or self.loss_good > 0 or self.delay_ms > 0 or self.rate_kbps > 0

    @property
    def loss_rate(self) -> float:
        """Stationary share of packets lost."""
        if self.p == 0:
            return self.loss_good
        pb = self.p / (self.p + self.r)
        return pb * self.loss_bad + (1 - pb) * self.loss_good

    @property
    def mean_burst(self) -> float:
        """Mean length of a run of consecutive losses (losses / runs started); the same
        closed form as lkmedia's meanBurst."""
        rate = self.loss_rate
        if rate == 0:
            return 0.0
        pb = self.p / (self.p + self.r) if self.p > 0 else 0.0
        kept_g, kept_b = 1 - self.loss_good, 1 - self.loss_bad
        starts = ((1 - pb) * kept_g * ((1 - self.p) * self.loss_good + self.p * self.loss_bad)
                  + pb * kept_b * (self.r * self.loss_good + (1 - self.r) * self.loss_bad))
        return rate / starts if starts > 0 else math.inf

    def engine(self) -> dict[str, float]:
        return {"p": self.p, "r": self.r, "loss_bad": self.loss_bad, "loss_good": self.loss_good,
                "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms, "rate_kbps": self.rate_kbps,
                "queue_ms": self.queue_ms}


@dataclass(frozen=True)
class Network:
    name: str
    path: str
    description: str = ""
    uplink: Link = field(default_factory=Link)
    downlink: Link = field(default_factory=Link)

    @property
    def impaired(self) -> bool:
        return self.uplink.impaired or self.downlink.impaired

    def engine(self, seed: int) -> dict[str, Any] | None:
        """The join op's `network` (None: nothing to impair). `seed` makes the call's
        impairment reproducible (each direction draws from its own stream of it)."""
        if not self.impaired:
            return None
        return {"name": self.name, "up": self.uplink.engine(), "down": self.downlink.engine(),
                "seed": int(seed) & 0x7FFF_FFFF_FFFF_FFFF}

    def summary(self) -> str:
        """One line per direction, for people (rig run, docs)."""
        def one(label: str, lk: Link) -> str:
            if not lk.impaired:
                return f"{label}: none"
            cap = f", {lk.rate_kbps:g} kbit/s" if lk.rate_kbps else ""
            return (f"{label}: loss {100 * lk.loss_rate:.2g} % in bursts of {lk.mean_burst:.2g}, "
                    f"delay {lk.delay_ms:g} ms +- {lk.jitter_ms:g}{cap}")
        return f"{one('up', self.uplink)}; {one('down', self.downlink)}"


def _prob(doc: Any, value: Any, path: tuple[Any, ...]) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and 0 <= value <= 1:
        return float(value)
    raise doc.error(path, f"expected a number in [0, 1], got {convscript._show(value)}")


def _link(doc: Any, raw: Any, path: tuple[Any, ...]) -> Link:
    if raw is None:
        return Link()
    d = convscript._mapping(doc, raw, path, _LINK_KEYS)
    kw: dict[str, float] = {}
    if d.get("loss") is not None:
        lp = (*path, "loss")
        loss = d["loss"]
        if not isinstance(loss, dict):
            raise doc.error(lp, "expected {p, r, loss_bad, loss_good} or {rate, burst}, got "
                                f"{convscript._show(loss)}")
        if set(loss) & _SHORT_KEYS:
            loss = convscript._mapping(doc, loss, lp, _SHORT_KEYS)
            rate = _prob(doc, loss.get("rate"), (*lp, "rate"))
            burst = convscript._number(doc, loss.get("burst", 1), (*lp, "burst"), minimum=1)
            if rate >= 1:
                raise doc.error((*lp, "rate"), "expected a number below 1")
            if rate > 0:
                kw["r"] = 1.0 / burst
                kw["p"] = rate * kw["r"] / (1 - rate)
                kw["loss_bad"] = 1.0
        else:
            loss = convscript._mapping(doc, loss, lp, _GE_KEYS)
            for key in _GE_KEYS:
                if key in loss:
                    kw[key] = _prob(doc, loss[key], (*lp, key))
            if kw.get("p", 0) > 0 and kw.get("r", 0) == 0:
                raise doc.error((*lp, "r"), "must be > 0 when p > 0 (the bad state would never end)")
            if kw.get("p", 0) > 0 and "loss_bad" not in loss:
                raise doc.error(lp, "missing field 'loss_bad' (the loss probability in the bad state)")
    for key in ("delay_ms", "jitter_ms", "rate_kbps"):
        if key in d:
            kw[key] = convscript._number(doc, d[key], (*path, key))
    if "queue_ms" in d:
        kw["queue_ms"] = convscript._number(doc, d["queue_ms"], (*path, "queue_ms"), exclusive=True)
    if kw.get("jitter_ms", 0) > kw.get("delay_ms", 0):
        raise doc.error((*path, "jitter_ms"), f"{kw['jitter_ms']:g} is above delay_ms "
                        f"{kw.get('delay_ms', 0):g} (the delay's floor is delay_ms - jitter_ms)")
    if 0 < kw.get("rate_kbps", 0) < 8:
        raise doc.error((*path, "rate_kbps"), f"{kw['rate_kbps']:g} is below 8 (0 or absent: no cap)")
    return Link(**kw)


def load(path: Path | str, display: str | None = None) -> Network:
    """Loads and validates one profile file; raises NetworkError naming file:line and field."""
    path = Path(path)
    display = display or convscript._display(path)
    name = path.stem
    try:
        if not convscript._NAME.match(name):
            raise NetworkError(f"{display}: file name '{name}' must be lowercase letters, digits, '_' or '-'")
        doc = convscript._Doc(path, display)
        top = convscript._mapping(doc, doc.data, (), _TOP_KEYS)
        if "version" not in top:
            raise doc.error((), f"missing field 'version' (this loader reads version {FORMAT_VERSION})")
        if top["version"] != FORMAT_VERSION:
            raise doc.error(("version",), f"unsupported version {convscript._show(top['version'])}; "
                                          f"this loader reads version {FORMAT_VERSION}")
        description = top.get("description", "")
        if not isinstance(description, str):
            raise doc.error(("description",), f"expected text, got {convscript._show(description)}")
        return Network(name=name, path=str(path), description=description.strip(),
                       uplink=_link(doc, top.get("uplink"), ("uplink",)),
                       downlink=_link(doc, top.get("downlink"), ("downlink",)))
    except ScriptError as e:
        raise NetworkError(str(e)) from None


def dirs() -> list[Path]:
    extra = os.environ.get(EXTRA_DIR_ENV)
    return [NETWORKS_DIR, Path(extra)] if extra else [NETWORKS_DIR]


def available(folders: list[Path] | None = None) -> dict[str, Path]:
    """Profile name -> file, later directories shadowing earlier ones."""
    found: dict[str, Path] = {}
    for d in folders if folders is not None else dirs():
        if not d.is_dir():
            raise NetworkError(f"{d}: network profiles directory does not exist (from ${EXTRA_DIR_ENV}?)")
        found.update({f.stem: f for f in sorted(d.glob("*.yaml"))})
    return found


def load_all(folders: list[Path] | None = None) -> dict[str, Network]:
    """Every profile, validated; the first bad file raises NetworkError."""
    return {name: load(path) for name, path in available(folders).items()}


@functools.cache
def get(name: str) -> Network:
    """The profile named `name` (cached: a driver loads each once); NetworkError if there is
    none or it is malformed."""
    found = available()
    if name not in found:
        raise NetworkError(f"network profile '{name}': no {name}.yaml in "
                           f"{', '.join(map(str, dirs()))}; available: {', '.join(found) or 'none'}")
    return load(found[name])
