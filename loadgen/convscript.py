"""Conversation scripts: `loadgen/scripts/*.yaml`, loaded and validated before any call starts.

A malformed script is one error naming the file, the line and the field, for example
`loadgen/scripts/seed.yaml:14: turns[1].barge_in.at_ms: expected a number >= 0, got 'soon'`.
The format is versioned (`version: 1`); loadgen/README.md documents every field.

Plain Python and PyYAML only: the Locust processes (gevent) and the voice drivers (asyncio)
both import this.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

FORMAT_VERSION = 1
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
# Extra directory of user scripts; its files shadow shipped ones of the same name.
EXTRA_DIR_ENV = "LOADGEN_SCRIPTS_DIR"

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ScriptError(ValueError):
    """A script that cannot be used; str() is `file:line: field: what is wrong`."""


@dataclass(frozen=True)
class BargeIn:
    at_ms: float  # start speaking this long after the onset of the agent's reply
    for_ms: float | None = None  # stop after this much speech (None: the whole utterance)


@dataclass(frozen=True)
class Expect:
    agent_turn: bool = False  # the agent reports committing this turn (protocol.TURN event)
    max_latency_ms: float | None = None
    min_reply_ms: float | None = None  # at least this much agent speech in the reply


@dataclass(frozen=True)
class Turn:
    id: str
    say: str
    think_ms: tuple[float, float] | None = None  # None: the script's
    settle_ms: float | None = None
    barge_in: BargeIn | None = None
    expect: Expect = field(default_factory=Expect)


@dataclass(frozen=True)
class Script:
    name: str
    path: str
    turns: tuple[Turn, ...]
    description: str = ""
    greeting: bool = True
    think_ms: tuple[float, float] = (300.0, 900.0)
    settle_ms: float = 2000.0
    dead_air_ms: float = 8000.0
    turn_timeout_ms: float = 30000.0

    @property
    def has_barge_in(self) -> bool:
        return any(t.barge_in for t in self.turns)

    def texts(self) -> list[str]:
        return [t.say for t in self.turns]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Script:
        """Rebuilds a script sent over a pipe (already validated by load())."""
        turns = tuple(
            Turn(
                id=t["id"], say=t["say"],
                think_ms=tuple(t["think_ms"]) if t.get("think_ms") else None,  # type: ignore[arg-type]
                settle_ms=t.get("settle_ms"),
                barge_in=BargeIn(**t["barge_in"]) if t.get("barge_in") else None,
                expect=Expect(**(t.get("expect") or {})),
            )
            for t in d["turns"]
        )
        return cls(
            name=d["name"], path=d["path"], turns=turns, description=d.get("description", ""),
            greeting=d["greeting"], think_ms=tuple(d["think_ms"]),  # type: ignore[arg-type]
            settle_ms=d["settle_ms"], dead_air_ms=d["dead_air_ms"],
            turn_timeout_ms=d["turn_timeout_ms"],
        )


# ---- YAML with line numbers ------------------------------------------------------------------


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Records the 1-based line of every value (and mapping key) under `path`."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else None
            out[(*path, k, "<key>")] = key.start_mark.line + 1
            _lines(value, (*path, k), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


class _Doc:
    def __init__(self, path: Path, display: str) -> None:
        self.display = display
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ScriptError(f"{display}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise ScriptError(f"{display}: not UTF-8 text ({e.reason})") from None
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            raise ScriptError(f"{display}:{line}: not valid YAML: {e.problem or e}") from None
        except yaml.YAMLError as e:
            raise ScriptError(f"{display}: not valid YAML: {e}") from None
        finally:
            loader.dispose()
        self.lines: dict[tuple[Any, ...], int] = {}
        if node is not None:
            _lines(node, (), self.lines)

    def error(self, path: tuple[Any, ...], msg: str, key: bool = False) -> ScriptError:
        line = self.lines.get((*path, "<key>")) if key else None
        p = path
        while line is None and p:
            line = self.lines.get(p)
            p = p[:-1]
        line = line or self.lines.get((), 1)
        where = _field(path)
        return ScriptError(f"{self.display}:{line}: {where + ': ' if where else ''}{msg}")


def _field(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- validation --------------------------------------------------------------------------------

_TOP_KEYS = {"version", "description", "greeting", "think_ms", "settle_ms", "dead_air_ms",
             "turn_timeout_ms", "turns"}
_TURN_KEYS = {"id", "say", "think_ms", "settle_ms", "barge_in", "expect"}
_BARGE_KEYS = {"at_ms", "for_ms"}
_EXPECT_KEYS = {"agent_turn", "max_latency_ms", "min_reply_ms"}


def _mapping(doc: _Doc, value: Any, path: tuple[Any, ...], allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping, got {_show(value)}")
    for key in value:
        if key not in allowed:
            raise doc.error((*path, key), f"unknown field (allowed: {', '.join(sorted(allowed))})",
                            key=True)
    return value


def _number(doc: _Doc, value: Any, path: tuple[Any, ...], *, minimum: float = 0.0,
            exclusive: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > minimum if exclusive else value >= minimum):
        return float(value)
    bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
    raise doc.error(path, f"expected a number {bound}, got {_show(value)}")


def _ms_range(doc: _Doc, value: Any, path: tuple[Any, ...]) -> tuple[float, float]:
    """A fixed time (number) or a uniform range [low, high]."""
    if isinstance(value, list):
        if len(value) != 2:
            raise doc.error(path, f"expected [low, high] or a number, got {_show(value)}")
        lo = _number(doc, value[0], (*path, 0))
        hi = _number(doc, value[1], (*path, 1))
        if hi < lo:
            raise doc.error(path, f"high ({hi:g}) is below low ({lo:g})")
        return lo, hi
    ms = _number(doc, value, path)
    return ms, ms


def _bool(doc: _Doc, value: Any, path: tuple[Any, ...]) -> bool:
    if not isinstance(value, bool):
        raise doc.error(path, f"expected true or false, got {_show(value)}")
    return value


def _text(doc: _Doc, value: Any, path: tuple[Any, ...]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise doc.error(path, f"expected non-empty text, got {_show(value)}")
    return value.strip()


def _turn(doc: _Doc, raw: Any, i: int) -> Turn:
    path: tuple[Any, ...] = ("turns", i)
    t = _mapping(doc, raw, path, _TURN_KEYS)
    for required in ("id", "say"):
        if required not in t:
            raise doc.error(path, f"missing field '{required}'")
    tid = t["id"]
    if not isinstance(tid, str) or not _NAME.match(tid):
        raise doc.error((*path, "id"), f"expected lowercase letters, digits, '_' or '-', got {_show(tid)}")
    barge = None
    if t.get("barge_in") is not None:
        b = _mapping(doc, t["barge_in"], (*path, "barge_in"), _BARGE_KEYS)
        if "at_ms" not in b:
            raise doc.error((*path, "barge_in"), "missing field 'at_ms'")
        barge = BargeIn(
            at_ms=_number(doc, b["at_ms"], (*path, "barge_in", "at_ms")),
            for_ms=_number(doc, b["for_ms"], (*path, "barge_in", "for_ms"), exclusive=True)
            if b.get("for_ms") is not None else None,
        )
    expect = Expect()
    if t.get("expect") is not None:
        e = _mapping(doc, t["expect"], (*path, "expect"), _EXPECT_KEYS)
        expect = Expect(
            agent_turn=_bool(doc, e["agent_turn"], (*path, "expect", "agent_turn"))
            if "agent_turn" in e else False,
            max_latency_ms=_number(doc, e["max_latency_ms"], (*path, "expect", "max_latency_ms"),
                                   exclusive=True) if "max_latency_ms" in e else None,
            min_reply_ms=_number(doc, e["min_reply_ms"], (*path, "expect", "min_reply_ms"),
                                 exclusive=True) if "min_reply_ms" in e else None,
        )
    return Turn(
        id=tid,
        say=_text(doc, t["say"], (*path, "say")),
        think_ms=_ms_range(doc, t["think_ms"], (*path, "think_ms")) if "think_ms" in t else None,
        settle_ms=_number(doc, t["settle_ms"], (*path, "settle_ms"), exclusive=True)
        if "settle_ms" in t else None,
        barge_in=barge,
        expect=expect,
    )


def load(path: Path | str, display: str | None = None) -> Script:
    """Loads and validates one script file; raises ScriptError naming file:line and field."""
    path = Path(path)
    display = display or _display(path)
    name = path.stem
    if not _NAME.match(name):
        raise ScriptError(f"{display}: file name '{name}' must be lowercase letters, digits, '_' or '-'")
    doc = _Doc(path, display)
    top = _mapping(doc, doc.data, (), _TOP_KEYS)
    if "version" not in top:
        raise doc.error((), f"missing field 'version' (this loader reads version {FORMAT_VERSION})")
    if top["version"] != FORMAT_VERSION:
        raise doc.error(("version",), f"unsupported version {_show(top['version'])}; "
                                      f"this loader reads version {FORMAT_VERSION}")
    raw_turns = top.get("turns")
    if not isinstance(raw_turns, list) or not raw_turns:
        raise doc.error(("turns",), f"expected a non-empty list of turns, got {_show(raw_turns)}")
    turns = tuple(_turn(doc, raw, i) for i, raw in enumerate(raw_turns))
    seen: dict[str, int] = {}
    for i, t in enumerate(turns):
        if t.id in seen:
            raise doc.error(("turns", i, "id"), f"duplicate turn id '{t.id}' (also turns[{seen[t.id]}])")
        seen[t.id] = i
    greeting = _bool(doc, top["greeting"], ("greeting",)) if "greeting" in top else True
    if turns[0].barge_in and not greeting:
        raise doc.error(("turns", 0, "barge_in"),
                        "the first turn can only barge in on the greeting; set greeting: true")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise doc.error(("description",), f"expected text, got {_show(description)}")
    kw: dict[str, Any] = {}
    if "think_ms" in top:
        kw["think_ms"] = _ms_range(doc, top["think_ms"], ("think_ms",))
    for key in ("settle_ms", "dead_air_ms", "turn_timeout_ms"):
        if key in top:
            kw[key] = _number(doc, top[key], (key,), exclusive=True)
    return Script(name=name, path=str(path), turns=turns, description=description.strip(),
                  greeting=greeting, **kw)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def script_dirs() -> list[Path]:
    dirs = [SCRIPTS_DIR]
    extra = os.environ.get(EXTRA_DIR_ENV)
    if extra:
        dirs.append(Path(extra))
    return dirs


def available(dirs: list[Path] | None = None) -> dict[str, Path]:
    """Script name -> file, later directories shadowing earlier ones."""
    found: dict[str, Path] = {}
    for d in dirs if dirs is not None else script_dirs():
        if not d.is_dir():
            raise ScriptError(f"{d}: scripts directory does not exist (from ${EXTRA_DIR_ENV}?)")
        for f in sorted(d.glob("*.yaml")):
            found[f.stem] = f
    return found


def load_all(dirs: list[Path] | None = None) -> dict[str, Script]:
    """Every script, validated; the first bad file raises ScriptError."""
    return {name: load(path) for name, path in available(dirs).items()}
