"""What a seeded chaos run on Ray costs: the chaos test's run against the same run undisturbed on the same cluster.

    python benchmarks/chaos_overhead.py              # 3 rounds (~4 min on 2 cores)
    python benchmarks/chaos_overhead.py --rounds 1

Each round runs ``tests/cluster/test_ray_chaos.py`` (a real local multi-node Ray cluster: four actor kills mid-shard
at seeded places, the driver SIGKILLed and restarted, a worker node removed; the output byte-identical to an
undisturbed local run) and reads the line it prints: the chaos run's seconds, the undisturbed cluster run's, and the
undisturbed local run's, all measured in that one process. It prints each round and the median ratio.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, today  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"chaos run \(seed (\d+)\): .*: ([\d.]+) s; the same run undisturbed on the cluster ([\d.]+) s "
                  r"\(([\d.]+)x\); undisturbed local run ([\d.]+) s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="chaos runs (default: 3)")
    args = parser.parse_args()
    print(f"chaos_overhead: {today()}, {machine()}, load {load_average()}")
    ratios = []
    for r in range(args.rounds):
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                              "tests/cluster/test_ray_chaos.py"], cwd=REPO, capture_output=True, text=True)
        found = LINE.search(run.stdout)
        if run.returncode != 0 or found is None:
            sys.exit(f"round {r + 1}: the chaos test failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}")
        seed, chaos, calm, ratio, local = found.groups()
        ratios.append(float(ratio))
        print(f"round {r + 1} (seed {seed}): chaos {float(chaos):.1f} s, undisturbed on the cluster "
              f"{float(calm):.1f} s ({float(ratio):.2f}x), undisturbed local {float(local):.1f} s")
    print(f"median overhead of the chaos run: {statistics.median(ratios):.2f}x the undisturbed cluster run; "
          f"load {load_average()}")


if __name__ == "__main__":
    main()
