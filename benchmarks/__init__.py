"""Benchmarks and experiments over the refineloc_e2e library (run as ``python -m benchmarks.<kind>.<name>``)."""
