"""The rig's livekit-agents worker: scenario agents with scripted STT/LLM/TTS."""
