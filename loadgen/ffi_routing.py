"""Per-handle routing of livekit.rtc FFI events, for processes that host many callers.

Stock livekit.rtc 1.1.21 hands every FFI event to every subscriber: each AudioStream gets every
other stream's frames (its filter checks the event type, not the stream), and each in-flight
AudioSource.capture_frame() gets everything while it waits for its own callback. With N callers
in a process that is N^2 wake-ups and Python filter calls per frame period, under the GIL, on the
SDK's callback threads. This routes
  * audio_stream_event   -> the one AudioStream that owns the stream handle,
  * capture_audio_frame  -> the one capture_frame() waiting for that async id,
and leaves every other event on the SDK's broadcast path.

It reaches into the SDK's private names, so it installs only on the exact versions it was
written and tested against (SUPPORTED); on any other version `install()` does nothing and says
so, and the stock dispatch runs. tests/test_loadgen.py checks both the routing and the refusal.
Install after fork (it creates the FFI client), before the first AudioStream or AudioSource.
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import time
from typing import Any

SUPPORTED = ("1.1.21",)
log = logging.getLogger("lkrig.loadgen")

_installed = False


def install() -> bool:
    """Routes stream and capture events by handle; False (and stock behaviour) if unsupported."""
    global _installed
    from livekit import rtc

    if _installed:
        return True
    if rtc.__version__ not in SUPPORTED:
        log.warning("livekit.rtc %s: FFI event routing is written for %s only; using the stock "
                    "dispatch (fewer callers per driver fit)", rtc.__version__, ", ".join(SUPPORTED))
        return False
    from livekit.rtc import _ffi_client as ffi
    from livekit.rtc import audio_source, audio_stream
    from livekit.rtc._proto import ffi_pb2 as proto_ffi

    queue = ffi.FfiClient.instance.queue  # creates the FFI client: after any fork
    lock = _thread.allocate_lock()  # a real lock even if someone patched threading
    streams: dict[int, tuple[Any, asyncio.AbstractEventLoop]] = {}  # stream handle -> its queue
    waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}  # async id
    early: dict[int, Any] = {}  # callbacks that beat their waiter (kept until it arrives)
    abandoned: set[int] = set()  # waiters that were cancelled: drop their callbacks
    broadcast = queue.put

    def put(event: Any) -> None:  # runs on the SDK's callback threads
        which = event.WhichOneof("message")
        if which == "audio_stream_event":
            with lock:
                route = streams.get(event.audio_stream_event.stream_handle)
            if route is not None:
                q, loop = route
                try:
                    loop.call_soon_threadsafe(q.put_nowait, event)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    pass
                return
        elif which == "capture_audio_frame":
            aid = event.capture_audio_frame.async_id
            with lock:
                waiter = waiters.pop(aid, None)
                if waiter is None:
                    if aid in abandoned:
                        abandoned.discard(aid)
                    else:
                        early[aid] = event
                    return
            loop, fut = waiter
            try:
                loop.call_soon_threadsafe(_resolve, fut, event)
            except RuntimeError:
                pass
            return
        broadcast(event)

    queue.put = put  # instance attribute: FfiClient's callback calls queue.put(event)

    stock_unsubscribe = queue.unsubscribe

    def unsubscribe(q: Any) -> None:
        with lock:
            for handle, (routed, _loop) in list(streams.items()):
                if routed is q:
                    del streams[handle]
        stock_unsubscribe(q)

    queue.unsubscribe = unsubscribe

    stock_stream_init = audio_stream.AudioStream.__init__

    def stream_init(self: Any, *args: Any, **kwargs: Any) -> None:
        stock_stream_init(self, *args, **kwargs)
        # Move this stream's subscription from the broadcast list to the router. Both moves
        # happen under the SDK's queue lock, which put() holds while broadcasting: no event
        # is lost or delivered twice.
        with queue._lock:
            for i, (q, loop, _filter) in enumerate(queue._subscribers):
                if q is self._ffi_queue:
                    queue._subscribers.pop(i)
                    with lock:
                        streams[self._ffi_handle.handle] = (q, loop)
                    break

    audio_stream.AudioStream.__init__ = stream_init  # type: ignore[method-assign]

    async def capture_frame(self: Any, frame: Any) -> None:
        # livekit.rtc 1.1.21 AudioSource.capture_frame, with the callback routed by async id
        # instead of an unfiltered subscription to every FFI event.
        if frame.samples_per_channel == 0 or self._ffi_handle.disposed:
            return
        now = time.monotonic()
        elapsed = 0.0 if self._last_capture == 0.0 else now - self._last_capture
        self._q_size += frame.samples_per_channel / self.sample_rate - elapsed
        self._last_capture = now
        if self._join_handle:
            self._join_handle.cancel()
        if self._join_fut is None:
            self._join_fut = self._loop.create_future()
        self._join_handle = self._loop.call_later(self._q_size, self._release_waiter)

        req = proto_ffi.FfiRequest()
        req.capture_audio_frame.source_handle = self._ffi_handle.handle
        req.capture_audio_frame.buffer.CopyFrom(frame._proto_info())
        resp = ffi.FfiClient.instance.request(req)
        aid = resp.capture_audio_frame.async_id
        with lock:
            cb = early.pop(aid, None)
            if cb is None:
                fut = self._loop.create_future()
                waiters[aid] = (self._loop, fut)
        if cb is None:
            try:
                cb = await fut
            except asyncio.CancelledError:
                with lock:
                    if waiters.pop(aid, None) is not None:
                        abandoned.add(aid)
                raise
        if cb.capture_audio_frame.error:
            raise Exception(cb.capture_audio_frame.error)

    audio_source.AudioSource.capture_frame = capture_frame  # type: ignore[method-assign]
    _installed = True
    return True


def _resolve(fut: asyncio.Future[Any], event: Any) -> None:
    if not fut.done():
        fut.set_result(event)
