"""Load generator: the real WebRTC caller client and (later) the Locust users that wrap it.

Nothing here touches the livekit FFI at import time: Locust forks its worker processes after
importing the locustfile, and livekit.rtc refuses to cross a fork().
"""
