"""Speed benchmarks: scripts that print figures side by side (run on demand, never timed tests)."""
