"""``personamine serve`` at 131,072 features: start-up, index pages (default order, sorted, filtered, deep), feature
pages, and the server's resident memory, over plain HTTP on the loopback address.

The file is synthetic, built by the tests' own builder (``fixtures.synthetic_results``) at an all-features run's
size: 131,072 features, top 20 windows of 64 tokens (the default mining shape), 2 interval samples per interval, and
an explanations file for every feature. The server runs as ``personamine serve`` in a child process (its RSS is
read from /proc, not mixed with this process's), without live inspection (the synthetic file has no model).
Each request is timed from sending it to reading the last byte; the first request of a sort or a filter computes
its order or mask, later ones reuse it, so both are shown.

    python benchmarks/serve_index.py                 # the full-size file (~2 min to build, ~5.5 GB peak)
    python benchmarks/serve_index.py --quick         # 131,072 features with top 8 windows of 16 tokens
    python benchmarks/serve_index.py --file big.h5 --explanations ex.h5   # reuse files built before
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, load_average, machine, mib, print_table, today  # noqa: E402

N_FEATURES = 131_072


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="top 8 windows of 16 tokens per feature (builds in ~10 s)")
    p.add_argument("--file", type=Path, default=None, help="a mining file to serve instead of building one")
    p.add_argument("--explanations", type=Path, default=None, help="its explanations file (built when --file is not "
                                                                   "given)")
    p.add_argument("--workdir", type=Path, default=None, help="where to build the files (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=5, help="requests per cached measurement (default: 5)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def build(workdir: Path, quick: bool) -> tuple[Path, Path]:
    import numpy as np
    from fixtures import synthetic_explanations, synthetic_results

    shape = dict(top_k=8, ctx_len=16, per_interval=1, windows_per_feature=9) if quick else dict(
        top_k=20, ctx_len=64, per_interval=2, windows_per_feature=21)
    began = time.perf_counter()
    path = synthetic_results(workdir / "big.h5", N_FEATURES, feature_ids=np.arange(N_FEATURES), seed=1, **shape)
    ex = synthetic_explanations(workdir / "ex.h5", np.arange(N_FEATURES))
    print(f"built {path} ({path.stat().st_size / 1e6:,.0f} MB, {shape}) and {ex.name} in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    return path, ex


def status_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def timed_get(host: str, port: int, target: str) -> tuple[float, int, int]:
    """(seconds, status, bytes) of one GET, connection included."""
    began = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("GET", target)
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - began
    conn.close()
    return took, response.status, len(body)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"# personamine serve at {N_FEATURES:,} features ({today()}; {machine()}; load {load_average()})",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="personamine-serve-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.file is None:
            path, ex = build(workdir, args.quick)
        else:
            path, ex = args.file, args.explanations
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, "-m", "personamine.jobs.cli", "serve", str(path), "--port", "0", "--no-inspect"]
        if ex is not None:
            command += ["--explanations", str(ex)]
        began = time.perf_counter()
        server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = server.stdout.readline()
            startup = time.perf_counter() - began
            url = line.split(" at ")[1].split()[0]
            host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
            port = int(port)
            after_start = status_of(server.pid)
            figures = run_requests(host, port, args.repeat)
            after_requests = status_of(server.pid)
        finally:
            server.send_signal(2)  # SIGINT: the server stops as on Ctrl-C
            server.wait(timeout=60)
    rows = [[name, f"{first * 1e3:,.0f}", f"{cached * 1e3:,.0f}", f"{size / 1e3:,.0f}"]
            for name, first, cached, size in figures]
    print(f"\nstart-up (process start to address printed, index built): {startup:.1f} s")
    print_table(["request", "first (ms)", "median after (ms)", "response (kB)"], rows)
    print(f"\nserver RSS after start-up {mib(after_start['VmRSS'])} MiB; after the requests above "
          f"{mib(after_requests['VmRSS'])} MiB (peak {mib(after_requests['VmHWM'])} MiB); load {load_average()}")
    if args.json:
        args.json.write_text(json.dumps({"startup_s": startup, "rss_start": after_start,
                                         "rss_after": after_requests, "requests": figures}, indent=1))


def run_requests(host: str, port: int, repeat: int) -> list[tuple[str, float, float, int]]:
    """Each request once (first), then ``repeat`` more times (median)."""
    cases = [
        ("index page 1 (HTML)", "/"),
        ("index page 1 (JSON)", "/api/index"),
        ("index page 2,000 of 2,622", "/api/index?page=2000"),
        ("sort by max, largest first", "/?sort=max&dir=desc"),
        ("sort by density, smallest first", "/?sort=density&dir=asc"),
        ("sort by detection bal. acc.", "/?sort=detection_balanced_accuracy&dir=desc"),
        ("sort by top token (text)", "/?sort=top_token&dir=asc"),
        ("sort by max, page 1,000", "/?sort=max&dir=desc&page=1000"),
        ("filter by id", "/?q=77777"),
        ("filter by top-token text", "/?q=eta"),
        ("filter by explanation text", "/?q=Assistant+speaking"),
        ("filter + sort", "/?q=eta&sort=mean&dir=desc"),
        ("500 rows", "/?n=500&sort=max&dir=desc"),
    ]
    out = []
    for name, target in cases:
        first, status, size = timed_get(host, port, target)
        assert status == 200, (target, status)
        again = [timed_get(host, port, target)[0] for _ in range(repeat)]
        out.append((name, first, statistics.median(again), size))
    # Feature pages: each feature read from the file on its own (read_results(features=[id])), never cached.
    import random

    picks = random.Random(0).sample(range(N_FEATURES), repeat + 1)
    for name, prefix in (("feature page (HTML)", "/feature/0/"), ("feature data (JSON)", "/api/feature/0/")):
        times = []
        for fid in picks:
            took, status, size = timed_get(host, port, f"{prefix}{fid}")
            assert status == 200, (fid, status)
            times.append(took)
        out.append((name, times[0], statistics.median(times[1:]), size))
    return out


if __name__ == "__main__":
    main()
