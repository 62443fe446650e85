"""Metrics, split evaluation, the block × timestep sweep, cross-validation, bootstrap intervals, recipe search."""
