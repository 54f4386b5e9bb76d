"""What the non-finite checks cost: mining with the activation check as shipped against the same run with it
patched out, in the same process, interleaved rounds; and the two checks alone against what they check.

    python benchmarks/nonfinite_cost.py            # 16k tokens of the default corpus, 5 rounds (~5 min idle)
    python benchmarks/nonfinite_cost.py --quick    # 8k tokens, 3 rounds (~2 min idle, 6 at load 4)

1. Mining (``run_shard``, SmolLM2-135M-Instruct layer 10, ctx 64): 20 targeted features of a 4,096-feature SAE, and
   all features of an 8,192-feature SAE (random BatchTopK SAEs calibrated on the model's own activations, as in
   ``mine_throughput.py``). Each round runs both variants of both settings, the order alternating each round; the
   ratio is the median of the per-round ratios (checked / unchecked tokens per second).
   Besides tokens per second (wall) it prints the runs' CPU seconds (less sensitive to other jobs on a shared box)
   and the share of a checked run's own wall time spent inside the check (timed around each call: a ratio within
   one run, which outside load cannot skew).
2. One encoded block ([2,048 tokens, features]) at d = 576: the shipped check (``isfinite(acts.sum())``) and
   ``isfinite(acts).all()`` against the encode that produced the block (a bound without the forward, which
   dominates real runs).
3. The weight check: reading every encoder row of the 8,192-feature SAE as fp32 (``Matrix.rows``) with and without
   its ``isfinite`` reduction.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_MODEL,
    Timer,
    calibrated_sae,
    default_corpus,
    load_average,
    machine,
    print_table,
    probe_batches,
    today,
)


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layer", type=int, default=10)
    parser.add_argument("--corpus", default=None, help="default: WikiText-2 validation if present, else built-in")
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.rounds = 8192, 3
    from _common import offline

    offline()
    import torch

    from personamine.config import MineConfig
    from personamine.jobs.train_sae import dictionary_learning_trainers
    from personamine.model.loading import load_model
    from personamine.saes import load_sae
    from personamine.shards import run as run_module
    from personamine.shards.run import MiningEngine, run_shard

    dictionary_learning_trainers()  # the calibrated SAEs are built with it (its __init__ needs nnsight)
    print(f"# nonfinite_cost  {today()}  {machine()}  load avg {load_average()}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="personamine-bench-")
    workdir = Path(tmp.name)
    loaded = load_model(args.model, args.layer)
    config = MineConfig(model=args.model, layer=args.layer, corpus=args.corpus or default_corpus(), ctx_len=64,
                        progress=False, preflight_tokens=0)
    _, shard, batches = probe_batches(config, loaded, workdir, args.tokens)
    saes = {size: str(calibrated_sae(workdir, loaded, batches, layer=args.layer, dict_size=size))
            for size in (4096, 8192)}
    features = np.sort(np.random.default_rng(0).choice(4096, 20, replace=False)).astype(np.int64)
    engines = {"20 of 4,096 features": MiningEngine(config.replace(sae=saes[4096], features=features.tolist()),
                                                    features, loaded),
               "all 8,192 features": MiningEngine(config.replace(sae=saes[8192], features="all"),
                                                  np.arange(8192, dtype=np.int64), loaded)}

    # 1. whole mining runs, checked and unchecked
    rates: dict[tuple[str, str], list[float]] = {(k, v): [] for k in engines for v in ("checked", "unchecked")}
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in rates}
    share: dict[str, list[float]] = {k: [] for k in engines}  # of a checked run's wall time, spent in the check
    spent = {"s": 0.0, "n": 0}
    shipped = run_module.all_finite

    def timed(acts):
        t0 = time.perf_counter()
        try:
            return shipped(acts)
        finally:
            spent["s"] += time.perf_counter() - t0
            spent["n"] += 1

    steps = [(k, v) for k in engines for v in ("checked", "unchecked")]
    run_shard(engines["20 of 4,096 features"], shard)  # warm-up
    for r in range(args.rounds):
        for key, variant in (steps if r % 2 == 0 else steps[::-1]):
            check = timed if variant == "checked" else (lambda acts: True)
            spent["s"] = 0.0
            with mock.patch.object(run_module, "all_finite", check), Timer(loaded.device) as timer:
                result = run_shard(engines[key], shard)
            rates[(key, variant)].append(result.stats.counters["tokens_fed"] / timer.wall)
            cpu[(key, variant)].append(timer.cpu)
            if variant == "checked":
                share[key].append(spent["s"] / timer.wall)
            print(f"  round {r + 1}/{args.rounds} {key}, {variant}: {timer.wall:6.1f} s wall, {timer.cpu:6.1f} s CPU",
                  flush=True)
    fed = result.stats.counters["tokens_fed"]
    rows = []
    summary: dict = {"date": today(), "machine": machine(), "load_average": load_average(), "tokens_fed": fed}
    for key in engines:
        wall = statistics.median(c / u for c, u in zip(rates[(key, "checked")], rates[(key, "unchecked")],
                                                       strict=True))
        cpu_ratio = statistics.median(c / u for c, u in zip(cpu[(key, "checked")], cpu[(key, "unchecked")],
                                                            strict=True))
        summary[key] = {"throughput_ratio": wall, "cpu_ratio": cpu_ratio, "check_share": statistics.median(share[key])}
        rows.append([key, f"{statistics.median(rates[(key, 'unchecked')]):,.0f}",
                     f"{statistics.median(rates[(key, 'checked')]):,.0f}", f"{wall:.3f}", f"{cpu_ratio:.3f}",
                     f"{statistics.median(share[key]):.3%}"])
    print(f"\n## Mining, {fed:,} tokens fed per run, {args.rounds} rounds, median shown ({loaded.dtype} on "
          f"{loaded.device}; {spent['n'] // max(1, args.rounds * len(engines)):,} checked blocks per run)")
    print_table(["setting", "unchecked tokens/s", "checked tokens/s", "throughput checked / unchecked",
                 "CPU s checked / unchecked", "wall share in the check"], rows)

    # 2. one encoded block: the reduction against the encode
    x = torch.randn(2048, loaded.hidden_size, generator=torch.Generator().manual_seed(1))
    block_rows = []
    with torch.inference_mode():
        for key, engine in engines.items():
            encoder = engine.encoder
            encode = best_of(lambda e=encoder: [a for _, _, a in e.iter_encode(x)])
            blocks = [a.clone() for _, _, a in encoder.iter_encode(x)]
            check = best_of(lambda b=blocks: [shipped(a) for a in b])
            elementwise = best_of(lambda b=blocks: [bool(torch.isfinite(a).all()) for a in b])
            block_rows.append([key, f"{encode * 1e3:.2f}", f"{check * 1e3:.3f}", f"{check / encode:.4f}",
                               f"{elementwise * 1e3:.3f}", f"{elementwise / encode:.4f}"])
            summary[f"block {key}"] = {"sum": check / encode, "isfinite_all": elementwise / encode}
    print(f"\n## One batch of 2,048 tokens, d = {loaded.hidden_size}: the check alone (best of 5)")
    print_table(["setting", "encode ms", "sum check ms", "sum / encode", "isfinite().all() ms",
                 "isfinite().all() / encode"], block_rows)

    # 3. the weight check on every encoder row read
    sae = load_sae(saes[8192], layer=args.layer)
    everything = torch.arange(sae.d_sae)
    with_check = best_of(lambda: sae.enc.rows(everything))
    plain = best_of(lambda: sae.enc.tensor.index_select(0, everything).to(torch.float32).contiguous())
    summary["weights"] = with_check / plain
    print(f"\n## Reading all {sae.d_sae:,} encoder rows as fp32: {plain * 1e3:.1f} ms plain, {with_check * 1e3:.1f} ms "
          f"checked ({with_check / plain:.3f}x)")
    print(f"\nload avg at the end {load_average()}")
    tmp.cleanup()
    return summary


if __name__ == "__main__":
    main()
