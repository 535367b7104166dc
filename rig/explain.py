"""From an agent log or a pasted traceback to what went wrong: each distinct speech-scheduling error
with its kind (the instrumentation's taxonomy), the livekit-agents versions its wording implies, who
took the path (the framework or the user's code), the agent pattern behind it and its fix.
`rig explain` (rig/explain_cmd.py) prints what `analyse` returns; nothing here prints.

Input: livekit-agents' JSON log lines (production `start`), plain-text logs (dev mode, ANSI colours
and all, or Python's default format), a bare traceback, or any mix of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from lkrig_instrument.taxonomy import CANCELLED_SUFFIX, kind_of_record

from rig.explain_table import (
    CIRCULAR_FRAMEWORK,
    CIRCULAR_GUARD,
    FILLER_STOPPED_MESSAGE,
    PAUSE_PATH,
    ROWS,
    SHORT_MESSAGE,
    SUFFIXED_MESSAGE,
    UPGRADE_BELOW,
    Range,
    Row,
    intersect,
    spec,
    version_key,
)

_HEADER = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)')
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_CARETS = re.compile(r"^\s*[\^~]+\s*$")
_PREAMBLE_LINES = 3  # a record that carries a traceback: its message lines before it (asyncio: 2)


class ExplainError(ValueError):
    """The input is neither a log nor a traceback; the message says why, without the file name."""


@dataclass(frozen=True)
class Frame:
    path: str
    line: int
    func: str
    code: str = ""

    @property
    def owner(self) -> str:
        p = self.path.replace("\\", "/")
        if "/livekit/agents/" in p:
            return "framework"
        if "-packages/" in p or re.search(r"/lib/python3\.\d+/", p) or p.startswith("<"):
            return "library"
        return "user code"

    @property
    def where(self) -> str:
        p = self.path.replace("\\", "/")
        short = p[p.index("livekit/agents/"):] if self.owner == "framework" else p
        return f"{short}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.path, "line": self.line, "function": self.func, "code": self.code,
                "owner": self.owner}


@dataclass
class Record:
    """One error-carrying unit of the input: a log record's message, and its traceback if any."""
    message: str
    error: str = ""  # the exception line that ends the traceback: "RuntimeError: ..."
    frames: tuple[Frame, ...] = ()


@dataclass
class Finding:
    kind: str
    message: str
    version_range: Range | None
    version_reason: str
    origin: str  # "framework" | "user code" | "unknown"
    origin_detail: str
    frames: tuple[Frame, ...]
    row_id: str | None
    evidence: str  # "traceback" or "message only": what the row was matched on
    count: int = 1
    upgrade: bool = False  # the versions are older than UPGRADE_BELOW

    @property
    def row(self) -> Row | None:
        return ROWS.get(self.row_id) if self.row_id else None

    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.version_range, self.origin, self.row_id,
                tuple((f.owner, f.where.rsplit(":", 1)[0], f.func) for f in self.frames))

    def to_json(self) -> dict[str, Any]:
        row = self.row
        return {
            "kind": self.kind, "count": self.count, "message": self.message,
            "version_range": spec(self.version_range), "version_reason": self.version_reason,
            "origin": self.origin, "origin_detail": self.origin_detail,
            "frames": [f.to_json() for f in self.frames],
            "row": None if row is None else {"id": self.row_id, "pattern": row.pattern,
                                             "result": row.result, "scenario": row.scenario,
                                             "evidence": self.evidence},
            "fix": None if row is None else row.fix_text(self.upgrade),
            "doc": None if row is None else row.doc,
        }


@dataclass
class Analysis:
    findings: list[Finding]
    lines: int
    versions: Range | None = None  # what all the findings allow together
    mixed_versions: bool = False  # the findings' ranges do not overlap

    @property
    def total(self) -> int:
        return sum(f.count for f in self.findings)


def decode(data: bytes) -> str:
    if b"\x00" in data:
        raise ExplainError("binary data (NUL bytes), not a log or a traceback")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") > len(text) // 100:  # a few bad bytes in a log are fine
            raise ExplainError(f"not UTF-8 text (invalid byte at offset {e.start})") from None
        return text


def _lines(text: str) -> tuple[list[str], int]:
    """The input as plain-text lines, JSON log records written out as text (a blank line ends
    each, so that a record's lines stay its own); and how many lines looked like a log."""
    out: list[str] = []
    loglike = 0
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).replace("\r", "")
        record = _json_record(line)
        if record is not None:
            loglike += 1
            out += [*record, ""]
            continue
        if _LEVEL.search(line) or _HEADER in line or kind_of_record(line):
            loglike += 1
        out.append(line)
    return out, loglike


def _json_record(line: str) -> list[str] | None:
    if not line.lstrip().startswith("{"):
        return None
    try:
        d = json.loads(line)
    except ValueError:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("message", d.get("msg")), str):
        return None
    head = f"{d.get('level', '')} {d.get('name', '')} {d.get('message', d.get('msg'))}".strip()
    exc = d.get("exc_info")
    return [*head.splitlines(), *(exc.splitlines() if isinstance(exc, str) else [])]


def _traceback(lines: list[str], i: int) -> tuple[str, tuple[Frame, ...], int]:
    """The traceback that starts at lines[i] (chained ones included): the exception line that
    names a scheduling error (else the last one), its frames, and the index after it."""
    chain: list[tuple[str, tuple[Frame, ...]]] = []
    while True:
        frames: list[Frame] = []
        i += 1
        while i < len(lines) and (not lines[i] or lines[i][0].isspace()):
            m = _FRAME.match(lines[i])
            if m:
                frames.append(Frame(m["path"], int(m["line"]), m["func"]))
            elif frames and not frames[-1].code and lines[i].strip() and not _CARETS.match(lines[i]):
                frames[-1] = Frame(frames[-1].path, frames[-1].line, frames[-1].func, lines[i].strip())
            i += 1
        error = lines[i].strip() if i < len(lines) else ""
        chain.append((error, tuple(frames)))
        i += 1
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].startswith(_CHAINED):
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].strip() == _HEADER:
                i = k
                continue
        return (*next((c for c in chain if kind_of_record("", c[0])), chain[-1]), i)


def records(lines: list[str]) -> list[Record]:
    out: list[Record] = []
    preamble: list[str] = []  # lines since the last blank line or traceback
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == _HEADER:
            error, frames, i = _traceback(lines, i)
            kind = kind_of_record("\n".join(preamble), error)
            # a line of its own kind (another error logged just before) is not this record's
            own = [p for p in preamble if kind_of_record(p) not in (None, kind)]
            out += [Record(p) for p in own]
            out.append(Record("\n".join(p for p in preamble if p not in own), error, frames))
            preamble = []
            continue
        if not line.strip():
            out += [Record(p) for p in preamble]
            preamble = []
        else:
            preamble.append(line)
            if len(preamble) > _PREAMBLE_LINES:
                out.append(Record(preamble.pop(0)))
        i += 1
    out += [Record(p) for p in preamble]
    return out


def _origin(kind: str, frames: tuple[Frame, ...]) -> tuple[str, str]:
    """Who called into livekit-agents where the error was raised: for a circular wait, the frame
    that awaited the SpeechHandle; otherwise the frame that called the framework (say(), ...)."""
    def raising(f: Frame) -> bool:
        return f.owner == "framework" and (kind != "circular_wait" or f.path.endswith("speech_handle.py"))

    i = len(frames)
    while i > 0 and raising(frames[i - 1]):
        i -= 1
    if not frames or i == len(frames):
        return "unknown", "no livekit-agents frame at the raise site" if frames else "no traceback"
    callee = frames[i]
    if i == 0:
        return "framework", f"raised inside livekit-agents ({callee.func}() in {callee.where})"
    caller = frames[i - 1]
    origin = caller.owner if caller.owner in ("framework", "user code") else "unknown"
    detail = f"{caller.func}() at {caller.where} calls {callee.func}() in {callee.where}"
    path = [f.func for f in frames if f.func in PAUSE_PATH]
    if path:
        detail += f"; the framework's pause path: {' -> '.join(path)}"
    return origin, detail


def _pause_path(kind: str, origin: str, frames: tuple[Frame, ...]) -> bool:
    """A circular wait the framework raised on its way to pausing for an AgentTask (< 1.4.0)."""
    return kind == "circular_wait" and origin == "framework" and bool(PAUSE_PATH & {f.func for f in frames})


def _version(kind: str, text: str, framework_path: bool) -> tuple[Range | None, str]:
    if kind in ("draining", "scheduler_not_running"):
        suffix = repr(CANCELLED_SUFFIX.lstrip(", "))
        if CANCELLED_SUFFIX in text:
            return SUFFIXED_MESSAGE, f"the message ends with {suffix} (added in 1.4.3)"
        return SHORT_MESSAGE, f"the message lacks {suffix} (added in 1.4.3)"
    if kind == "circular_wait":
        if framework_path:
            return CIRCULAR_FRAMEWORK, "raised through _close_session -> _interrupt_paused_speech, " \
                                       "which 1.4.0 removed"
        return CIRCULAR_GUARD, "the circular-wait guard exists from 1.2.2 on"
    if kind == "filler_dropped":
        return FILLER_STOPPED_MESSAGE, ("RunContext.with_filler exists from 1.6.0 on, and logs "
                                        "'filler stopped on an error' only after 1.7.0")
    return None, "the same wording in every version this rig checked (1.3.12, 1.8.9)"


def _row(kind: str, origin: str, rec: Record, framework_circular: bool,
         wedged: bool) -> tuple[str | None, str]:
    evidence = "traceback" if rec.frames else "message only"
    if kind == "circular_wait":
        if origin == "user code":
            return "await_own_handle", evidence
        return ("seed_barge_in" if _pause_path(kind, origin, rec.frames) else None), evidence
    if kind == "filler_dropped":
        return "with_filler", evidence
    if kind in ("scheduler_not_running", "task_unfinished"):
        # the wedged handoff that follows the framework's circular wait (docs, section 4), or the
        # close of a session whose refused filler was left pending (< 1.4.3, docs section 6)
        row = "seed_barge_in" if framework_circular else "create_task_say" if wedged else None
        return row, "the other errors of this input"
    if kind in ("draining", "closing") and origin != "framework":
        # the say() ran in a task of its own (the traceback starts in the user's frame, or asyncio
        # reports the task's exception): the fire-and-forget filler
        own_task = bool(rec.frames) and rec.frames[0].owner == "user code"
        if origin == "unknown" or own_task or "Task exception was never retrieved" in rec.message:
            return ("create_task_say" if kind == "draining" or rec.frames else None), evidence
        return "say_in_window", evidence
    return None, evidence


def _message(rec: Record, kind: str) -> str:
    """The text that names the error: the exception line, or the log line (with_filler's)."""
    if rec.error and kind_of_record("", rec.error) == kind:
        return rec.error.strip()
    return next((ln.strip() for ln in rec.message.splitlines() if kind_of_record(ln) == kind),
                rec.error.strip())


def analyse(text: str) -> Analysis:
    lines, loglike = _lines(text)
    if not text.strip():
        raise ExplainError("empty: nothing to explain")
    if not loglike:
        raise ExplainError(f"neither a log nor a traceback (no log level, JSON log record or "
                           f"traceback in its {len(lines)} lines)")
    recs = [(r, k) for r in records(lines) if (k := kind_of_record(r.message, r.error))]
    origins = [_origin(k, r.frames) for r, k in recs]
    framework_circular = any(_pause_path(k, o, r.frames)
                             for (r, k), (o, _) in zip(recs, origins, strict=True))
    # a fire-and-forget filler refused before 1.4.3: its speech is left pending, the hand-back
    # never finishes, and closing the session logs the scheduler that is no longer running
    wedged = any(k == "draining" and o != "framework" and CANCELLED_SUFFIX not in (r.error or r.message)
                 and _row(k, o, r, False, False)[0] == "create_task_say"
                 for (r, k), (o, _) in zip(recs, origins, strict=True))
    found: dict[tuple[Any, ...], Finding] = {}
    for (rec, kind), (origin, detail) in zip(recs, origins, strict=True):
        row_id, evidence = _row(kind, origin, rec, framework_circular, wedged)
        versions, reason = _version(kind, rec.error or rec.message,
                                    _pause_path(kind, origin, rec.frames))
        message = _message(rec, kind)
        f = Finding(kind, message, versions, reason, origin, detail, rec.frames, row_id, evidence)
        if f.key() in found:
            found[f.key()].count += 1
        else:
            found[f.key()] = f
    findings = list(found.values())
    ranges = [f.version_range for f in findings if f.version_range]
    together = intersect(ranges) if ranges else None
    old = [r for r in ([together] if together else ranges) if r and r[1]
           and version_key(r[1]) <= version_key(UPGRADE_BELOW)]
    for f in findings:
        f.upgrade = bool(old)
    return Analysis(findings, len(lines), together, bool(ranges) and together is None)
