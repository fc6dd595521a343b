"""`python -m bench [pure|probes|scale]...`: run benchmarks and print their numbers.

BENCH_SCALE sets how many NimServices the scale benchmark creates (default 100).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from bench import probes, pure, scale

SUITES: dict[str, Callable[[], dict[str, float]]] = {
    "pure": pure.run,
    "probes": probes.run,
    "scale": lambda: scale.run(count=int(os.environ.get("BENCH_SCALE", "100"))),
}


def main(argv: list[str]) -> int:
    chosen = argv or list(SUITES)
    unknown = [name for name in chosen if name not in SUITES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(SUITES)}", file=sys.stderr)
        return 2
    for name in chosen:
        start = time.monotonic()
        results = SUITES[name]()
        print(f"\n== {name} ({time.monotonic() - start:.0f}s)")
        for key, value in results.items():
            shown = f"{value:.3f}" if isinstance(value, float) and value < 10 else f"{value:.0f}"
            print(f"  {key:<48} {shown:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
