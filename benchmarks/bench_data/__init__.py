"""Generators of benchmark data in the official layouts (a library for the scripts beside it, not for tests)."""
