"""Unit tests of the caller's pure parts: utterance rendering/cache and speech detection.

Real espeak-ng + sox audio throughout (both are required components: a missing one fails
these tests). The live parts (rooms, dispatch, media) are covered by the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lkrig_instrument import names

from loadgen import audio
from loadgen.detect import DetectorConfig, SpeechSegmenter, StreamClock, gaps, rms_dbfs, segment_audio
from loadgen.results import JOIN_OUTCOMES, TURN_OUTCOME_VALUES

SR = audio.SAMPLE_RATE
ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "What programs do you have for kids?"
FILLER = "One moment please."


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("utterances")


@pytest.fixture(scope="module")
def sentence(cache: Path) -> audio.Utterance:
    return audio.render(SENTENCE, directory=cache)


def _lsb_noise(n: int, seed: int = 0) -> np.ndarray:
    # What decoded Opus "silence" looks like on the receiving side: a few LSBs of noise.
    return np.random.default_rng(seed).integers(-3, 4, n).astype(np.int16)


def _ms(seconds: float) -> float:
    return seconds * 1000.0


# ---- rendering and cache ------------------------------------------------------------------


def test_render_is_content_addressed_and_read_back_from_the_cache(cache: Path) -> None:
    text = "A sentence only this test renders."
    first = audio.render(text, directory=cache)
    path = cache / f"{first.key}.s16le"
    assert path.stat().st_size == first.pcm.size * 2
    # Overwrite the cached file: a second render must return the file's content, not re-synthesize.
    marker = np.zeros(SR, dtype=np.int16)
    marker[1000:2000] = 5000
    path.write_bytes(marker.tobytes())
    again = audio.render(text, directory=cache)
    assert again.key == first.key
    assert (again.speech_start, again.speech_end) == (1000, 2000)


def test_cache_key_covers_text_voice_speed_and_rate() -> None:
    base = audio.utterance_key(SENTENCE, "en-us", 160, SR)
    assert base == audio.utterance_key(SENTENCE, "en-us", 160, SR)
    others = {
        audio.utterance_key(SENTENCE + " ", "en-us", 160, SR),
        audio.utterance_key(SENTENCE, "en-gb", 160, SR),
        audio.utterance_key(SENTENCE, "en-us", 170, SR),
        audio.utterance_key(SENTENCE, "en-us", 160, 16000),
    }
    assert base not in others and len(others) == 4


def test_rendered_speech_is_trimmed_and_padded_exactly(sentence: audio.Utterance) -> None:
    assert sentence.sample_rate == SR
    # espeak-ng pads ~0.3 s of silence after speech; trimming must drop it.
    assert sentence.pcm.size - sentence.speech_end > int(0.2 * SR)
    assert 1.5 < sentence.speech_duration < 3.5
    padded = sentence.padded(200, 300)
    assert padded.speech_start == int(0.2 * SR)
    assert padded.pcm.size - padded.speech_end == int(0.3 * SR)
    assert np.array_equal(
        padded.pcm[padded.speech_start : padded.speech_end],
        sentence.pcm[sentence.speech_start : sentence.speech_end],
    )
    assert not padded.pcm[: padded.speech_start].any() and not padded.pcm[padded.speech_end :].any()


def test_truncated_barge_in_keeps_only_the_requested_speech(sentence: audio.Utterance) -> None:
    cut = sentence.padded(100, 0).truncated(400, 250)
    assert cut.speech_end - cut.speech_start == int(0.4 * SR)
    assert cut.pcm.size == cut.speech_end + int(0.25 * SR)


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    audio.espeak_version.cache_clear()
    try:
        with pytest.raises(audio.RenderError, match=r"espeak-ng.*apt-get install espeak-ng"):
            audio.render("never rendered before " + str(random.random()), directory=tmp_path)
    finally:
        audio.espeak_version.cache_clear()


def test_utterance_cache_renders_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LKRIG_CACHE", str(cache.parent / "rig"))
    calls = []
    real = audio._synthesize

    def counting(*a: object, **kw: object) -> bytes:
        calls.append(a)
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(audio, "_synthesize", counting)
    c = audio.UtteranceCache(lead_ms=100, trail_ms=100)
    u1, u2 = c.get("Saturday morning works."), c.get("Saturday morning works.")
    assert u1 is u2 and len(calls) == 1
    assert (
        cache.parent
        / "rig"
        / "utterances"
        / f"{audio.utterance_key('Saturday morning works.', 'en-us', 160, SR)}.s16le"
    ).exists()


# ---- detection on real speech -------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 50, 100])
def test_onset_and_end_of_real_speech_are_sample_accurate(sentence: audio.Utterance, frame_ms: int) -> None:
    u = sentence.padded(500, 600)
    pcm = u.pcm + _lsb_noise(u.pcm.size)
    segs = segment_audio(pcm, SR, frame_ms)
    assert segs, "no speech found"
    assert abs(_ms(segs[0].start - u.speech_start / SR)) < 1.0
    assert abs(_ms(segs[-1].end - u.speech_end / SR)) < 1.0
    # One question, no internal pause longer than the hangover: exactly one segment.
    assert len(segs) == 1


def test_comma_pause_splits_and_is_measured(cache: Path) -> None:
    u = audio.render("One moment please, let me check.", directory=cache).padded(300, 300)
    segs = segment_audio(u.pcm + _lsb_noise(u.pcm.size, 1), SR, 20)
    assert len(segs) == 2
    # The pause really is there in the rendered audio: no sample above the edge level.
    a, b = int(segs[0].end * SR), int(segs[1].start * SR)
    assert b - a > int(0.1 * SR) and np.abs(u.pcm[a:b].astype(np.int32)).max() <= 64


@pytest.mark.parametrize("gap_ms", [110, 150, 400])
def test_gap_between_two_utterances(cache: Path, sentence: audio.Utterance, gap_ms: int) -> None:
    filler = audio.render(FILLER, directory=cache).padded(400, 0)
    answer = sentence.padded(gap_ms, 500)
    pcm = np.concatenate([filler.pcm, answer.pcm])
    pcm = pcm + _lsb_noise(pcm.size, 2)
    segs = segment_audio(pcm, SR, 20)
    assert len(segs) == 2
    assert abs(_ms(gaps(segs)[0]) - gap_ms) < 1.0


def test_gap_shorter_than_the_hangover_is_merged(cache: Path, sentence: audio.Utterance) -> None:
    filler = audio.render(FILLER, directory=cache).padded(400, 0)
    pcm = np.concatenate([filler.pcm, sentence.padded(50, 500).pcm])
    assert len(segment_audio(pcm, SR, 20)) == 1


def test_codec_silence_and_short_clicks_are_not_speech() -> None:
    pcm = _lsb_noise(3 * SR, 3)
    assert rms_dbfs(pcm) < -75
    assert segment_audio(pcm, SR, 20) == []
    for click_ms in (2, 10, 25):
        x = pcm.copy()
        n = int(SR * click_ms / 1000)
        x[SR : SR + n] = 12000  # a loud DC click
        assert segment_audio(x, SR, 20) == [], f"{click_ms} ms click counted as speech"
    x = pcm.copy()
    x[SR : SR + int(0.06 * SR)] = 12000  # 60 ms is longer than min_speech_ms: counts
    assert len(segment_audio(x, SR, 20)) == 1


def test_threshold_follows_the_floor_but_never_drops_below_the_minimum() -> None:
    cfg = DetectorConfig()
    seg = SpeechSegmenter(cfg)
    # Digital zero: floor clamps at -100 dB, the absolute minimum threshold rules.
    for i in range(200):
        seg.push(i * 0.02, np.zeros(960, np.int16), SR)
    assert seg.threshold_dbfs(4.0) == cfg.min_threshold_dbfs
    # Steady noise at ~-50 dBFS for longer than the floor window lifts the threshold above it.
    rng = np.random.default_rng(4)
    for i in range(200, 400):
        seg.push(i * 0.02, (rng.standard_normal(960) * 104).astype(np.int16), SR)
    assert seg.threshold_dbfs(8.0) == pytest.approx(-50 + cfg.margin_db, abs=2.0)


def test_live_segmenter_reports_start_then_end_events(sentence: audio.Utterance) -> None:
    u = sentence.padded(300, 500)
    seg = SpeechSegmenter()
    events = []
    for i in range(0, u.pcm.size, 960):
        events += seg.push(i / SR, u.pcm[i : i + 960], SR)
    kinds = [k for k, _ in events]
    assert kinds == ["start", "end"]
    # The start is confirmed after min_speech_ms but back-dated to the first speech sample.
    assert abs(_ms(events[0][1] - u.speech_start / SR)) < 1.0


# ---- stream clock -------------------------------------------------------------------------


def test_stream_clock_removes_event_loop_lag() -> None:
    rng = random.Random(5)
    clock = StreamClock(window_s=1.0)
    base, worst = 1000.0, 0.0
    for k in range(500):
        true_start = base + k * 0.02
        # A frame is handed to Python when its last sample exists, plus a lag that is zero
        # for some frames and up to 40 ms for others (a busy loop).
        lag = 0.0 if rng.random() < 0.3 else rng.uniform(0.0, 0.04)
        t0 = clock.add(true_start + 0.02 + lag, 960, SR)
        if k > 50:
            worst = max(worst, abs(t0 - true_start))
    assert worst < 1e-6


def test_stream_clock_follows_a_stream_that_restarts_late() -> None:
    clock = StreamClock(window_s=1.0)
    for k in range(100):
        clock.add(10.0 + (k + 1) * 0.02, 960, SR)
    # 300 ms of frames lost: after one window the clock dates frames by their arrival again.
    for k in range(100, 200):
        t0 = clock.add(10.3 + (k + 1) * 0.02, 960, SR)
    assert abs(t0 - (10.3 + k * 0.02)) < 1e-6


# ---- contracts ----------------------------------------------------------------------------


def test_outcomes_are_the_instrumented_label_values() -> None:
    assert set(TURN_OUTCOME_VALUES) == set(names.TURN_OUTCOMES)
    assert set(JOIN_OUTCOMES) - {"ok"} <= set(names.CONVERSATION_OUTCOMES)
    assert set(TURN_OUTCOME_VALUES) - {"ok"} <= set(names.CONVERSATION_OUTCOMES)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadgen.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_cli_rejects_a_timeout_that_is_not_positive() -> None:
    r = _cli("--url", "ws://127.0.0.1:1", "--settle", "0", "--say", "hi")
    assert r.returncode == 2
    assert "--settle" in r.stderr and "must be > 0" in r.stderr


def test_cli_names_missing_keys_without_printing_secrets() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env["LIVEKIT_API_KEY"] = "somekey"
    r = _cli("--url", "ws://127.0.0.1:1", "--say", "hi", env=env)
    assert r.returncode == 2
    assert "LIVEKIT_API_SECRET" in r.stderr and "somekey" not in r.stderr + r.stdout


def test_cli_reports_a_refused_connection_as_a_named_outcome(tmp_path: Path) -> None:
    env = {**os.environ, "LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s" * 32, "LKRIG_CACHE": str(tmp_path)}
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    r = _cli("--url", "ws://127.0.0.1:1", "--say", "hi", env=env)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "connect_failed"
    assert out["join"]["reason"] == "create_room_failed"
    assert "s" * 32 not in r.stdout + r.stderr
