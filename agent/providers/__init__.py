"""Scripted STT, LLM and TTS with injected latency (the default), or real providers."""
