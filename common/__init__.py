"""Shared utilities for the MTL reference implementations: devices, data, models, metrics,
aggregators and the small training harness. Nothing here knows about a specific method."""
