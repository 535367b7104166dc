"""`rig explain` on what the rig's own replays log (both pins), on a user's report, on logs without
errors, and on input it must refuse."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from replayutil import REPO, replay

from rig import pins
from rig.binaries import agents_venv_python
from rig.explain_table import ROWS

PIN = pins.load()["LIVEKIT_AGENTS_VERSION"]
LEGACY = pins.load()["LIVEKIT_AGENTS_LEGACY_VERSION"]
MIDDLE = pins.load()["LIVEKIT_AGENTS_MIDDLE_VERSION"]
SITE = "lib/python3.11/site-packages"
WHEELS = {PIN: REPO / ".venv" / SITE, LEGACY: agents_venv_python(LEGACY).parent.parent / SITE}


def rig_explain(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rig.cli", "explain", *args], cwd=REPO,
                          input=None if stdin is None else stdin.decode(), capture_output=True,
                          text=True, timeout=60)


def findings(path: Path) -> tuple[int, list[dict[str, Any]]]:
    r = rig_explain(str(path), "--json")
    assert r.stderr == "", r.stderr
    return r.returncode, json.loads(r.stdout)


def counts(found: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for f in found:
        total[f["kind"]] += f["count"]
    return dict(total)


# (pin, scenario, options): the framework's log of each replay is what a user would paste
REPLAYS = [
    (PIN, "seed", ("--runs", "2", "--time-scale", "10")),
    (PIN, "await_own_handle", ("--runs", "2", "--time-scale", "10", "--stuck-timeout", "1")),
    # caller sound during the preamble: the legacy pin's own circular wait (test_agent_legacy.py)
    (LEGACY, "seed", ("--runs", "1", "--barge-in-ms", "150", "--stuck-timeout", "4")),
    # the refused filler left pending: the hand-back never finishes, and the session's close
    # cancels the tool (scheduler_not_running, and the tool's CancelledError)
    (MIDDLE, "seed", ("--runs", "2", "--time-scale", "10", "--stuck-timeout", "2")),
]


@pytest.mark.parametrize(("version", "scenario", "options"), REPLAYS,
                         ids=[f"{v}-{s}" for v, s, _ in REPLAYS])
def test_explains_what_the_replay_counted(tmp_path: Path, version: str, scenario: str,
                                          options: tuple[str, ...]) -> None:
    r = replay(tmp_path, "--agents-version", version, "--scenario", scenario, "--verbose", *options)
    assert r.rc == 0, r.stderr
    assert r.summary["errors"], "the replay counted no error: nothing to explain"
    log = tmp_path / "agent.log"
    log.write_text(r.stderr)
    rc, found = findings(log)
    assert rc == 1
    # all the rig counted, in the runs and after them, but a tool's own exception (the cancelled
    # tool's CancelledError): that is no speech-scheduling error
    counted = Counter(r.summary["errors"]) + Counter(r.summary["errors_outside_runs"])
    del counted["tool_error_other"]
    assert counts(found) == dict(counted)
    other = LEGACY if version == PIN else PIN
    for f in found:
        assert f["row"] is not None and f["row"]["scenario"].startswith(f"agent/scenarios/{scenario}.py")
        if f["version_range"] is not None:
            assert version in SpecifierSet(f["version_range"]), f
        if f["kind"] == "draining":  # the suffix tells the two pins apart
            assert other not in SpecifierSet(f["version_range"]), f
            assert f["origin"] == "user code"  # the scenario's filler calls say()
        if f["kind"] == "circular_wait":
            # the replay's own counterpart: the barge-in makes the framework raise it on the legacy
            # pin; await_own_handle awaits its own handle in the tool
            assert f["origin"] == ("framework" if scenario == "seed" else "user code"), f


# A user's report: dev-mode log lines of livekit-agents 1.3.12 (`python agent.py dev`) around the
# filler's refusal and, 0.7 s later, the circular wait the pause raised from inside the tool.
SITE_PKG = "/usr/local/lib/python3.11/site-packages/livekit/agents/voice"
USER_REPORT = f"""\
2025-11-18 14:02:11,482 - ERROR asyncio - Task exception was never retrieved
future: <Task finished name='Task-212' coro=<FrontDeskAgent.get_programs.<locals>.fillers() done, defined at /app/agent.py:88> exception=RuntimeError('cannot schedule new speech, the speech scheduling is draining/pausing')>
Traceback (most recent call last):
  File "/app/agent.py", line 89, in fillers
    await context.session.say("Hmm, I am looking into the details...")
  File "{SITE_PKG}/agent_session.py", line 893, in say
    handle = activity.say(
             ^^^^^^^^^^^^^
  File "{SITE_PKG}/agent_activity.py", line 814, in say
    self._schedule_speech(handle, SpeechHandle.SPEECH_PRIORITY_NORMAL)
  File "{SITE_PKG}/agent_activity.py", line 992, in _schedule_speech
    raise RuntimeError(
RuntimeError: cannot schedule new speech, the speech scheduling is draining/pausing
2025-11-18 14:02:12,190 - ERROR livekit.agents - exception occurred while executing tool {{"function": "get_programs", "speech_id": "speech_5b1d3c9e0a7f", "pid": 41, "job_id": "AJ_8xQbLd2mWk3e"}}
Traceback (most recent call last):
  File "{SITE_PKG}/generation.py", line 604, in _traceable_fnc_tool
    val = await function_callable()
          ^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/app/agent.py", line 91, in get_programs
    result = await CollectAgeGender(chat_ctx=self.chat_ctx, user_query=user_query)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{SITE_PKG}/agent.py", line 773, in __await_impl
    await session._update_activity(self, previous_activity="pause", blocked_tasks=blocked_tasks)
  File "{SITE_PKG}/agent_session.py", line 1053, in _update_activity
    await self._activity.pause(blocked_tasks=blocked_tasks or [])
  File "{SITE_PKG}/agent_activity.py", line 671, in pause
    await self._close_session()
  File "{SITE_PKG}/agent_activity.py", line 718, in _close_session
    await self._interrupt_paused_speech(old_task=self._interrupt_paused_speech_task)
  File "{SITE_PKG}/agent_activity.py", line 2766, in _interrupt_paused_speech
    await self._paused_speech.interrupt()  # ensure the speech is done
    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{SITE_PKG}/speech_handle.py", line 158, in _await_impl
    await self.wait_for_playout()
  File "{SITE_PKG}/speech_handle.py", line 147, in wait_for_playout
    raise RuntimeError(
RuntimeError: cannot call `SpeechHandle.wait_for_playout()` from inside the function tool `get_programs` that owns this SpeechHandle. This creates a circular wait: the speech handle is waiting for the function tool to complete, while the function tool is simultaneously waiting for the speech handle.
To wait for the assistant’s spoken response prior to running this tool, use `RunContext.wait_for_playout()` instead.
"""  # noqa: E501, RUF001  (the lines as logged)


def test_the_user_report_is_the_legacy_framework_path_with_its_fix(tmp_path: Path) -> None:
    # the report is made of the legacy wheel's own lines: each framework frame is there, in its
    # function, and the two messages are its words
    voice = WHEELS[LEGACY] / "livekit/agents/voice"
    for path, line, func, code in re.findall(
            r'File "[^"]+/voice/(\w+\.py)", line (\d+), in (\w+)\n +(.+)', USER_REPORT):
        source = (voice / path).read_text().splitlines()
        assert source[int(line) - 1].strip() == code.strip(), (path, line)
        depth = len(source[int(line) - 1]) - len(source[int(line) - 1].lstrip())
        enclosing = next(s for s in reversed(source[: int(line)])
                         if re.match(r"\s*(async )?def ", s) and len(s) - len(s.lstrip()) < depth)
        assert re.match(rf"\s*(async )?def {func}\(", enclosing), (path, line, func)
    assert '"cannot schedule new speech, the speech scheduling is draining/pausing"' in \
        (voice / "agent_activity.py").read_text()

    report = tmp_path / "report.txt"
    report.write_text(USER_REPORT)
    rc, found = findings(report)
    assert rc == 1
    assert counts(found) == {"draining": 1, "circular_wait": 1}
    draining, circular = found
    assert draining["origin"] == "user code" and draining["row"]["id"] == "create_task_say"
    assert circular["origin"] == "framework" and circular["row"]["id"] == "seed_barge_in"
    assert [f["function"] for f in circular["frames"] if f["owner"] == "user code"] == ["get_programs"]
    for f in found:
        assert LEGACY in SpecifierSet(f["version_range"]) and PIN not in SpecifierSet(f["version_range"])
        assert f["row"]["scenario"].startswith("agent/scenarios/seed.py")
        assert "on_enter" in f["fix"] and "at least 1.4.3" in f["fix"]
        assert f["doc"].startswith("docs/speech-scheduling.md#")
    assert SpecifierSet(circular["version_range"]) == SpecifierSet(">=1.2.7,<1.4.0")

    text = rig_explain(str(report))
    assert text.returncode == 1 and text.stderr == ""
    assert "2 distinct speech-scheduling errors" in text.stdout
    assert "the wording implies livekit-agents >=1.2.7,<1.4.0" in text.stdout
    assert "Upgrade livekit-agents to at least 1.4.3" in text.stdout

    piped = rig_explain("-", stdin=USER_REPORT.encode())
    assert piped.returncode == 1 and piped.stdout == text.stdout.replace(str(report), "standard input")


def _json_log(tmp_path: Path, records: list[logging.LogRecord]) -> Path:
    """Lines as a production worker writes them: livekit-agents' own JSON formatter."""
    from livekit.agents.cli.log import JsonFormatter

    fmt = JsonFormatter()
    path = tmp_path / "worker.jsonl"
    path.write_text("".join(fmt.format(r) + "\n" for r in records))
    return path


def _record(level: int, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("livekit.agents", level, __file__, 1, msg, None, exc_info)


def test_json_log_lines_and_the_filler_drop_counted_once(tmp_path: Path) -> None:
    voice = WHEELS[PIN] / "livekit/agents/voice"
    refusal = ("cannot schedule new speech, the speech scheduling is draining/pausing, the speech "
               "will be cancelled")
    dropped = "filler stopped on an error, no further filler will play for this tool call"
    not_running = ("attempting to schedule a new SpeechHandle, but the scheduling_task is not "
                   "running, the speech will be cancelled")
    for words, file in ((refusal, "agent_activity.py"), (dropped, "filler_scheduler.py"),
                        (not_running, "agent_activity.py")):
        assert words in (voice / file).read_text(), (words, file)
    try:
        raise RuntimeError(refusal)
    except RuntimeError as e:
        exc = e
    log = _json_log(tmp_path, [
        _record(logging.INFO, "registered worker"),
        _record(logging.ERROR, dropped, exc),  # with_filler's drop carries the refusal: one error
        _record(logging.WARNING, not_running),
    ])
    rc, found = findings(log)
    assert rc == 1
    assert counts(found) == {"filler_dropped": 1, "scheduler_not_running": 1}
    by_kind = {f["kind"]: f for f in found}
    assert by_kind["filler_dropped"]["row"]["id"] == "with_filler"
    assert PIN in SpecifierSet(by_kind["filler_dropped"]["version_range"])
    assert LEGACY not in SpecifierSet(by_kind["filler_dropped"]["version_range"])
    for f in found:
        assert {"kind", "count", "version_range", "origin", "frames", "row", "fix", "doc"} <= set(f)


def test_logs_without_scheduling_errors_exit_0(tmp_path: Path) -> None:
    try:
        raise ValueError("no programs for age 40")
    except ValueError as e:
        exc = e
    log = _json_log(tmp_path, [_record(logging.INFO, "registered worker"),
                               _record(logging.ERROR, "exception occurred while executing tool", exc)])
    plain = tmp_path / "dev.log"
    plain.write_text("2025-11-18 14:02:11,482 - INFO livekit.agents - registered worker\n"
                     "2025-11-18 14:02:12,001 - WARNING livekit.agents - slow TTS {\"ttfb\": 2.1}\n")
    for path in (log, plain):
        r = rig_explain(str(path))
        assert r.returncode == 0 and r.stderr == ""
        assert r.stdout.startswith(f"rig explain: no speech-scheduling errors in {path}")
        assert rig_explain(str(path), "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(("content", "why"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary data"),
    (b"name,age\nbob,7\nalice,9\n", "neither a log nor a traceback"),
    (b"", "empty"),
], ids=["binary", "csv", "empty"])
def test_input_that_is_not_a_log_exits_2_with_one_line(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    for args in ((str(path),), (str(path), "--json")):
        r = rig_explain(*args)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"rig explain: {path}: {why}")


def test_a_missing_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "agent.log"
    r = rig_explain(str(missing))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"rig explain: {missing}: cannot read it (No such file or directory)\n"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return "#" + re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_row_points_at_a_doc_section_and_a_scenario_that_exist() -> None:
    doc = (REPO / "docs/speech-scheduling.md").read_text()
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", doc, re.M)}
    for row_id, row in ROWS.items():
        path, anchor = row.doc.split("#", 1)
        assert (REPO / path).exists() and "#" + anchor in anchors, (row_id, row.doc)
        if row.scenario:
            assert (REPO / row.scenario.split()[0]).exists(), (row_id, row.scenario)
