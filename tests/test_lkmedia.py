"""The callers' media engine (loadgen/lkmedia, Go): its segmenter against the Python reference,
its protocol without a server, and its media through a real livekit-server (one call speaks as
the agent, another in the same room hears it)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lkrig_instrument import protocol

from loadgen import audio
from loadgen.detect import segment_audio
from loadgen.media import MediaEngine, ensure_binary
from rig import native

REPO = Path(__file__).resolve().parent.parent
TEXTS = ("What programs do you have for kids?", "She is seven, a girl.")


@pytest.fixture(scope="module")
def binary() -> Path:
    return ensure_binary()


def _speech_16k(tmp_path: Path) -> np.ndarray:
    """Two espeak utterances with a pause and some quiet noise, resampled to 16 kHz by sox."""
    parts = [np.zeros(8000, np.int16)]
    for text in TEXTS:
        u = audio.render(text)
        raw = tmp_path / "u.s16le"
        raw.write_bytes(u.pcm[u.speech_start:u.speech_end].tobytes())
        out = subprocess.run([shutil.which("sox") or "sox", "-t", "raw", "-e", "signed-integer", "-b", "16",
                              "-c", "1", "-r", "48000", str(raw), "-t", "raw", "-r", "16000", "-"],
                             capture_output=True, check=True, timeout=60).stdout
        parts += [np.frombuffer(out, np.int16), np.zeros(12000, np.int16)]
    x = np.concatenate(parts).astype(np.int32)
    noise = np.random.default_rng(7).integers(-3, 4, x.size)
    return np.clip(x + noise, -32768, 32767).astype(np.int16)


def test_the_go_segmenter_finds_the_segments_the_python_reference_finds(binary: Path, tmp_path: Path) -> None:
    x = _speech_16k(tmp_path)
    ref = segment_audio(x, 16000, frame_ms=20)
    out = subprocess.run([str(binary), "segment", "-rate", "16000", "-frame-ms", "20"], input=x.tobytes(),
                         capture_output=True, check=True, timeout=60)
    got = json.loads(out.stdout)["segments"]
    assert len(ref) >= 3, ref  # the comma splits the second sentence: more edges to agree on
    assert len(got) == len(ref)
    for (start, end), r in zip(got, ref, strict=True):
        assert start == pytest.approx(r.start, abs=1e-6) and end == pytest.approx(r.end, abs=1e-6)


def _engine(binary: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_without_credentials_it_names_them_and_exits_2(binary: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    p = _engine(binary, env)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert "LIVEKIT_API_KEY, LIVEKIT_API_SECRET, LIVEKIT_URL not set" in err


def test_bad_ops_get_answers_and_end_of_input_exits_0(binary: Path) -> None:
    env = {**os.environ, "LIVEKIT_URL": "ws://127.0.0.1:9", "LIVEKIT_API_KEY": "k",
           "LIVEKIT_API_SECRET": "s" * 32}
    p = _engine(binary, env)
    assert p.stdin is not None and p.stdout is not None
    assert json.loads(p.stdout.readline())["ev"] == "ready"
    for line in ("not json",
                 json.dumps({"op": "play", "id": "nobody", "play": 1, "layout": {}}),
                 json.dumps({"op": "data", "id": "nobody", "seq": 4, "topic": "t", "payload": "x"}),
                 json.dumps({"op": "leave", "id": "nobody"}),
                 json.dumps({"op": "join", "id": "c1", "room": "r", "identity": "i", "timeout_s": 2})):
        p.stdin.write(line + "\n")
    p.stdin.flush()
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while "join_failed" not in seen and time.monotonic() < deadline:
        msg = json.loads(p.stdout.readline())
        seen[msg["ev"]] = msg
    assert seen["played"] == {"ev": "played", "id": "nobody", "play": 1, "error": "no such call"}
    assert seen["data_sent"]["error"] == "no such call" and seen["data_sent"]["seq"] == 4
    assert seen["left"]["id"] == "nobody"
    # nothing listens on port 9: a named step, within the timeout
    assert seen["join_failed"]["id"] == "c1"
    assert seen["join_failed"]["step"] in ("connect_error", "connect_timeout")
    p.stdin.close()
    assert p.wait(timeout=20) == 0
    assert "malformed op line" in p.stderr.read()  # type: ignore[union-attr]


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def on_media(self, ev: dict[str, Any]) -> None:
        self.events.append(ev)


async def _loopback(info: native.StackInfo) -> dict[str, Any]:
    env = {**os.environ, "LIVEKIT_URL": info.livekit_url, "LIVEKIT_API_KEY": info.api_key,
           "LIVEKIT_API_SECRET": info.api_secret}
    engine = await MediaEngine.start(stats_interval_s=0.5, env=env)
    speaker, listener = Recorder(), Recorder()
    room = f"lkmedia-test-{os.getpid()}"
    a = engine.room("speaker", speaker)
    b = engine.room("listener", listener)
    try:
        joined_a = await a.join(room, "speaker", 10, as_agent=True, listen=False)
        joined_b = await b.join(room, "listener", 10)
        assert joined_a["ev"] == "joined" and joined_b["ev"] == "joined", (joined_a, joined_b)
        assert [p["identity"] for p in joined_b["participants"]] == ["speaker"]
        deadline = time.monotonic() + 10
        while not any(e["ev"] == "track" for e in listener.events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let the listener's floor settle on the speaker's silence
        cache = audio.UtteranceCache(200.0, 300.0)
        plays = []
        for text in TEXTS:
            u = await cache.aget(text)
            plays.append((u, *(await a.play(u))))
            await asyncio.sleep(0.6)
        await a.publish_data(protocol.EVENT_TOPIC, json.dumps({"event": "hello"}), 5)
        await asyncio.sleep(1.0)
        stats = engine.last_stats
        left = [await a.leave(), await b.leave()]
    finally:
        rc = await engine.close()
    return {"speaker": speaker.events, "listener": listener.events, "plays": plays, "stats": stats,
            "left": left, "rc": rc}


def test_one_call_hears_another_through_livekit_with_sample_accurate_edges(
        binary: Path, native_stack: native.StackInfo) -> None:
    r = asyncio.run(_loopback(native_stack))
    assert r["rc"] == 0 and r["left"] == [[], []]
    ev = r["listener"]
    tracks = [e for e in ev if e["ev"] == "track"]
    assert tracks and tracks[0]["participant"] == {"identity": "speaker", "agent": True}
    data = [e for e in ev if e["ev"] == "data"]
    assert [(d["topic"], json.loads(d["payload"]), d["from"]) for d in data] == [
        (protocol.EVENT_TOPIC, {"event": "hello"}, "speaker")]
    edges = [(e["edge"], e["t"]) for e in ev if e["ev"] == "speech"]
    starts = [t for k, t in edges if k == "start"]
    for u, speech_start, eou in r["plays"]:
        # played at real time: the end is the utterance's speech length after its start
        assert eou - speech_start == pytest.approx(u.speech_duration, abs=0.002)
        # the listener's first onset after the speaker's first speech sample went out
        onset = min((t for t in starts if t >= speech_start - 0.05), default=None)
        assert onset is not None, (speech_start, edges)
        assert onset - speech_start == pytest.approx(0.0, abs=0.025)
    # every segment heard falls inside an utterance as played (nothing heard in the silences)
    ends = [t for k, t in edges if k == "end"]
    assert len(ends) == len(starts)
    spans = [(s - 0.05, e + 0.05) for _, s, e in r["plays"]]
    assert all(any(lo <= t <= hi for lo, hi in spans) for t in starts + ends), (edges, spans)
    # the microphone ran at real-time pace
    s = r["stats"]
    # (a pacer that slipped would be late by whole frames for seconds; 50 ms leaves room for a
    # busy machine: the precise numbers are bench/loadgen_capacity.py's)
    assert s["frames"] > 0 and s["send_jitter_ms_p99"] < 50
    assert s["calls"] == 2
