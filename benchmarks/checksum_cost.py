"""What the output file's checksums cost: write time, read time and size with Fletcher-32 on every array dataset,
against the same file written without it, in the same run.

    python benchmarks/checksum_cost.py             # 2,000 features x top 20 x ctx 64, 5 rounds
    python benchmarks/checksum_cost.py --quick     # 300 features, 3 rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, print_table, today  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.features, args.rounds = 300, 3
    from unittest import mock

    import h5py
    from fixtures import synthetic_results

    import personamine
    from personamine.files import mine as hdf5  # patched where the writer looks the name up

    plain_dataset = hdf5.dataset

    def without_checksum(group, name, data=None, *, shape=None, dtype=None, packed=False):
        import numpy as np

        if data is not None:
            data = np.asarray(data)
            shape, dtype = data.shape, data.dtype
        options = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if packed else {}
        return group.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=True, **options)

    print(f"checksum_cost: {today()}, {machine()}, load {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="personamine-checksum-"))
    times: dict[str, list[float]] = {"fletcher32": [], "none": []}
    reads: dict[str, list[float]] = {"fletcher32": [], "none": []}
    sizes: dict[str, int] = {}
    for r in range(args.rounds):
        for label in (("fletcher32", "none") if r % 2 == 0 else ("none", "fletcher32")):
            path = work / f"{label}.h5"
            patch = mock.patch.object(hdf5, "dataset", plain_dataset if label == "fletcher32" else without_checksum)
            with patch:
                began = time.perf_counter()
                synthetic_results(path, args.features, windows_per_feature=40)
                times[label].append(time.perf_counter() - began)
            began = time.perf_counter()
            personamine.read_results(path)
            reads[label].append(time.perf_counter() - began)
            sizes[label] = path.stat().st_size
            with h5py.File(path) as f:
                assert bool(f["top/score"].fletcher32) == (label == "fletcher32")
    rows = [[label, f"{statistics.median(times[label]):.2f}", f"{statistics.median(reads[label]):.2f}",
             f"{sizes[label] / 2**20:.2f}"] for label in ("none", "fletcher32")]
    print(f"\n{args.features:,} features, top 20 of ctx 64, interval samples, logit lens; median of {args.rounds}")
    print_table(["checksum", "build + write s", "read s", "size MiB"], rows)
    w = statistics.median(times["fletcher32"]) / statistics.median(times["none"])
    rd = statistics.median(reads["fletcher32"]) / statistics.median(reads["none"])
    print(f"fletcher32 / none: write {w:.3f}x, read {rd:.3f}x, size {sizes['fletcher32'] / sizes['none']:.4f}x "
          f"(+{sizes['fletcher32'] - sizes['none']:,} bytes)")


if __name__ == "__main__":
    main()
