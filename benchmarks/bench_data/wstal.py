"""Write the generated weakly-supervised localisation set (``testing.wstal_bench``) to a folder:
``OUT_DIR/features/`` in the feature-cache format and ``OUT_DIR/annotations.json``.

    python -m benchmarks.bench_data.wstal OUT_DIR [--train 90 --test 60] [--layout thumos14]

Its linear-probe check: ``python -m benchmarks.experiments.wstal_probe OUT_DIR``.
"""

from __future__ import annotations

import argparse

from testing.wstal_bench import BenchSpec, write_benchmark, write_thumos14_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=BenchSpec.n_train)
    ap.add_argument("--test", type=int, default=BenchSpec.n_test)
    ap.add_argument("--min-snippets", type=int, default=BenchSpec.min_snippets)
    ap.add_argument("--max-snippets", type=int, default=BenchSpec.max_snippets)
    ap.add_argument("--classes", type=int, default=BenchSpec.n_classes)
    ap.add_argument("--layout", choices=["generated", "thumos14"], default="generated",
                    help="thumos14: the real THUMOS'14 videos' durations and instances (~65k training snippets)")
    a = ap.parse_args()
    spec = BenchSpec(n_train=a.train, n_test=a.test, min_snippets=a.min_snippets, max_snippets=a.max_snippets,
                     n_classes=a.classes)
    ann = (write_thumos14_layout if a.layout == "thumos14" else write_benchmark)(a.out_dir, spec)
    print(f"wrote {ann}")


if __name__ == "__main__":
    main()
