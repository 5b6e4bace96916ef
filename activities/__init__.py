"""Operational agents: one Temporal activity per agent, grouped by task queue."""
