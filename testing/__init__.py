"""Test and benchmark support: not part of the product, not in the wheel.

Used by both ``tests/`` and ``benchmarks/`` (which may not import each other's modules), from a checkout: pytest
puts the repository root on ``sys.path`` (``pythonpath = .`` in setup.cfg), and ``python -m benchmarks...`` run
from the root has it there already.

- ``videos``: small generated videos with a known answer (moving textures);
- ``fuzz``: the seeded fuzz corpus of small, broken and odd videos;
- ``faults``: fault hooks a test passes into a Ray batch (``extract_batch_ray(before_extract=...)``);
- ``proc_scan``: which processes of a run are alive (a marker in their environment);
- ``wstal_bench``: the generated feature-level weakly-supervised localisation benchmark set.
"""
