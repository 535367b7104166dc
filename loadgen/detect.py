"""Speech onset/offset detection on received audio, by energy, with sample-accurate edges.

A WebRTC AudioStream delivers frames continuously (decoded digital silence when nobody talks),
so "the agent started talking" is an energy onset, never a frame arrival. Pure numpy, no
livekit import, so it can be unit-tested on rendered audio and reused by any receiver.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# int16 full scale; dBFS values below are relative to it (a full-scale sine is -3 dBFS).
_FULL_SCALE = 32768.0
_DB_FLOOR = -100.0


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS, clamped at -100 dB for digital zero."""
    if samples.size == 0:
        return _DB_FLOOR
    x = samples.astype(np.float32)
    ms = float(np.dot(x, x)) / samples.size
    if ms <= 0.0:
        return _DB_FLOOR
    return max(_DB_FLOOR, 10.0 * math.log10(ms) - 20.0 * math.log10(_FULL_SCALE))


def dbfs_to_amplitude(db: float) -> float:
    return _FULL_SCALE * 10.0 ** (db / 20.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Defaults chosen on espeak-ng speech decoded from Opus (see tests/test_caller_unit.py).

    * margin_db over the silence floor, but never below min_threshold_dbfs: decoded digital
      silence sits near -87 dBFS (LSB noise), quiet fricatives of TTS speech near -45 dBFS.
    * min_speech_ms: energy must be present this long before an onset counts, so clicks and
      codec transients do not count as agent speech (the onset is still back-dated).
    * hangover_ms: silence this long ends a segment. Stop closures inside words are ~50 ms of
      digital silence; a filler->answer gap can be as short as ~110 ms. Commas in espeak speech
      give ~170 ms pauses, which therefore split a sentence into two segments.
    * floor_window_s: the floor is the minimum frame level over this window (minimum
      statistics), so a constant comfort noise raises the threshold instead of reading as speech.
    """

    margin_db: float = 25.0
    min_threshold_dbfs: float = -60.0
    initial_floor_dbfs: float = -90.0
    min_speech_ms: float = 40.0
    hangover_ms: float = 80.0
    floor_window_s: float = 3.0


@dataclass(frozen=True)
class Segment:
    """One stretch of speech, in the caller's clock (time.monotonic() seconds)."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class StreamClock:
    """Maps sample positions of a continuous stream to monotonic time.

    Frames reach Python late by a varying amount (event-loop lag, FFI queueing), never early.
    The stream itself is paced by the native side in real time, so the least-delayed frame
    in a recent window pins the stream's time base; every other frame is dated from it. This
    keeps loop lag out of the measurements as long as at least one frame per window was
    delivered promptly.
    """

    def __init__(self, window_s: float = 1.0) -> None:
        self._window_s = window_s
        self._samples = 0
        # Monotonic deque of (arrival, offset) with increasing offsets: the window minimum.
        self._offsets: deque[tuple[float, float]] = deque()

    @property
    def samples(self) -> int:
        return self._samples

    def add(self, arrival: float, n_samples: int, sample_rate: int) -> float:
        """Registers a frame that arrived at `arrival`; returns the time of its first sample."""
        start_pos = self._samples
        self._samples += n_samples
        offset = arrival - self._samples / sample_rate
        while self._offsets and self._offsets[-1][1] >= offset:
            self._offsets.pop()
        self._offsets.append((arrival, offset))
        while self._offsets[0][0] < arrival - self._window_s:
            self._offsets.popleft()
        return self._offsets[0][1] + start_pos / sample_rate


class SpeechSegmenter:
    """Energy-based speech segmentation with a relative threshold, onset confirmation and hangover.

    Feed consecutive frames with `push(t0, samples, sample_rate)` where t0 is the time of the
    frame's first sample. Confirmed segment starts and finished segments are returned by `push`
    as ("start", t) / ("end", t) events; `segments` holds every finished segment.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.segments: list[Segment] = []
        self._floor: deque[tuple[float, float]] = deque()  # (time, dB), increasing dB
        self._first_time: float | None = None
        self._prev: tuple[float, np.ndarray, int] | None = None  # previous frame (t0, x, sr)
        self._candidate: float | None = None  # tentative onset, not yet confirmed
        self._start: float | None = None  # confirmed onset of the current segment
        self._last_active: float | None = None  # last sample above threshold
        self._quiet_s = 0.0  # consecutive quiet time

    @property
    def speaking(self) -> bool:
        return self._start is not None

    @property
    def current_start(self) -> float | None:
        return self._start

    @property
    def last_active(self) -> float | None:
        return self._last_active

    def threshold_dbfs(self, now: float) -> float:
        floor = self._floor[0][1] if self._floor else self.config.initial_floor_dbfs
        if self._first_time is None or now - self._first_time < self.config.floor_window_s:
            floor = min(floor, self.config.initial_floor_dbfs)
        return max(floor + self.config.margin_db, self.config.min_threshold_dbfs)

    def _update_floor(self, t: float, db: float) -> None:
        while self._floor and self._floor[-1][1] >= db:
            self._floor.pop()
        self._floor.append((t, db))
        while self._floor[0][0] < t - self.config.floor_window_s:
            self._floor.popleft()

    def push(self, t0: float, samples: np.ndarray, sample_rate: int) -> list[tuple[str, float]]:
        cfg = self.config
        if self._first_time is None:
            self._first_time = t0
        n = samples.size
        dur = n / sample_rate
        db = rms_dbfs(samples)
        thr_db = self.threshold_dbfs(t0)
        self._update_floor(t0, db)
        amp = dbfs_to_amplitude(thr_db)
        events: list[tuple[str, float]] = []
        prev = self._prev
        self._prev = (t0, samples, sample_rate)

        if db >= thr_db:
            above = np.flatnonzero(np.abs(samples) > amp)
            last_here = t0 + (int(above[-1]) + 1) / sample_rate if above.size else t0 + dur
            if self._start is None and self._candidate is None:
                self._candidate = self._first_above(prev, t0, samples, sample_rate, amp)
            self._quiet_s = 0.0
            self._last_active = last_here
            # Measured on samples, not frames: a 25 ms click straddling two frames stays 25 ms.
            span = last_here - self._candidate if self._candidate is not None else 0.0
            if self._candidate is not None and span * 1000.0 >= cfg.min_speech_ms:
                self._start = self._candidate
                self._candidate = None
                events.append(("start", self._start))
            return events

        # Quiet frame: the tail of a segment may still reach into it.
        if self._quiet_s == 0.0 and (self._start is not None or self._candidate is not None):
            above = np.flatnonzero(np.abs(samples) > amp)
            if above.size:
                self._last_active = t0 + (int(above[-1]) + 1) / sample_rate
        self._quiet_s += dur
        if self._quiet_s * 1000.0 >= cfg.hangover_ms:
            if self._start is not None and self._last_active is not None:
                seg = Segment(self._start, self._last_active)
                self.segments.append(seg)
                events.append(("end", seg.end))
            self._start = None
            self._candidate = None  # never reached min_speech_ms: a click
        return events

    @staticmethod
    def _first_above(
        prev: tuple[float, np.ndarray, int] | None,
        t0: float,
        samples: np.ndarray,
        sample_rate: int,
        amp: float,
    ) -> float:
        # Speech can begin at the end of the previous (quiet by RMS) frame: look there first.
        if prev is not None and prev[2] == sample_rate:
            p_t0, p_x, _ = prev
            if abs(p_t0 + p_x.size / sample_rate - t0) < 1e-3:
                idx = np.flatnonzero(np.abs(p_x) > amp)
                if idx.size:
                    # Only a contiguous run up to the boundary belongs to this onset.
                    run_start = _run_start_at_end(idx, p_x.size, sample_rate)
                    if run_start is not None:
                        return p_t0 + run_start / sample_rate
        idx = np.flatnonzero(np.abs(samples) > amp)
        return t0 + (int(idx[0]) / sample_rate if idx.size else 0.0)

    def flush(self) -> list[tuple[str, float]]:
        """Ends an open segment (the stream ended)."""
        events: list[tuple[str, float]] = []
        if self._start is not None and self._last_active is not None:
            seg = Segment(self._start, self._last_active)
            self.segments.append(seg)
            events.append(("end", seg.end))
        self._start = None
        self._candidate = None
        self._prev = None
        return events


def _run_start_at_end(idx: np.ndarray, n: int, sample_rate: int) -> int | None:
    """First index of the run of above-threshold samples that reaches the end of the frame.

    Zero crossings make speech dip below the threshold every half period, so samples closer
    than 5 ms apart count as one run.
    """
    max_step = max(1, int(0.005 * sample_rate))
    if n - 1 - int(idx[-1]) > max_step:
        return None
    breaks = np.flatnonzero(np.diff(idx) > max_step)
    return int(idx[breaks[-1] + 1]) if breaks.size else int(idx[0])


def segment_audio(
    samples: np.ndarray,
    sample_rate: int,
    frame_ms: float = 20.0,
    config: DetectorConfig | None = None,
    t0: float = 0.0,
) -> list[Segment]:
    """Segments a whole buffer offline (same algorithm as live), times relative to t0."""
    seg = SpeechSegmenter(config)
    step = max(1, round(sample_rate * frame_ms / 1000.0))
    for i in range(0, samples.size, step):
        seg.push(t0 + i / sample_rate, samples[i : i + step], sample_rate)
    seg.flush()
    return seg.segments


def gaps(segments: Iterable[Segment]) -> list[float]:
    """Silence between consecutive segments, in seconds."""
    segs = list(segments)
    return [b.start - a.end for a, b in itertools.pairwise(segs)]
