"""Text-mode I/O for `rig replay`: an audio sink with a real-time playout clock, and a caller
microphone that is silent until a barge-in plays real speech into it."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit.agents.voice import io

from livekit import rtc

FRAME_S = 0.02


class ClockedAudioOutput(io.AudioOutput):
    """A segment 'plays' for its pushed duration (divided by time_scale) after its first frame.
    pause() keeps the clock running, like a transport that already holds the audio."""

    def __init__(self, time_scale: float = 1.0) -> None:
        super().__init__(label="replay", capabilities=io.AudioOutputCapabilities(pause=True),
                         next_in_chain=None, sample_rate=None)
        self._scale = time_scale
        self._pushed = 0.0
        self._started: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._timer:  # a new segment before the last one finished: finish it now
            self._timer.cancel()
            self._finish(False)
        self._pushed += frame.duration
        if self._started is None:
            self._started = time.monotonic()
            self.on_playback_started(created_at=time.time())

    def flush(self) -> None:
        super().flush()
        if self._started is None:
            return
        remaining = self._pushed / self._scale - (time.monotonic() - self._started)
        self._timer = asyncio.get_running_loop().call_later(max(remaining, 0.0), self._finish, False)

    def clear_buffer(self) -> None:
        if self._started is None:
            return
        if self._timer:
            self._timer.cancel()
        self._finish(True)

    def _finish(self, interrupted: bool) -> None:
        started = self._started or time.monotonic()
        position = min(self._pushed, (time.monotonic() - started) * self._scale)
        self._pushed, self._started, self._timer = 0.0, None, None
        self.on_playback_finished(playback_position=position, interrupted=interrupted)

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass


class CallerMicrophone(io.AudioInput):
    """Real-time 16 kHz frames: silence, or speech queued by say()."""

    RATE = 16000

    def __init__(self) -> None:
        super().__init__(label="replay-mic")
        self._queue: list[np.ndarray] = []
        self._next = time.monotonic()
        self._samples = int(self.RATE * FRAME_S)

    def play(self, pcm: bytes, rate: int) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16)
        resampled = np.interp(np.arange(0, len(samples), rate / self.RATE),
                              np.arange(len(samples)), samples).astype(np.int16)
        self._queue.extend(np.array_split(resampled, max(1, len(resampled) // self._samples)))

    async def __anext__(self) -> rtc.AudioFrame:
        self._next += FRAME_S
        await asyncio.sleep(max(0.0, self._next - time.monotonic()))
        chunk = self._queue.pop(0) if self._queue else np.zeros(self._samples, np.int16)
        return rtc.AudioFrame(chunk.tobytes(), self.RATE, 1, len(chunk))
