"""Caller utterances as real speech: espeak-ng, resampled by sox, cached by content.

Rendering runs external programs only (no livekit FFI), so it is safe in a Locust process
before it forks. The cache key covers everything that changes the audio (text, voice, speed,
sample rate, espeak-ng version, format version), so a cached file is never stale and runs
are repeatable.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lkrig_instrument import envnames

SAMPLE_RATE = 48000
# Bump when the rendering pipeline changes in a way the key does not capture.
_FORMAT_VERSION = 1
# Samples below this are espeak's digital silence plus sox dither (+-1 LSB); speech edges
# rise well above it within a millisecond.
_EDGE_AMPLITUDE = 64


class RenderError(RuntimeError):
    """An utterance could not be rendered (missing tool, tool failure, empty speech)."""


@dataclass(frozen=True)
class Utterance:
    """Speech PCM (int16 mono) with silence around it and the exact speech bounds."""

    text: str
    pcm: np.ndarray
    sample_rate: int
    speech_start: int  # index of the first speech sample in pcm
    speech_end: int  # index one past the last speech sample in pcm
    key: str = ""
    # The rendered file (s16le) the speech comes from: pcm[speech_start:speech_end] is
    # source[source_offset:][:speech samples]. The media engine reads it from there.
    source: str = ""
    source_offset: int = 0

    @property
    def duration(self) -> float:
        return self.pcm.size / self.sample_rate

    @property
    def speech_duration(self) -> float:
        return (self.speech_end - self.speech_start) / self.sample_rate

    def padded(self, lead_ms: float, trail_ms: float) -> Utterance:
        lead = np.zeros(int(self.sample_rate * lead_ms / 1000.0), dtype=np.int16)
        trail = np.zeros(int(self.sample_rate * trail_ms / 1000.0), dtype=np.int16)
        speech = self.pcm[self.speech_start : self.speech_end]
        return Utterance(
            self.text,
            np.concatenate([lead, speech, trail]),
            self.sample_rate,
            lead.size,
            lead.size + speech.size,
            f"{self.key}+{lead_ms:g}+{trail_ms:g}",
            self.source,
            self.source_offset,
        )

    def truncated(self, max_speech_ms: float, trail_ms: float) -> Utterance:
        """The first max_speech_ms of speech (a barge-in that stops early), then silence."""
        end = min(self.speech_end, self.speech_start + int(self.sample_rate * max_speech_ms / 1000))
        trail = np.zeros(int(self.sample_rate * trail_ms / 1000.0), dtype=np.int16)
        return Utterance(
            self.text,
            np.concatenate([self.pcm[:end], trail]),
            self.sample_rate,
            self.speech_start,
            end,
            f"{self.key}~{max_speech_ms:g}",
            self.source,
            self.source_offset,
        )


def cache_dir() -> Path:
    base = envnames.get("LKRIG_CACHE") or os.path.join(Path.home(), ".cache", "lkrig")
    return Path(base) / "utterances"


def _which(tool: str, apt_package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RenderError(f"'{tool}' is not on PATH; install it (Debian: apt-get install {apt_package})")
    return path


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    exe = _which("espeak-ng", "espeak-ng")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False)
    if out.returncode != 0:
        raise RenderError(f"'espeak-ng --version' failed: {out.stderr.strip()}")
    return out.stdout.split("Data at")[0].strip()


def utterance_key(text: str, voice: str, speed_wpm: int, sample_rate: int) -> str:
    spec = json.dumps(
        {"v": _FORMAT_VERSION, "espeak": espeak_version(), "voice": voice,
         "speed": speed_wpm, "rate": sample_rate, "text": text},
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:32]


def speech_bounds(pcm: np.ndarray, edge_amplitude: int = _EDGE_AMPLITUDE) -> tuple[int, int]:
    """[first, last+1) indices of samples louder than the edge amplitude."""
    idx = np.flatnonzero(np.abs(pcm.astype(np.int32)) > edge_amplitude)
    if idx.size == 0:
        return 0, 0
    return int(idx[0]), int(idx[-1]) + 1


def _synthesize(text: str, voice: str, speed_wpm: int, sample_rate: int) -> bytes:
    espeak = _which("espeak-ng", "espeak-ng")
    sox = _which("sox", "sox")
    # Text goes through stdin so a leading '-' or shell metacharacters are just text.
    synth = subprocess.run(
        [espeak, "-v", voice, "-s", str(speed_wpm), "--stdout"],
        input=text.encode(), capture_output=True, timeout=60, check=False,
    )
    if synth.returncode != 0 or not synth.stdout:
        raise RenderError(f"espeak-ng failed for {text!r} (voice {voice}): {synth.stderr.decode().strip()}")
    # -D: no dither, so silence stays digital zero and speech edges are exact.
    conv = subprocess.run(
        [sox, "-t", "wav", "-", "-D", "-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1",
         "-r", str(sample_rate), "-"],
        input=synth.stdout, capture_output=True, timeout=60, check=False,
    )
    if conv.returncode != 0:
        raise RenderError(f"sox resampling failed: {conv.stderr.decode().strip()}")
    return conv.stdout


def render(
    text: str,
    *,
    voice: str = "en-us",
    speed_wpm: int = 160,
    sample_rate: int = SAMPLE_RATE,
    directory: Path | None = None,
) -> Utterance:
    """Renders (or loads from the cache) `text` as trimmed speech PCM, no padding."""
    if not text.strip():
        raise RenderError("cannot render an empty utterance")
    key = utterance_key(text, voice, speed_wpm, sample_rate)
    directory = directory or cache_dir()
    path = directory / f"{key}.s16le"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = _synthesize(text, voice, speed_wpm, sample_rate)
        directory.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: concurrent renderers of the same text never see a partial file.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{key}.")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    pcm = np.frombuffer(raw, dtype=np.int16)
    start, end = speech_bounds(pcm)
    if end <= start:
        raise RenderError(f"espeak-ng produced no audible speech for {text!r}")
    return Utterance(text, pcm, sample_rate, start, end, key, str(path), start)


class UtteranceCache:
    """In-process cache of padded utterances on top of the on-disk cache."""

    def __init__(self, lead_ms: float = 200.0, trail_ms: float = 300.0, **render_kw: object) -> None:
        self.lead_ms = lead_ms
        self.trail_ms = trail_ms
        self._render_kw = render_kw
        self._mem: dict[str, Utterance] = {}

    def get(self, text: str) -> Utterance:
        u = self._mem.get(text)
        if u is None:
            u = render(text, **self._render_kw).padded(self.lead_ms, self.trail_ms)  # type: ignore[arg-type]
            self._mem[text] = u
        return u

    async def aget(self, text: str) -> Utterance:
        """Like get(), rendering in a thread so the event loop keeps pacing other callers."""
        u = self._mem.get(text)
        if u is not None:
            return u
        u = await asyncio.to_thread(render, text, **self._render_kw)  # type: ignore[arg-type]
        u = u.padded(self.lead_ms, self.trail_ms)
        self._mem[text] = u
        return u
