"""A hotel front desk: a user's own livekit-agents agent, for tests/test_byo.py."""
