"""Shared definitions for the campaign engine.

Workflows, activities and the control plane all import their models, settings and task
queues from here, so there is exactly one definition of each. It imports nothing of the
layers above it (activities, workflows, the control plane, the worker):
tests/shape/test_layering.py holds that.
"""
