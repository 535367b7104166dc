"""Load generator: Locust users that are real WebRTC callers.

Nothing here starts media at import time: Locust forks its worker processes after importing the
locustfile, and the callers' media runs in separate processes (loadgen/driver.py and its media
engine, loadgen/media.py).
"""
