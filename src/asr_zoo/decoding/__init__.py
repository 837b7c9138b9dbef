"""Decoders: pure functions over model outputs (no Lightning)."""
