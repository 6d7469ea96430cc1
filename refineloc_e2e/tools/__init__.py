"""End-to-end tools over the library: the demo, its generated dataset, and installation checks."""
