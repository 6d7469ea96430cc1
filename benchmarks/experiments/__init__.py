"""Experiments: scripts that train and measure, printing tables (not timed tests)."""
