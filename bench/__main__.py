"""`python -m bench [pure|probes|cache|scale|runner]...`: run benchmarks and print their numbers.

The scale benchmark reads BENCH_SCALE (NimService counts, default "100,300,1000"),
BENCH_IDLE_SECONDS (default 180) and BENCH_LATENCY_SAMPLES (default 20); the pod runner
benchmark BENCH_RUNNER_PODS (default 1000) and the other BENCH_RUNNER_* (see bench.runner); the
cache benchmark BENCH_DOWNLOAD_SECONDS (default 20).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from bench import cache, probes, pure, runner, scale

SUITES: dict[str, Callable[[], dict[str, float]]] = {
    "pure": pure.run,
    "probes": probes.run,
    "cache": cache.run,
    "scale": scale.run,
    "runner": runner.run,
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
            print(f"  {key:<60} {shown:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
