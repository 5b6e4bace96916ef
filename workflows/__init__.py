"""Orchestrators: deterministic Temporal workflows that carry ids and counters only."""
