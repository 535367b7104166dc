"""Real speech audio from espeak-ng, rendered once per phrase and cached on disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import wave
from pathlib import Path

from lkrig_instrument import envnames

VOICE = "en-us"
WORDS_PER_MINUTE = 170


def cache_dir() -> Path:
    root = Path(envnames.get("LKRIG_CACHE") or Path.home() / ".cache" / "lkrig")
    path = root / "tts"
    path.mkdir(parents=True, exist_ok=True)
    return path


class EspeakMissing(RuntimeError):
    pass


async def render(text: str, voice: str = VOICE) -> tuple[bytes, int]:
    """(16-bit mono PCM, sample rate) of `text` spoken by espeak-ng."""
    key = hashlib.sha256(f"{voice}|{WORDS_PER_MINUTE}|{text}".encode()).hexdigest()[:32]
    path = cache_dir() / f"{key}.wav"
    if not path.exists():
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise EspeakMissing("espeak-ng is not installed (apt-get install espeak-ng)")
        proc = await asyncio.create_subprocess_exec(
            exe, "-v", voice, "-s", str(WORDS_PER_MINUTE), "--stdout", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        if proc.returncode != 0 or not out:
            raise RuntimeError(f"espeak-ng failed on {text!r}: {err.decode(errors='replace')}")
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(out)
        tmp.replace(path)
    with wave.open(io.BytesIO(path.read_bytes())) as w:
        return w.readframes(w.getnframes()), w.getframerate()
