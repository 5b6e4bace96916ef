"""Shared definitions for the campaign engine.

Workflows, activities and the control plane all import their models, settings and
the registry from here, so there is exactly one definition of each.
"""
