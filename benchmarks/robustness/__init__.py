"""Robustness runs: broken inputs through the real commands (not timed tests)."""
