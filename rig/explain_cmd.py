"""`rig explain FILE|-`: the speech-scheduling errors in an agent log or a pasted traceback, each with
its kind, the livekit-agents versions its wording implies, whether the framework or the user's code
took the path, the agent pattern behind it and the fix (the analysis: rig/explain.py)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from rig import explain
from rig.console import EXIT_USAGE, err, out

EXIT_NONE = 0
EXIT_FOUND = 1  # like grep: a finding is what a script wants to know about
_CODE_WIDTH = 70
_WIDTH = 100
_PAD = " " * 13


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="explain the speech-scheduling errors in an agent log or a traceback, with the fix",
        description="Read livekit-agents logs (JSON lines or plain text) or a pasted traceback and "
        "print each distinct speech-scheduling error: its kind, the livekit-agents versions its "
        "wording implies, the frames that tell the framework's path from your code, the agent "
        "pattern behind it (with the scenario file that reproduces it) and the fix. Exit 0: none "
        "found; 1: found some; 2: the input could not be read.",
    )
    p.add_argument("file", metavar="FILE|-", help="the log or traceback; - reads standard input")
    p.add_argument("--json", action="store_true",
                   help="print the findings as a JSON list (kind, count, version_range, origin, "
                        "frames, row, fix, doc)")
    p.set_defaults(func=main)


def _read(name: str) -> bytes:
    if name == "-":
        if sys.stdin.isatty():
            err("rig explain: reading standard input: paste the log or traceback, then Ctrl-D")
        return sys.stdin.buffer.read()
    with open(name, "rb") as f:
        return f.read()


def _indent(text: str) -> list[str]:
    return [_PAD + line if line else "" for line in text.splitlines()]


def _frame_line(f: explain.Frame) -> str:
    code = f.code if len(f.code) <= _CODE_WIDTH else f.code[: _CODE_WIDTH - 3] + "..."
    return f"{f.owner:<10} {f.where} in {f.func}" + (f": {code}" if code else "")


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=f"    {label:<8} ", subsequent_indent=_PAD)


def render(analysis: explain.Analysis, name: str) -> list[str]:
    if not analysis.findings:
        return [f"rig explain: no speech-scheduling errors in {name} ({analysis.lines} lines read)"]
    n = len(analysis.findings)
    head = (f"rig explain: {n} distinct speech-scheduling error{'s' if n > 1 else ''} in {name} "
            f"({analysis.total} in all)")
    if analysis.mixed_versions:
        head += "; their wording comes from more than one livekit-agents version"
    elif analysis.versions and explain.spec(analysis.versions):
        head += f"; the wording implies livekit-agents {explain.spec(analysis.versions)}"
    lines = [head]
    fixes: dict[str, int] = {}  # a fix printed once, then referred to
    for i, f in enumerate(analysis.findings, 1):
        lines += ["", f"[{i}] {f.kind} x{f.count}: {textwrap.shorten(f.message, 160, placeholder=' ...')}"]
        versions = explain.spec(f.version_range)
        lines += _wrapped("version", f"livekit-agents {versions}: {f.version_reason}" if versions
                          else f"any livekit-agents: {f.version_reason}")
        lines += _wrapped("origin", f"{f.origin}: {f.origin_detail}")
        if f.frames:
            lines += ["    frames   " + _frame_line(f.frames[0]),
                      *(_PAD + _frame_line(fr) for fr in f.frames[1:])]
        row = f.row
        if row is None:
            lines.append("    pattern  none of the decision table's (docs/speech-scheduling.md)")
            continue
        lines += _wrapped("pattern", row.pattern)
        lines += textwrap.wrap(f"-> {row.result}", _WIDTH, initial_indent=_PAD,
                               subsequent_indent=_PAD + "   ")
        if row.scenario:
            lines.append(f"{_PAD}reproduced by {row.scenario}")
        if f.evidence == "message only":
            lines.append(f"{_PAD}(from the message alone: its usual pattern; a traceback would tell)")
        elif f.evidence != "traceback":
            lines.append(f"{_PAD}(matched on {f.evidence})")
        fix = row.fix_text(f.upgrade) or ""
        if fix in fixes:
            lines.append(f"    fix      as in [{fixes[fix]}]")
        else:
            fixes[fix] = i
            lines += ["    fix", *_indent(fix)]
        lines.append(f"    doc      {row.doc}")
    return lines


def main(args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    try:
        analysis = explain.analyse(explain.decode(_read(args.file)))
    except OSError as e:
        err(f"rig explain: {name}: cannot read it ({e.strerror or e})")
        return EXIT_USAGE
    except explain.ExplainError as e:
        err(f"rig explain: {name}: {e}")
        return EXIT_USAGE
    if args.json:
        out(json.dumps([f.to_json() for f in analysis.findings], indent=2))
    else:
        for line in render(analysis, name):
            out(line)
    return EXIT_FOUND if analysis.findings else EXIT_NONE
