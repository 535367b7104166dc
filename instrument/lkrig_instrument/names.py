"""Every metric the rig exports, defined once.

The agent worker, the bring-your-own instrumentation, the load generator, the Prometheus rules,
the Grafana dashboards and the tests all take their names from here (tests check that rules and
dashboards use no other names). Naming follows prometheus/client_python: base units, `_total`
for counters, `_seconds` for durations, few labels with bounded values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]

# The closed sets of label values. Each metric below names the sets its labels take (`values`).
ERROR_KINDS = (
    "draining",  # cannot schedule new speech, the speech scheduling is draining/pausing
    "closing",  # AgentSession is closing, cannot use say()
    "circular_wait",  # SpeechHandle.wait_for_playout() from inside the tool that owns it
    "scheduler_not_running",  # a SpeechHandle scheduled after the scheduling task exited
    "task_unfinished",  # the asyncio.Task finished before the AgentTask was completed
    "filler_dropped",  # RunContext.with_filler: "filler stopped on an error"
    "tool_error_other",  # any other exception raised by a function tool
)
SPEECH_SOURCES = ("say", "generate_reply", "auto_reply")  # auto: user-turn and tool replies
SPEECH_OUTCOMES = ("played", "interrupted", "rejected")
SESSION_OUTCOMES = ("completed", "stuck", "caller_left", "error")
INJECTED_COMPONENTS = ("stt_final", "llm_ttft", "llm_token", "tts_first_byte", "tool")
CONVERSATION_OUTCOMES = (
    "completed",
    "no_agent",
    "dead_air",
    "agent_cut_off",
    "agent_error",
    "connect_failed",
    "agent_lost",
    "hung_up",  # the rig stopped the caller mid-call (end of a run, Locust stop): no verdict
    "loadgen_error",  # the load generator failed the call (voice driver died or went silent)
)
TURN_OUTCOMES = ("ok", "dead_air", "agent_cut_off", "agent_error", "no_agent", "agent_lost")
PROCESS_ROLES = ("worker", "job")  # the livekit-agents worker process; its job processes
TASK_PHASES = ("running", "end")  # sampled while a session runs; once when it closes
TURN_STAGES = ("e2e", "llm_ttft", "tts_ttfb", "end_of_turn", "transcription")

AGENT_LABELS = ("scenario", "profile", "agents_version")
CALLER_LABELS = ("scenario", "profile", "network")
# Labels whose values no tuple here lists, and what keeps each bounded (one series per value).
OPEN_LABELS: dict[str, str] = {
    "scenario": "a file name in `agent/scenarios/` (or `byo`, or a user's own `LKRIG_SCENARIO`)",
    "profile": "a file name in `agent/profiles/` (or `none`)",
    "network": "a file name in `loadgen/networks/` (the callers' network impairment; `perfect`: none)",
    "agents_version": "the livekit-agents version running",
    "target": "the agent worker a fault hit (its name), `all-agents` or `livekit`",
}

# Seconds. Turn latencies of a voice agent sit between ~100 ms and a few seconds.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0)
# Counts of asyncio tasks on a session's event loop: a few dozen when healthy, growing if leaked.
TASK_COUNT_BUCKETS = (10.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)


@dataclass(frozen=True)
class Metric:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    side: Literal["agent", "caller", "run"] = "agent"
    buckets: tuple[float, ...] = LATENCY_BUCKETS  # histograms only
    # Every value of each closed label (each label not in OPEN_LABELS): the exporters serve a
    # series at 0 for each before the first event, and docs/metrics.md lists them.
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for label in self.labels:
            if label in OPEN_LABELS and label in self.values:
                raise ValueError(f"{self.name}: label {label!r} is open (names.OPEN_LABELS) but "
                                 "has values")
            if label not in OPEN_LABELS and not self.values.get(label):
                raise ValueError(f"{self.name}: label {label!r} has no values; list them in "
                                 f"values={{{label!r}: (...)}} or add it to names.OPEN_LABELS")
            given = tuple(self.values.get(label, ()))
            if len(set(given)) != len(given):
                raise ValueError(f"{self.name}: label {label!r} lists a value twice: {given}")
        extra = sorted(set(self.values) - set(self.labels))
        if extra:
            raise ValueError(f"{self.name}: values given for {extra[0]!r}, not one of its labels")
        # read-only and in label order: every exporter and the docs iterate it
        ordered = {k: tuple(self.values[k]) for k in self.labels if k in self.values}
        object.__setattr__(self, "values", MappingProxyType(ordered))

    @property
    def samples(self) -> tuple[str, ...]:
        """Names of the series Prometheus stores for this metric."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


def label_sets(metric: Metric, open_values: Mapping[str, str]) -> list[dict[str, str]]:
    """Every label set of `metric`: its open labels as `open_values` gives them (it may hold
    others), each closed label taking every one of its values. These are the series an exporter
    serves at 0 from the start, so that rates and `sum by (outcome)` show each value before it
    first happens."""
    missing = [k for k in metric.labels if k not in metric.values and k not in open_values]
    if missing:
        raise ValueError(f"{metric.name}: no value given for its open label {missing[0]!r}")
    sets = [{k: open_values[k] for k in metric.labels if k not in metric.values}]
    for label, values in metric.values.items():
        sets = [{**s, label: v} for s in sets for v in values]
    return sets


SPEECH_SCHEDULING_ERRORS = Metric(
    "lkrig_speech_scheduling_errors_total", "counter",
    "Speech-scheduling errors hit by the agent, by kind (each error counted once).",
    ("kind", *AGENT_LABELS), values={"kind": ERROR_KINDS})
SPEECHES_CREATED = Metric(
    "lkrig_agent_speeches_created_total", "counter",
    "SpeechHandles created, by source.", ("source", *AGENT_LABELS),
    values={"source": SPEECH_SOURCES})
SPEECHES_DONE = Metric(
    "lkrig_agent_speeches_done_total", "counter",
    "SpeechHandles finished: played to the end, interrupted, or rejected by the scheduler.",
    ("source", "outcome", *AGENT_LABELS),
    values={"source": SPEECH_SOURCES, "outcome": SPEECH_OUTCOMES})
HANDOFFS = Metric(
    "lkrig_agent_handoffs_total", "counter",
    "Agent handoffs (AgentTask entered or left, update_agent).", AGENT_LABELS)
TURNS = Metric(
    "lkrig_agent_turns_total", "counter",
    "User turns the agent committed (final transcript handed to the LLM).", AGENT_LABELS)
SESSIONS_ACTIVE = Metric(
    "lkrig_agent_sessions_active", "gauge", "AgentSessions running now.", AGENT_LABELS)
SESSIONS_ENDED = Metric(
    "lkrig_agent_sessions_ended_total", "counter",
    "AgentSessions ended, by outcome.", ("outcome", *AGENT_LABELS),
    values={"outcome": SESSION_OUTCOMES})
SESSION_EVENTS_UNSENT = Metric(
    "lkrig_agent_session_events_unsent_total", "counter",
    "Session events livekit-agents failed to write to the room for a remote session"
    " (\"failed to send session event\"; the rig's agent hosts none).", AGENT_LABELS)
STUCK_SESSIONS = Metric(
    "lkrig_agent_stuck_sessions_total", "counter",
    "Sessions in which an AgentTask did not hand back, or a speech did not finish, within the "
    "stuck timeout (counted once per session).", AGENT_LABELS)
TURN_SECONDS = Metric(
    "lkrig_agent_turn_seconds", "histogram",
    "Agent-side turn timings from ChatMessage.metrics, by stage.", ("stage", *AGENT_LABELS),
    values={"stage": TURN_STAGES})
INJECTED_LATENCY = Metric(
    "lkrig_agent_injected_latency_seconds", "histogram",
    "Latency the scripted providers actually injected, by component.",
    ("component", *AGENT_LABELS), values={"component": INJECTED_COMPONENTS})

# Soak signals (instrument/lkrig_instrument/process_sampler.py). The gauges are "livesum" in
# prometheus_client's multiprocess mode: one value per role, the sum over that role's processes
# alive now; the worker removes a dead job process's file (mark_process_dead) within a sample.
PROCESS_RESIDENT_MEMORY = Metric(
    "lkrig_process_resident_memory_bytes", "gauge",
    "Resident memory of the agent's live processes, summed by role (worker: the worker process; "
    "job: its job processes), sampled every 5 s.", ("role",), values={"role": PROCESS_ROLES})
PROCESS_OPEN_FDS = Metric(
    "lkrig_process_open_fds", "gauge",
    "Open file descriptors of the agent's live processes, summed by role, sampled every 5 s.",
    ("role",), values={"role": PROCESS_ROLES})
PROCESSES = Metric(
    "lkrig_processes", "gauge",
    "Agent processes alive and sampled, by role (divides the sums above into per-process means).",
    ("role",), values={"role": PROCESS_ROLES})
SESSION_ASYNCIO_TASKS = Metric(
    "lkrig_session_asyncio_tasks", "histogram",
    "asyncio tasks on a session's event loop (its job process), sampled every 5 s while the "
    "session runs (phase running) and once when it closes (phase end).",
    ("phase", *AGENT_LABELS), buckets=TASK_COUNT_BUCKETS, values={"phase": TASK_PHASES})
SPEECH_HANDLES_UNFINISHED = Metric(
    "lkrig_speech_handles_unfinished_total", "counter",
    "SpeechHandles of a session not done when the session closed.", AGENT_LABELS)

CALLER_TURN_LATENCY = Metric(
    "lkrig_caller_turn_latency_seconds", "histogram",
    "Caller-measured end of utterance to first agent audio (less the delay the network profile "
    "added on the way to the agent and back).", CALLER_LABELS, "caller")
CALLER_SILENCE_GAP = Metric(
    "lkrig_caller_silence_gap_seconds", "histogram",
    "Caller-measured silence between two agent utterances in one turn (filler end to answer).",
    CALLER_LABELS, "caller")
CALLER_DISPATCH_TO_JOIN = Metric(
    "lkrig_caller_dispatch_to_join_seconds", "histogram",
    "Agent dispatch request to the agent joining the caller's room.", CALLER_LABELS, "caller")
CALLER_TURNS = Metric(
    "lkrig_caller_turns_total", "counter", "Caller turns, by outcome.", ("outcome", *CALLER_LABELS),
    "caller", values={"outcome": TURN_OUTCOMES})
CALLER_DEAD_AIR = Metric(
    "lkrig_caller_dead_air_total", "counter",
    "Turns in which no agent audio arrived within the dead-air timeout.", CALLER_LABELS, "caller")
CALLER_CONVERSATIONS = Metric(
    "lkrig_caller_conversations_total", "counter", "Conversations, by outcome.",
    ("outcome", *CALLER_LABELS), "caller", values={"outcome": CONVERSATION_OUTCOMES})
CALLER_ROOMS_WITHOUT_AGENT = Metric(
    "lkrig_caller_rooms_without_agent_total", "counter",
    "Rooms the agent never joined within the join timeout.", CALLER_LABELS, "caller")
CALLERS_ACTIVE = Metric(
    "lkrig_callers_active", "gauge", "Callers in a room now.", CALLER_LABELS, "caller")

# The run itself, served beside the caller metrics by the Locust master (loadgen/runstate.py):
# the dashboard's annotations and its Locust panels. `rig run` posts each fault's start and end;
# Locust's own test_start/test_stop give the run's. Timestamps are gauges holding the Unix time of
# the last event of their label set, so an annotation query places each event exactly
# (useValueForTime), whatever the scrape interval, and a second event of the same kind shows as a
# new value.
FAULT_KINDS = ("kill-agent", "drain-agent", "restart-livekit", "kill-livekit-node", "slow-provider",
               "partition-agent")
EVENT_PHASES = ("start", "end")
RUN_PHASES = ("start", "stop")
FAULT_TIMESTAMP = Metric(
    "lkrig_fault_timestamp_seconds", "gauge",
    "Unix time a fault of `rig run --fault` last started or ended, by kind and target (the agent "
    "worker's name, or livekit).", ("fault", "target", "phase"), "run",
    values={"fault": FAULT_KINDS, "phase": EVENT_PHASES})
FAULTS = Metric(
    "lkrig_faults_total", "counter", "Faults `rig run` applied, by kind.", ("fault",), "run",
    values={"fault": FAULT_KINDS})
RUN_TIMESTAMP = Metric(
    "lkrig_run_timestamp_seconds", "gauge",
    "Unix time the load last started or stopped (Locust's test_start and test_stop).",
    ("phase",), "run", values={"phase": RUN_PHASES})
LOCUST_USERS = Metric(
    "lkrig_locust_users", "gauge", "Locust users (callers) running now, over all Locust workers.",
    (), "run")
LOCUST_WORKERS = Metric(
    "lkrig_locust_workers", "gauge",
    "Locust workers connected to the master (1 for a standalone Locust).", (), "run")
LOCUST_FAIL_RATIO = Metric(
    "lkrig_locust_fail_ratio", "gauge",
    "Locust's failure ratio of the current run: failed calls and turns over all requests "
    "(0 to 1; the same figure as the web UI's).", (), "run")

ALL: tuple[Metric, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Metric))
AGENT_METRICS = tuple(m for m in ALL if m.side == "agent")
CALLER_METRICS = tuple(m for m in ALL if m.side == "caller")
RUN_METRICS = tuple(m for m in ALL if m.side == "run")

# Series the dashboards, rules and faults read from other exporters (livekit-server's and the
# livekit-agents worker's own /metrics); listed so the "no unknown names" checks cover them.
LIVEKIT_ROOMS = "livekit_room_total"  # a gauge despite its name: rooms on the node now
LIVEKIT_PARTICIPANTS = "livekit_participant_total"  # also a gauge
EXTERNAL = (
    LIVEKIT_ROOMS,
    LIVEKIT_PARTICIPANTS,
    "livekit_packet_loss_total",
    "livekit_packet_total",
    "livekit_jitter_us_bucket",
    "lk_agents_active_job_count",
    "lk_agents_worker_load",
    "lk_agents_proc_initialize_duration_seconds_bucket",
    "up",
    "ALERTS",
)

# Names before 0.2 (every series the rig defines now starts with `lkrig_`, so that none collides
# with another exporter's `agent_*` in a shared Prometheus). Listed in docs/metrics.md.
RENAMED: dict[str, str] = {
    "speech_scheduling_errors_total": "lkrig_speech_scheduling_errors_total",
    "agent_speeches_created_total": "lkrig_agent_speeches_created_total",
    "agent_speeches_done_total": "lkrig_agent_speeches_done_total",
    "agent_handoffs_total": "lkrig_agent_handoffs_total",
    "agent_turns_total": "lkrig_agent_turns_total",
    "agent_sessions_active": "lkrig_agent_sessions_active",
    "agent_sessions_ended_total": "lkrig_agent_sessions_ended_total",
    "agent_stuck_sessions_total": "lkrig_agent_stuck_sessions_total",
    "agent_turn_seconds": "lkrig_agent_turn_seconds",
    "agent_injected_latency_seconds": "lkrig_agent_injected_latency_seconds",
    "caller_turn_latency_seconds": "lkrig_caller_turn_latency_seconds",
    "caller_silence_gap_seconds": "lkrig_caller_silence_gap_seconds",
    "caller_dispatch_to_join_seconds": "lkrig_caller_dispatch_to_join_seconds",
    "caller_turns_total": "lkrig_caller_turns_total",
    "caller_dead_air_total": "lkrig_caller_dead_air_total",
    "caller_conversations_total": "lkrig_caller_conversations_total",
    "caller_rooms_without_agent_total": "lkrig_caller_rooms_without_agent_total",
    "callers_active": "lkrig_callers_active",
}


def markdown() -> str:
    """docs/metrics.md, generated from the definitions above (`python -m lkrig_instrument`)."""
    closed: dict[tuple[str, tuple[str, ...]], list[str]] = {}  # (label, values) -> metrics
    for m in ALL:
        for label, values in m.values.items():
            closed.setdefault((label, values), []).append(f"`{m.name}`")
    closed_rows = [f"| `{label}` | {', '.join(values)} | {', '.join(metrics)} |"
                   for (label, values), metrics in closed.items()]
    lines = [
        "# Metrics",
        "",
        "Generated from `instrument/lkrig_instrument/names.py` by "
        "`python -m lkrig_instrument > docs/metrics.md`; a test keeps the two equal.",
        "",
        "| name | type | labels | side | meaning |",
        "|---|---|---|---|---|",
    ]
    for m in ALL:
        lines.append(f"| `{m.name}` | {m.type} | {', '.join(m.labels) or '-'} | {m.side} | {m.help} |")
    lines += [
        "",
        "## Label values",
        "",
        "A closed label takes only the values below (each metric's `values` in names.py). Every "
        "series of the agent's counters and of the caller metrics is exported at 0 for each value "
        "from the start of a session or run, so that rates and `sum by (...)` show each value "
        "before it first happens.",
        "",
        "| label | values | metrics |",
        "|---|---|---|",
        *closed_rows,
        "",
        "Open labels take values that names.py does not list; what keeps each bounded:",
        "",
        *(f"- `{label}`: {bounded}" for label, bounded in OPEN_LABELS.items()),
        "",
        "The process gauges (`lkrig_process_*`, `lkrig_processes`) are `livesum` in "
        "prometheus_client's multiprocess mode: per worker, one series per role summing its live "
        "processes. The worker's sampler removes the files of dead job processes "
        "(`mark_process_dead`) every 5 s, so a killed job's memory does not linger as if alive; "
        "see `instrument/lkrig_instrument/process_sampler.py`.",
        "",
        "Also read by the dashboards and rules (exported by livekit-server and the livekit-agents "
        f"worker itself): {', '.join(f'`{n}`' for n in EXTERNAL)}.",
        "",
        "## Migrating from 0.1",
        "",
        "Since 0.2.0 every series the rig defines starts with `lkrig_`, so that none collides with "
        "another exporter's `agent_*` or `caller_*` in a shared Prometheus. Labels, label values, "
        "types and units are unchanged; only the names below gained the prefix, and the recording "
        "rules follow them (`scenario_profile_version_kind:speech_scheduling_errors:rate5m` is now "
        "`scenario_profile_version_kind:lkrig_speech_scheduling_errors:rate5m`). Queries, alerts "
        "and dashboards of your own need the same rename; the old names are not exported any more, "
        "so a query that still uses one returns no data rather than old data. A series recorded "
        "before the upgrade keeps its old name in Prometheus' storage until it ages out.",
        "",
        "| before 0.2.0 | since 0.2.0 |",
        "|---|---|",
        *(f"| `{a}` | `{b}` |" for a, b in RENAMED.items()),
        "",
    ]
    return "\n".join(lines)
