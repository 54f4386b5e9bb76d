"""What discovery's statistics cost: ``personamine.discovery.stats.compare`` at an SAE's full width.

    python benchmarks/discovery_stats.py            # F = 131,072, n = 32 per side, n_boot = 1000 (~1-2 min)
    python benchmarks/discovery_stats.py --quick    # F = 16,384

Two inputs, each paired and unpaired: every feature tested (dense random values, the worst case: every feature
gets a test and a bootstrap), and sparse codes with ``--active`` features > 0 per prompt (a BatchTopK SAE's k),
where only the features that fire somewhere are tested. For each it prints the wall and CPU seconds, and the peak
of numpy's allocations above the inputs (tracemalloc, which numpy reports to; BLAS's own scratch is not counted),
the figures ``personamine/discovery/stats.py`` states.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average  # noqa: E402

from personamine.discovery.stats import compare  # noqa: E402

MIB = 2**20


def dense(n: int, features: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return (rng.random((n, features), dtype=np.float32) + 0.1, rng.random((n, features), dtype=np.float32))


def sparse(n: int, features: int, active: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's code: ``active`` features > 0, drawn from a skewed popularity so some features recur."""
    popularity = rng.pareto(1.0, features) + 1e-3
    popularity /= popularity.sum()
    sides = []
    for _ in range(2):
        codes = np.zeros((n, features), dtype=np.float32)
        for row in codes:
            row[rng.choice(features, active, replace=False, p=popularity)] = rng.random(active) * 5
        sides.append(codes)
    return sides[0], sides[1]


def measure(a: np.ndarray, b: np.ndarray, paired: bool, n_boot: int, feature_chunk: int) -> dict[str, float]:
    tracemalloc.start()
    wall, cpu = time.perf_counter(), time.process_time()
    result = compare(a, b, paired=paired, n_boot=n_boot, feature_chunk=feature_chunk)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"wall": wall, "cpu": cpu, "peak_mib": peak / MIB, "tested": int(result.tested.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="F = 16,384 instead of 131,072")
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument("--prompts", type=int, default=32, help="prompts per side")
    parser.add_argument("--active", type=int, default=64, help="features > 0 per prompt in the sparse input")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--feature-chunk", type=int, default=4096)
    args = parser.parse_args()
    features = args.features or (16_384 if args.quick else 131_072)
    rng = np.random.default_rng(0)
    inputs = {"dense": dense(args.prompts, features, rng),
              "sparse": sparse(args.prompts, features, args.active, rng)}
    print(f"compare: F = {features:,}, n = {args.prompts} per side, n_boot = {args.n_boot}, "
          f"feature_chunk = {args.feature_chunk}; load average at start {load_average()}")
    print(f"{'input':8} {'paired':7} {'tested':>8} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    for name, (a, b) in inputs.items():
        for paired in (True, False):
            row = measure(a, b, paired, args.n_boot, args.feature_chunk)
            print(f"{name:8} {paired!s:7} {row['tested']:>8,} {row['wall']:>8.1f} {row['cpu']:>8.1f} "
                  f"{row['peak_mib']:>9.0f}")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
