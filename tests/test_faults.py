"""The fault registry (rig/faults.py): what each kind accepts and refuses, and that the help text
and the table in docs/soak-and-faults.md are the registry's. The faults themselves run on real
stacks: tests/test_run_soak.py (native), tests/test_compose_faults.py and
tests/test_compose_images.py (compose)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rig import faults

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec, kind, at", [
    ("kill-agent@120s", "kill-agent", 120.0),
    ("drain-agent@1.5m", "drain-agent", 90.0),
    ("restart-livekit@3m", "restart-livekit", 180.0),
    ("kill-livekit-node@90s", "kill-livekit-node", 90.0),
    ("partition-agent@60s:for=20s", "partition-agent", 60.0),
])
def test_each_kind_parses_its_offset(spec: str, kind: str, at: float) -> None:
    f = faults.parse(spec)
    assert (type(f).name, f.kind, f.at, f.spec) == (kind, kind, at, spec)


def test_slow_provider_arguments() -> None:
    f = faults.parse("slow-provider@60s:+800ms:tts:for=30s")
    assert (f.add_ms, f.components, f.lasts) == (800.0, ("tts_first_byte",), 30.0)
    f = faults.parse("slow-provider@0s:+1.5")  # a bare number is milliseconds
    assert (f.add_ms, f.components, f.lasts) == (1.5, ("llm_ttft",), None)
    assert faults.parse("partition-agent@1s:for=2m").lasts == 120.0
    assert faults.parse("drain-agent@1s:grace=45s").grace == 45.0
    assert faults.parse("drain-agent@1s").grace is None  # the stack's own (Backend.drain_grace)


@pytest.mark.parametrize("spec, said", [
    ("nosuch@1s", "unknown fault 'nosuch'; choose from kill-agent, drain-agent"),
    ("kill-agent", "give the offset into the run, like kill-agent@120s"),
    ("kill-agent@soon", "'soon' is not a duration"),
    ("kill-agent@1s:now", "kill-agent takes no arguments after the offset"),
    ("slow-provider@1s", "say how much latency to add"),
    ("slow-provider@1s:+80ms:gpu", "unknown argument 'gpu'"),
    ("partition-agent@1s", "say how long the partition lasts"),
    ("partition-agent@1s:20s", "unknown argument '20s'; expected for=DURATION"),
    ("drain-agent@1s:60s", "unknown argument '60s'; expected grace=DURATION"),
    ("drain-agent@1s:grace=soon", "'soon' is not a duration"),
])
def test_a_bad_spec_is_one_error_naming_it(spec: str, said: str) -> None:
    with pytest.raises(faults.FaultError) as e:
        faults.parse(spec)
    assert str(e.value).startswith(f"--fault {spec}: ") and said in str(e.value)


def test_a_kind_names_the_backends_it_runs_on() -> None:
    planned = [faults.parse("kill-agent@1s"), faults.parse("partition-agent@1s:for=1s")]
    faults.check_backend(planned, "compose")
    with pytest.raises(faults.FaultError, match="kill-agent@1s: kill-agent runs on native and compose"
                                                " stacks only, not k8s"):
        faults.check_backend(planned, "k8s")


def test_every_kind_is_registered_once_with_what_the_run_needs() -> None:
    assert list(faults.KINDS) == [k.name for k in faults.KINDS.values()]
    for k in faults.KINDS.values():
        assert k.usage.startswith(f"{k.name}@") and k.summary and k.backends
        assert set(k.backends) <= {"native", "compose"}
    # the kinds that cut calls are the ones the reconciliation must bound
    assert {k.name for k in faults.KINDS.values() if k.cuts_calls} == \
        {"kill-agent", "restart-livekit", "kill-livekit-node", "partition-agent"}


class OneNode:
    """What kill-livekit-node's preflight reads of a started stack."""

    label = "compose project 'x'"

    def __init__(self, *nodes: str) -> None:
        self.nodes = nodes

    def livekit_nodes(self) -> dict[str, str | None]:
        return dict.fromkeys(self.nodes)


def test_a_livekit_node_kill_needs_a_second_node_and_says_how_to_start_one() -> None:
    kill = faults.parse("kill-livekit-node@30s")
    with pytest.raises(faults.FaultError, match="kill-livekit-node runs on compose stacks only, not native"):
        faults.check_backend([kill], "native")
    with pytest.raises(faults.FaultError) as e:
        faults.preflight([kill], OneNode("x-livekit-1"))  # type: ignore[list-item]
    assert str(e.value) == ("--fault kill-livekit-node@30s: compose project 'x' runs 1 LiveKit node"
                            " (x-livekit-1); a node kill needs two or more: start the multinode profile"
                            " (COMPOSE_PROFILES=multinode, see .env.example)")
    faults.preflight([kill], OneNode("x-livekit-1", "x-livekit-2-1"))  # type: ignore[list-item]
    with pytest.raises(faults.FaultError, match="takes no arguments"):
        faults.parse("kill-livekit-node@30s:livekit-2")


def test_help_and_docs_come_from_the_registry() -> None:
    help_text = subprocess.run([sys.executable, "-m", "rig.cli", "run", "-h"], capture_output=True,
                               text=True, check=True, cwd=REPO).stdout
    flat = "".join(help_text.split())  # argparse wraps lines, also at hyphens
    for k in faults.KINDS.values():
        assert "".join(k.usage.split()) in flat
    doc = (REPO / "docs" / "soak-and-faults.md").read_text()
    start = doc.index("<!-- generated: python -m rig.faults --markdown -->\n")
    block = doc[start:doc.index("<!-- end generated -->")].split("\n", 1)[1].strip()
    assert block == faults.markdown_table(), "run `python -m rig.faults --markdown` into the doc"


def test_the_annotated_fault_kinds_are_the_registry() -> None:
    """The Locust master refuses events of a kind names.FAULT_KINDS lacks (loadgen/runstate.py),
    so a fault added to the registry but not there would never be annotated."""
    from lkrig_instrument import names

    assert set(faults.KINDS) == set(names.FAULT_KINDS)
