"""Peak memory of what personamine loads, each case in a fresh subprocess (Linux ``VmHWM``).

  model   the full model (``AutoModelForCausalLM``, every layer, as the seed loaded it) vs personamine's
          ``load_model`` (layers 0..L only);
  sae     an SAE file read whole (``torch.load``, and ``BatchTopKSAE.from_pretrained`` as the seed did) vs
          ``Sae.encoder`` reading only the targeted encoder rows through mmap (and all rows, for comparison);
  mining  ``features="all"`` on a large random, calibrated SAE: the peak of ``run_shard`` over the leading
          ``--mining-tokens`` of the corpus (one ``Shard``) and of a whole ``personamine.mine`` run with the same
          budget (64 KiB units, so it runs several shards: checkpoints, merge, HDF5), with the sizes of the
          buffers that make them up.

    python benchmarks/memory.py            # model + sae (1.07 GB synthetic SAE) + mining (131,072 features)
    python benchmarks/memory.py --quick    # model + sae (151 MB synthetic SAE), no mining section
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_MODEL,
    PeakMemory,
    calibrated_sae,
    default_corpus,
    leading_shard,
    load_average,
    machine,
    mib,
    offline,
    peak_rss_bytes,
    print_table,
    probe_batches,
    rss_bytes,
    today,
)

MINE_UNIT_BYTES = 1 << 16  # units of the whole-run case: WikiText's first 20k tokens span 2 of them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default=None, help="comma list of model,sae,mining (full: all; quick: model,sae)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--sae-dict", type=int, default=None, help="synthetic SAE features (full 131,072; quick 32,768)")
    p.add_argument("--sae-dim", type=int, default=None, help="synthetic SAE width (full 1,024; quick 576)")
    p.add_argument("--features", type=int, default=20, help="targeted features")
    p.add_argument("--mining-dict", type=int, default=131072, help="SAE size for the all-features mining section")
    p.add_argument("--mining-tokens", type=int, default=20000)
    p.add_argument("--corpus", default=None)
    p.add_argument("--workdir", default=None, help="keep the synthetic SAEs here (reused when present)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sections = (args.sections or ("model,sae" if args.quick else "model,sae,mining")).split(",")
    args.sae_dict = args.sae_dict or (32768 if args.quick else 131072)
    args.sae_dim = args.sae_dim or (576 if args.quick else 1024)
    args.corpus = args.corpus or default_corpus()
    return args


# ---------------------------------------------------------------------------------------------------------------
# children: each loads one thing and reports its peak
# ---------------------------------------------------------------------------------------------------------------
def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch  # noqa: F401  (imported before the baseline so only the load itself is measured)
    import transformers  # noqa: F401

    from personamine.model.loading import load_model, resolve_model_source
    from personamine.saes import load_sae

    base = rss_bytes()
    out: dict = {"baseline": base}
    t0 = time.perf_counter()
    if args.child == "imports":
        pass
    elif args.child in ("model-full", "model-truncated"):
        if args.child == "model-full":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(resolve_model_source(args.model), dtype=torch.float32)
        else:
            model = load_model(args.model, args.layer, dtype="float32", device="cpu").model
        out["params"] = sum(p.numel() for p in model.parameters())
        out["loaded_peak"] = peak_rss_bytes()
        # Weights may still be mmap'd pages of the checkpoint that nothing has read yet; reading every parameter
        # once gives what using the model (or copying it to a GPU) keeps resident.
        for param in model.parameters():
            param.detach().sum()
    elif args.child == "sae-torch-load":
        state = torch.load(args.path, map_location="cpu", weights_only=True)
        out["bytes"] = sum(t.numel() * t.element_size() for t in state.values())
    elif args.child == "sae-from-pretrained":
        from personamine.jobs.train_sae import dictionary_learning_trainers

        sae = dictionary_learning_trainers().BatchTopKSAE.from_pretrained(args.path)
        out["bytes"] = sum(p.numel() * p.element_size() for p in sae.state_dict().values())
    elif args.child in ("sae-encoder-targeted", "sae-encoder-all"):
        dict_size = int(torch.load(args.path, mmap=True, weights_only=True)["encoder.bias"].shape[0])
        rng = np.random.default_rng(0)
        features = (np.sort(rng.choice(dict_size, args.features, replace=False)) if args.child.endswith("targeted")
                    else np.arange(dict_size))
        encoder = load_sae(args.path).encoder(features, device=torch.device("cpu"))
        out["bytes"] = encoder.nbytes
    elif args.child in ("mining-run-shard", "mining-mine"):
        out.update(_mining_child(args))
    else:
        raise SystemExit(f"unknown child {args.child}")
    out["seconds"] = time.perf_counter() - t0
    out["peak"] = peak_rss_bytes()
    return out


def _mining_child(args: argparse.Namespace) -> dict:
    import numpy as np

    import personamine
    from personamine.config import MineConfig
    from personamine.corpus import open_manifest
    from personamine.jobs.mine import corpus_spec
    from personamine.shards.run import MiningEngine, run_shard

    work = Path(args.path)
    sae = str(work / f"sae-{args.mining_dict}")
    cfg = MineConfig(model=args.model, layer=args.layer, sae=sae, corpus=args.corpus, features="all",
                     max_tokens=args.mining_tokens, progress=False, output=str(work / "mine-all.h5"),
                     work_dir=str(work / "mine-all.work"), allow_low_fve=True)  # a random SAE explains little
    if args.child == "mining-mine":
        import shutil

        # Small units, so that the token budget spans several shards: each checkpointed, then merged.
        cfg = cfg.replace(unit_bytes=MINE_UNIT_BYTES, keep_work_dir=True)
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
        with PeakMemory() as mem:
            path = personamine.mine(cfg)
        checkpoints = list(Path(cfg.work_dir).glob("*.npz"))
        return {"rss_growth": mem.peak - mem.start, "output_bytes": path.stat().st_size,
                "checkpoint_bytes": sum(p.stat().st_size for p in checkpoints), "pieces": len(checkpoints)}
    engine = MiningEngine(cfg, np.arange(args.mining_dict))
    shard = leading_shard(engine, open_manifest(corpus_spec(cfg)), args.mining_tokens)
    loaded_rss = rss_bytes()
    with PeakMemory() as mem:
        result = run_shard(engine, shard)
    sizes = {name: {k: int(v.nbytes) for k, v in buffer.arrays().items()}
             for name, buffer in (("buffer", result.buffer), ("samples", result.samples),
                                  ("negatives", result.negatives)) if buffer is not None}
    stats = {k: int(getattr(result.stats, k).nbytes)
             for k in ("active_tokens", "sum_whole", "sum_frac", "max", "histogram", "role_active")}
    entries = result.buffer.entries
    n_features, top_k, width = result.buffer.shape
    return {
        "loaded_rss": loaded_rss, "run_peak": mem.peak, "run_growth": mem.peak - loaded_rss,
        "encoder_bytes": engine.encoder.nbytes, "buffer_bytes": sizes["buffer"],
        "samples_bytes": sizes.get("samples", {}), "negatives_bytes": sizes.get("negatives", {}),
        "stats_bytes": stats, "tokens_fed": result.stats.counters["tokens_fed"],
        "n_windows": result.stats.counters["n_windows"], "entries": len(entries),
        "distinct_windows": len(entries.windows), "nonzero_activations": int(entries.acts.value.size),
        "activation_cells": len(entries) * width, "run_seconds": result.seconds, "span": width,
        # The layout before entries were compact: every slot of [F, K] and [F, K, T], filled or not (``DenseTopK``:
        # score, document, window start, length, span start; token id, activation, role per token).
        "dense_layout_bytes": n_features * top_k * (width * 9 + 28),
    }


def run_child(args: argparse.Namespace, name: str, path: Path | None = None, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--model", args.model, "--layer", str(args.layer),
           "--features", str(args.features), "--corpus", args.corpus, "--mining-dict", str(args.mining_dict),
           "--mining-tokens", str(args.mining_tokens), *(extra or [])]
    if path is not None:
        cmd += ["--path", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"child {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
def synthetic_sae(path: Path, dict_size: int, dim: int) -> Path:
    """A BatchTopK state dict of random weights (the layout is all that matters for reading it)."""
    import torch

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    state = {"encoder.weight": torch.randn(dict_size, dim, generator=gen), "encoder.bias": torch.zeros(dict_size),
             "decoder.weight": torch.randn(dim, dict_size, generator=gen), "b_dec": torch.zeros(dim),
             "k": torch.tensor(32, dtype=torch.int32), "threshold": torch.tensor(0.5)}
    torch.save(state, path)
    return path


def mining_sae(args: argparse.Namespace, work: Path) -> None:
    """The calibrated random SAE of the mining section, built in this process (the model is needed once)."""
    from personamine.config import MineConfig
    from personamine.model.loading import load_model

    if (work / f"sae-{args.mining_dict}").is_dir():
        return
    loaded = load_model(args.model, args.layer, dtype="float32", device="cpu")
    cfg = MineConfig(model=args.model, layer=args.layer, corpus=args.corpus, progress=False)
    _, _, batches = probe_batches(cfg, loaded, work, 8192)
    calibrated_sae(work, loaded, batches, layer=args.layer, dict_size=args.mining_dict)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline()
    if args.child:
        print(json.dumps(child(args)))
        return {}
    print(f"# memory  {today()}  {machine()}  load avg {load_average()}", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="personamine-mem-")
    work = Path(args.workdir) if args.workdir else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"date": today(), "machine": machine(), "argv": sys.argv}
    imports = run_child(args, "imports")
    base = imports["peak"]
    print(f"baseline (python + torch + transformers + personamine imported): {mib(base)} MiB\n", flush=True)
    summary["baseline"] = base

    if "model" in args.sections:
        full = run_child(args, "model-full")
        trunc = run_child(args, "model-truncated")
        rows = [[label, mib(res["params"] * 4), mib(res["loaded_peak"] - base), mib(res["peak"]),
                 mib(res["peak"] - base), f"{res['seconds']:.1f}"]
                for label, res in ((f"full model, all layers ({full['params'] / 1e6:.0f}M params, as the seed)", full),
                                   (f"personamine load_model, layers 0..{args.layer} "
                                    f"({trunc['params'] / 1e6:.0f}M params)", trunc))]
        print(f"## Model {args.model}, fp32 on the CPU")
        summary["model_table"] = print_table(["load", "fp32 weights MiB", "RSS after load, above baseline MiB",
                                              "peak RSS MiB (every weight read)", "above baseline MiB", "seconds"],
                                             rows)
        summary["model"] = {"full": full, "truncated": trunc}
        print(flush=True)

    if "sae" in args.sections:
        path = synthetic_sae(work / f"synthetic-{args.sae_dict}x{args.sae_dim}" / "ae.pt", args.sae_dict, args.sae_dim)
        size = path.stat().st_size
        cases = [("torch.load, whole file", "sae-torch-load"),
                 ("BatchTopKSAE.from_pretrained (the seed's way)", "sae-from-pretrained"),
                 (f"Sae.encoder, {args.features} targeted features (mmap)", "sae-encoder-targeted"),
                 ("Sae.encoder, all features (mmap)", "sae-encoder-all")]
        rows, measured = [], {}
        for label, name in cases:
            try:
                res = run_child(args, name, path)
            except SystemExit as exc:
                if name == "sae-from-pretrained":  # dictionary_learning is optional
                    print(f"(skipped {label}: {str(exc).splitlines()[-1]})")
                    continue
                raise
            measured[name] = res
            rows.append([label, mib(res["peak"]), mib(res["peak"] - base), f"{res['seconds']:.1f}"])
        print(f"## SAE file {args.sae_dict:,} x {args.sae_dim} ({size / 2**20:,.0f} MiB on disk)")
        summary["sae_table"] = print_table(["read", "peak RSS MiB", "above baseline MiB", "seconds"], rows)
        summary["sae"] = {"file_bytes": size, **measured}
        print(flush=True)

    if "mining" in args.sections:
        t0 = time.perf_counter()
        mining_sae(args, work)
        print(f"(built the calibrated {args.mining_dict:,}-feature SAE in {time.perf_counter() - t0:.0f} s)",
              flush=True)
        shard = run_child(args, "mining-run-shard", work)
        whole = run_child(args, "mining-mine", work)
        summary["mining"] = {"run_shard": shard, "mine": whole}
        print_mining(args, shard, whole, base, summary)

    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    tmp.cleanup()
    return summary


def print_mining(args: argparse.Namespace, shard: dict, whole: dict, base: int, summary: dict) -> None:
    buf = shard["buffer_bytes"]
    samples = sum(shard["samples_bytes"].values())
    negatives = sum(shard["negatives_bytes"].values())
    stats = sum(shard["stats_bytes"].values())
    print(f"## features=\"all\" on a {args.mining_dict:,}-feature SAE, {shard['tokens_fed']:,} tokens fed "
          f"({shard['n_windows']:,} windows of ctx 64, display spans of {shard['span']}), run_shard "
          f"{shard['run_seconds']:.0f} s")
    rows = [
        ["engine loaded (model + encoder + corpus)", mib(shard["loaded_rss"]), ""],
        ["  of which encoder weights (fp32)", mib(shard["encoder_bytes"]), ""],
        ["run_shard peak", mib(shard["run_peak"]), f"+{mib(shard['run_growth'])} over loaded"],
        ["  TopKBuffer, all", mib(sum(buf.values())),
         f"the dense [F,K,T] layout it replaced: {mib(shard['dense_layout_bytes'])} MiB"],
        ["    window table (each span once: ids, tokens, roles)",
         mib(sum(v for k, v in buf.items() if k.startswith("windows_"))), ""],
        ["    entries (feature, score, window row)", mib(buf["feature"] + buf["score"] + buf["window"]), ""],
        ["    per-token activations (nonzeros only)", mib(sum(v for k, v in buf.items() if k.startswith("acts_"))),
         ""],
        ["  interval samples (SampleBuffer)", mib(samples), ""],
        ["  non-activating examples (NegativeBuffer)", mib(negatives), ""],
        ["  stats (counts, sums, max, histogram, per role)", mib(stats), ""],
        [f"personamine.mine peak growth ({whole['shards']} shard{'s' * (whole['shards'] != 1)}: checkpoints, merge, "
         "HDF5)",
         mib(whole["rss_growth"]),
         f"checkpoints {mib(whole['checkpoint_bytes'])} MiB, output {mib(whole['output_bytes'])} MiB"],
    ]
    summary["mining_table"] = print_table(["", "MiB", "note"], rows)
    entries, distinct = shard["entries"], shard["distinct_windows"]
    nz, cells = shard["nonzero_activations"], shard["activation_cells"]
    print(f"\nbuffer entries filled: {entries:,}; distinct spans among them: {distinct:,} "
          f"({entries / max(distinct, 1):,.0f} entries per span); nonzero per-token activations: {nz:,} of "
          f"{cells:,} ({nz / max(cells, 1):.1%})")


if __name__ == "__main__":
    main()
