"""The runtime latency override (agent/latency.py, LKRIG_LATENCY_OVERRIDE), the mechanism of
`rig run --fault slow-provider@...`: a file named by the environment variable adds to later
samples of the components it lists, in a session already running; changing the file changes the
offset; removing it ends it; the profile's random sequence is the same with or without it.

Run in a fresh interpreter, so the module reads the variable at import as an agent job does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stackutil import REPO

PROBE = r"""
import json, os, sys
from pathlib import Path
from agent import latency

path = Path(os.environ["LKRIG_LATENCY_OVERRIDE"])
profile = latency.load("fast")
comps = ("llm_ttft", "tts_first_byte")

def draw(lat, n):
    return [[lat.seconds(c) for c in comps] for _ in range(n)]

reference = draw(latency.Latency(profile, 3), 8)  # no file yet
lat = latency.Latency(profile, 3)
phases = {"none": draw(lat, 2)}
def write(text, mtime):
    path.write_text(text)
    os.utime(path, (mtime, mtime))  # distinct mtimes whatever the file system's resolution
write(json.dumps({"add_ms": 800, "components": ["llm_ttft"]}), 1_000_000)
phases["plus800"] = draw(lat, 2)
write(json.dumps({"add_ms": 300, "components": ["llm_ttft", "tts_first_byte"]}), 1_000_010)
phases["plus300"] = draw(lat, 1)
write("{half-written", 1_000_020)
phases["garbled"] = draw(lat, 1)
path.unlink()
phases["removed"] = draw(lat, 2)
print(json.dumps({"reference": reference, "phases": phases}))
"""


def test_override_file_changes_the_offset_live_and_keeps_the_random_sequence(tmp_path: Path) -> None:
    env = {**os.environ, "LKRIG_LATENCY_OVERRIDE": str(tmp_path / "override.json"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    ref = iter(got["reference"])
    added = {"none": (0.0, 0.0), "plus800": (0.8, 0.0), "plus300": (0.3, 0.3), "garbled": (0.0, 0.0),
             "removed": (0.0, 0.0)}
    for phase, rows in got["phases"].items():
        for row in rows:
            expected = [r + a for r, a in zip(next(ref), added[phase], strict=True)]
            assert all(abs(x - e) < 1e-9 for x, e in zip(row, expected, strict=True)), (phase, row, expected)
