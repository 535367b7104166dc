"""`rig sweep` runs a grid of short headless runs against one real native stack
(livekit-server, a real agent worker, Prometheus, Locust with real WebRTC callers) and writes
the error rate by kind per cell as a table (Markdown, CSV) and plots (SVG, HTML).

Two cells, seed against fix_filler_in_on_enter on the `fast` profile with 3 callers on the
`3g-lossy` network (2.7 % of packets lost in bursts, both ways): the seed's undelayed filler is
still refused as `draining` in every conversation that reaches the tool, the fix never is
(docs/speech-scheduling.md, "On lossy networks"). Port offset 14000: its UDP range (64000-64999)
and TCP ports meet no other test's.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from stackutil import REPO, RIG, alive, listening, rig_env

from rig import pins, sweep

OFFSET = 14000
LIVEKIT_PORT = 7880 + OFFSET
pytestmark = pytest.mark.timeout(300)


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    def buckets(counts: dict[str, float]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {("h_bucket", (("le", le), ("scenario", s))): v / 2
                for le, v in counts.items() for s in ("a", "b")}  # two label sets, summed

    # 10 observations: 4 <= 0.5, 9 <= 1, 10 <= 2; p95 = rank 9.5, halfway into (1, 2].
    samples = buckets({"0.5": 4, "1.0": 9, "2.0": 10, "+Inf": 10})
    assert sweep.histogram_quantile(0.95, samples, "h") == pytest.approx(1.5)
    assert sweep.histogram_quantile(0.2, samples, "h") == pytest.approx(0.25)  # first bucket from 0
    # In the open bucket: the highest finite bound, as Prometheus answers.
    assert sweep.histogram_quantile(0.95, buckets({"1.0": 5, "+Inf": 10}), "h") == 1.0
    assert sweep.histogram_quantile(0.95, buckets({"1.0": 0, "+Inf": 0}), "h") is None


@pytest.mark.parametrize(("args", "said"), [
    (["--scenarios", "seed,sede"], "--scenarios: sede: no such scenario; available:"),
    (["--scenarios", "seed", "--users", "3,x"], "--users 3,x: 'x' is not a whole number of callers"),
    (["--scenarios", "seed", "--profiles", "fast,quick"], "quick.yaml: no such latency profile"),
    (["--scenarios", "seed", "--networks", "4g,5g"], "--networks: 5g: no such network profile; available:"),
    (["--scenarios", "seed", "--agents-version", "1.0.0"], "--agents-version 1.0.0: "),
    (["--scenarios", "seed", "--agents-version", "1.3.12", "--compose"],
     "--agents-version: not with --compose"),
])
def test_bad_input_exits_2_before_anything_starts(tmp_path: Path, args: list[str], said: str) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([str(RIG), "sweep", "--out", str(out), "--port-offset", str(OFFSET), *args],
                          capture_output=True, text=True, timeout=60, env=rig_env(), cwd=REPO)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists() and not listening(LIVEKIT_PORT)


def _markdown_rows(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def test_two_cell_sweep_seed_drains_and_the_fix_does_not(tmp_path: Path) -> None:
    t = time.monotonic()
    proc = subprocess.run(
        [str(RIG), "sweep", "--scenarios", "seed,fix_filler_in_on_enter", "--profiles", "fast",
         "--networks", "3g-lossy", "--users", "3", "--duration", "25s", "--call-gap", "3", "--agents", "1",
         "--out", str(tmp_path),
         "--env-file", str(tmp_path / ".env"), "--port-offset", str(OFFSET)],
        capture_output=True, text=True, timeout=280, env=rig_env(), cwd=REPO)
    elapsed = time.monotonic() - t
    print(proc.stdout[-5000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr

    with open(tmp_path / "sweep.csv") as f:
        rows = {r["scenario"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"seed", "fix_filler_in_on_enter"}
    seed, fix = rows["seed"], rows["fix_filler_in_on_enter"]
    for r in (seed, fix):
        assert r["ok"] == "1" and not r["notes"] and r["network"] == "3g-lossy", r
        assert int(r["turns_locust"]) >= 2 and float(r["turns_agent"]) == int(r["turns_locust"]), r
        assert int(r["conversations"]) >= 1 and float(r["turn_latency_p95_seconds"]) > 0, r
    # The measurement: the seed's filler is refused as draining, the fix's never.
    assert int(seed["errors_draining"]) > 0 and float(seed["draining_per_1k_turns"]) > 0, seed
    assert float(seed["draining_per_1k_turns"]) == pytest.approx(
        1000 * int(seed["errors_draining"]) / float(seed["turns_agent"]), rel=1e-5)
    assert fix["errors_total"] == "0" and float(fix["draining_per_1k_turns"]) == 0, fix
    assert "completed=" in fix["conversations_by_outcome"], fix

    # The Markdown table says the same numbers.
    md = {r["scenario"]: r for r in _markdown_rows((tmp_path / "sweep.md").read_text())}
    for name, r in rows.items():
        m = md[name]
        assert m["profile"] == "fast" and m["network"] == "3g-lossy" and m["users"] == "3"
        assert m["turns (Locust / agent)"] == f"{r['turns_locust']} / {r['turns_agent']}"
        rate, count = re.fullmatch(r"([\d.]+) \((\d+)\)", m["draining /1k turns"]).groups()  # type: ignore[union-attr]
        assert float(rate) == pytest.approx(float(r["draining_per_1k_turns"]), abs=0.05)
        assert count == r["errors_draining"]
        p95 = float(r["turn_latency_p95_seconds"])
        assert float(m["turn latency p95 (s)"]) == pytest.approx(p95, abs=0.006)
        rate, count = re.fullmatch(r"([\d.]+) \((\d+)\)", m["interrupted speech /1k turns"]).groups()  # type: ignore[union-attr]
        assert count == r["speeches_interrupted"]
        assert float(rate) == pytest.approx(1000 * int(count) / float(r["turns_agent"]), abs=0.05)
        outcomes = dict(kv.split("=") for kv in r["conversations_by_outcome"].split(";"))
        assert m["conversations by outcome"] == ", ".join(
            f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -int(kv[1])))

    # So do the plot's bars (the standalone SVG, and the same plot inside the HTML page).
    svg = (tmp_path / "sweep.svg").read_text()
    bars = {(c.split(" / ")[0], s): float(v) for c, s, v in re.findall(
        r'class="bar" data-category="([^"]+)" data-series="([^"]+)" data-value="([^"]+)"', svg)}
    assert bars == {(name, "draining"): pytest.approx(float(r["draining_per_1k_turns"]), rel=1e-5)
                    for name, r in rows.items()}, bars
    html = (tmp_path / "sweep.html").read_text()
    assert svg.split("\n", 1)[1].strip() in html and "turn latency p95" in html

    # Each cell's numbers are its own: the two time ranges follow each other without overlap.
    data = json.loads((tmp_path / "sweep.json").read_text())
    c1, c2 = data["cells"]
    assert data["params"]["agents_version"] == pins.load()["LIVEKIT_AGENTS_VERSION"]
    assert c1["t0"] < c1["t1"] <= c2["t0"] < c2["t1"]

    # Nothing is left: every process the sweep started is gone, and its ports are closed.
    pids = data["params"]["pids"]
    assert any(n.startswith("driver-") for n in pids) and any(n.startswith("locust-") for n in pids)
    assert not [n for n, pid in pids.items() if alive(pid)], pids
    for port in (7880, 9090, 8100, 9100, 9646, 5557):
        assert not listening(port + OFFSET), port + OFFSET
    print(f"sweep: {elapsed:.0f} s wall")
