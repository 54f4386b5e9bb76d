"""Several readouts in one forward against one run per readout and against the bare forward, on SmolLM2-135M-Instruct.

One process, one loaded model (truncated after the deepest layer), one leading shard of the text corpus at ctx 64,
the same batches for every phase, interleaved over ``--rounds`` rounds (each ratio is the median of its per-round
ratios, so other load on a shared machine hits the phases alike):

  bare      the early-stopped forward to the deepest layer (``capture_windows_at``) over the shard's batches: the
            limit for the combined run;
  combined  ``run_shard`` with k SAE readouts, one per layer (``--layers``, default 5,10,15,20,25), each mining
            ``--features`` features (default 20; ``all`` for every feature);
  singles   ``run_shard`` once per layer with that layer's readout alone, the engine truncated at that layer: the
            sum is what k separate runs cost;
  +dirs     the combined run plus a directions readout (``--directions`` random unit vectors) at each of two layers.

Goals (issue 25): combined >= 0.85x the bare forward's throughput; singles / combined >= 0.85x the ideal speed-up
(the sum of the layers' depths over the deepest's: 80/26 = 3.08x for 5,10,15,20,25). Memory: each readout's buffers
(top-k, interval samples, non-activating examples, per-document scores) after the shard, and the peak RSS of the
combined all-features run against one all-features readout alone (``--memory``; each in a fresh subprocess).

Each SAE is a random BatchTopK SAE in the dictionary_learning release layout, calibrated on the model's own
activations at its layer (speed, not meaning; the pre-flight is off).

    python benchmarks/mine_readouts.py              # ~10 min on 2 busy cores
    python benchmarks/mine_readouts.py --quick      # layers 5,15, one round
    python benchmarks/mine_readouts.py --memory     # also the all-features peak RSS, 1 vs k readouts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import (  # noqa: E402
    PeakMemory,
    default_corpus,
    load_average,
    machine,
    mib,
    offline,
    print_table,
    probe_batches,
    rss_bytes,
    scored_activations,
    today,
    write_calibrated_sae,
)

MODEL = "builtin:smollm2-135m-instruct"


def build(work: Path, layers: list[int], dict_size: int, tokens: int, n_directions: int):
    """(config, loaded model to the deepest layer, shard, batches, SAE release root, directions file)."""
    import torch

    from personamine.config import MineConfig
    from personamine.model.loading import find_decoder_layers, load_model

    deepest = max(layers)
    loaded = load_model(MODEL, deepest)
    config = MineConfig(model=MODEL, layer=deepest, corpus=default_corpus(), ctx_len=64, preflight_tokens=0,
                        progress=False, max_tokens=tokens)
    _, shard, batches = probe_batches(config, loaded, work, tokens)
    root = work / "saes"
    modules = find_decoder_layers(loaded.model)
    for layer in layers:
        if (root / f"resid_post_layer_{layer}" / "trainer_0" / "ae.pt").is_file():
            continue  # built by an earlier process (the memory cases measure mining alone)
        at = dataclasses.replace(loaded, layer=layer, layer_module=modules[layer])
        acts = scored_activations(at, batches, 10.0, int(np.clip(2**26 // dict_size, 256, 4096)))
        write_calibrated_sae(root, layer=layer, activation_dim=loaded.hidden_size, dict_size=dict_size, acts=acts,
                             seed=layer, lm_name=MODEL)
    vectors = torch.randn(n_directions, loaded.hidden_size, generator=torch.Generator().manual_seed(0)).numpy()
    np.save(work / "dirs.npy", vectors.astype(np.float32))
    return config, loaded, shard, batches, root, work / "dirs.npy"


def readout_specs(config, root: Path, layers: list[int], features, directions: Path | None,
                  direction_layers: list[int]):
    from personamine.files.directions import load_directions
    from personamine.shards.readouts import ReadoutSpec

    specs = []
    for layer in layers:
        single = config.replace(sae=str(root), layer=layer, features=features)
        specs.append(ReadoutSpec(f"L{layer}", layer, single, np.asarray(_feature_ids(features, root, layer))))
    if directions is not None:
        found = tuple(load_directions(directions))
        for layer in direction_layers:
            specs.append(ReadoutSpec(f"directions-L{layer}", layer, config.replace(layer=layer),
                                     np.arange(2 * len(found)), found, document_scores=True))
    return specs


def _feature_ids(features, root: Path, layer: int) -> np.ndarray:
    if features == "all":
        from personamine.config import MineConfig
        from personamine.saes import load_sae, sae_spec

        return np.arange(load_sae(sae_spec(MineConfig(sae=str(root), layer=layer))).d_sae)
    return np.asarray(features, np.int64)


def kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def buffer_bytes(part) -> dict[str, int]:
    out = {}
    for name, value in (("top-k", part.buffer), ("samples", part.samples), ("negatives", part.negatives),
                        ("documents", part.documents)):
        if value is not None:
            out[name] = int(sum(np.asarray(v).nbytes for v in value.arrays().values()))
    out["stats"] = int(sum(np.asarray(v).nbytes for v in part.stats.arrays().values()))
    return out


def memory_case(args: argparse.Namespace, n_readouts: int) -> dict:
    """Peak RSS of mining the shard with ``n_readouts`` all-features SAE readouts, in this (fresh) process, whose
    SAEs an earlier process built in ``args.work``."""
    offline()
    layers = [int(x) for x in args.layers.split(",")]
    config, loaded, shard, _, root, _ = build(Path(args.work), layers, args.dict_size, args.tokens, 1)
    before = rss_bytes()
    from personamine.shards.run import MiningEngine, run_shard

    with PeakMemory() as memory:
        engine = MiningEngine(config, readout_specs(config, root, layers[:n_readouts], "all", None, []), loaded)
        result = run_shard(engine, shard)
    return {"readouts": n_readouts, "peak": memory.peak, "before": before,
            "buffers": {name: sum(buffer_bytes(part).values()) for name, part in result.readouts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="5,10,15,20,25", help="SAE layers (default: 5,10,15,20,25)")
    parser.add_argument("--features", default="20", help="features per SAE: a count (the first N) or 'all'")
    parser.add_argument("--dict-size", type=int, default=4096, help="features per SAE (default: 4096)")
    parser.add_argument("--directions", type=int, default=8, help="random directions per directions readout")
    parser.add_argument("--tokens", type=int, default=12_000, help="corpus tokens mined per phase (default 12,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--quick", action="store_true", help="layers 5,15, 4,000 tokens, one round")
    parser.add_argument("--memory", action="store_true", help="also the all-features peak RSS, 1 vs k readouts")
    parser.add_argument("--memory-only", action="store_true", help="only the all-features peak RSS, 1 vs k readouts")
    parser.add_argument("--memory-case", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--work", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.layers, args.tokens, args.rounds = "5,15", 4000, 1
    if args.memory_case == 0:  # build the SAEs for the memory cases
        offline()
        build(Path(args.work), [int(x) for x in args.layers.split(",")], args.dict_size, args.tokens, 1)
        return
    if args.memory_case > 0:
        print(json.dumps(memory_case(args, args.memory_case)))
        return
    if args.memory_only:
        print(f"mine_readouts --memory-only: {today()}, {machine()}, load {load_average()}")
        report_memory(args)
        return
    offline()
    import torch

    from personamine.model.loading import find_decoder_layers
    from personamine.shards.run import MiningEngine, run_shard
    from personamine.shards.windows import capture_windows_at

    layers = [int(x) for x in args.layers.split(",")]
    features = "all" if args.features == "all" else list(range(int(args.features)))
    direction_layers = [layers[len(layers) // 2], layers[-1]]
    print(f"mine_readouts: {today()}, {machine()}, load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="personamine-readouts-") as tmp:
        config, loaded, shard, batches, root, dirs = build(Path(tmp), layers, args.dict_size, args.tokens,
                                                           args.directions)
        modules = find_decoder_layers(loaded.model)
        fed = sum(int(b.real.sum()) for b in batches)
        combined_engine = MiningEngine(config, readout_specs(config, root, layers, features, None, []), loaded)
        dirs_engine = MiningEngine(config, readout_specs(config, root, layers, features, dirs, direction_layers),
                                   loaded)
        # A single run's engine holds the model truncated at its layer: the capture stops there, so the same loaded
        # model serves (the layers after it never run).
        single_engines = [MiningEngine(config, readout_specs(config, root, [layer], features, None, []), loaded)
                          for layer in layers]
        seconds: dict[str, list[float]] = {k: [] for k in ("bare", "combined", "singles", "+dirs")}
        results = {}
        for r in range(args.rounds):
            began = time.perf_counter()
            with torch.inference_mode():
                for batch in batches:
                    capture_windows_at(loaded.model, {max(layers): modules[max(layers)]}, batch)
            seconds["bare"].append(time.perf_counter() - began)
            began = time.perf_counter()
            results["combined"] = run_shard(combined_engine, shard)
            seconds["combined"].append(time.perf_counter() - began)
            began = time.perf_counter()
            for engine in single_engines:
                run_shard(engine, shard)
            seconds["singles"].append(time.perf_counter() - began)
            began = time.perf_counter()
            results["+dirs"] = run_shard(dirs_engine, shard)
            seconds["+dirs"].append(time.perf_counter() - began)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)

    def median_ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(seconds[a], seconds[b], strict=True))

    ideal = sum(layer + 1 for layer in layers) / (max(layers) + 1)
    n_features = args.dict_size if features == "all" else len(features)
    print(f"\nlayers {layers}, {n_features:,} of {args.dict_size:,} features per SAE, {fed:,} fed tokens per phase, "
          f"{args.rounds} round(s); load {load_average()}\n")
    print_table(["phase", "median s", "tokens fed/s", "vs bare forward"], [
        [k, f"{statistics.median(v):.2f}", f"{fed / statistics.median(v):,.0f}",
         f"{median_ratio('bare', k):.2f}x" if k != "bare" else "1.00x"] for k, v in seconds.items()])
    speedup = median_ratio("singles", "combined")
    print(f"\nspeed-up of one combined run over {len(layers)} single runs: {speedup:.2f}x (ideal {ideal:.2f}x: "
          f"{speedup / ideal:.2f} of it); combined at {median_ratio('bare', 'combined'):.2f}x the bare forward's "
          f"throughput; adding {len(direction_layers)} directions readouts ({args.directions} directions each) costs "
          f"{median_ratio('+dirs', 'combined') - 1:+.1%}\n")
    print(f"buffers per readout after the shard, KiB ({fed:,} fed tokens):\n")
    print_table(["readout", "top-k", "samples", "negatives", "documents", "stats"], [
        [name, *(kib(buffer_bytes(part).get(k)) for k in ("top-k", "samples", "negatives", "documents", "stats"))]
        for name, part in results["+dirs"].readouts.items()])
    if args.memory:
        report_memory(args)


def report_memory(args: argparse.Namespace) -> None:
    """Peak RSS of the all-features run with one SAE readout and with all of them, each in a fresh process (the SAEs
    built first, in another)."""
    layers = [int(x) for x in args.layers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="personamine-readouts-mem-") as work:
        common = ["--layers", args.layers, "--dict-size", str(args.dict_size), "--tokens", str(args.tokens),
                  "--work", work]
        subprocess.run([sys.executable, __file__, "--memory-case", "0", *common], capture_output=True, text=True,
                       check=True)
        for n in (1, len(layers)):
            done = subprocess.run([sys.executable, __file__, "--memory-case", str(n), *common], capture_output=True,
                                  text=True, check=True)
            case = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append([n, mib(case["before"]), mib(case["peak"]), mib(case["peak"] - case["before"]),
                         ", ".join(f"{k} {kib(v)}" for k, v in case["buffers"].items())])
    print(f"\nall {args.dict_size:,} features per SAE readout, {args.tokens:,} tokens, RSS in a fresh process with the "
          f"model loaded; load {load_average()}:\n")
    print_table(["SAE readouts", "RSS before the engine", "peak while mining", "engine + mining",
                 "buffers after (KiB)"], rows)


if __name__ == "__main__":
    main()
