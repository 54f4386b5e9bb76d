"""How the corpus layer's start-up cost grows with the corpus: it should grow with the number of files, not of rows.

Generates synthetic web-like corpora itself (documents of 500-2,000 tokens, FineWeb-like columns, 16 files; parquet
in 1,000-row row groups and jsonl) at several sizes, and measures per format and size, each in a fresh process:

- ``plan``: resolving the files and planning their units (footers and sizes), then the schedule, without a budget;
- ``plan+budget``: the same with ``max_tokens = 1e9`` and ``n_shards = 64`` (the budget adds no pre-pass);
- ``last unit``: from the start of the run (libraries imported and the tokenizer loaded, as an actor has them before
  its first unit) to the first batch of the corpus's LAST unit: plan, then read, tokenize and window that unit;
- the driver process's peak RSS (Linux VmHWM);
- the baseline, the corpus layer this one replaced (`datasets` streaming, measured in the same run): count the rows
  (``count_documents`` on a stream), then ``skip`` to the first row of the last of 64 shards.

and fits the growth exponent of each against the number of documents (log-log slope). Goals: exponent <= 0.1 for
``last unit`` (an actor's start does not depend on where its unit is); ``plan`` extrapolated with its exponent to
10x the largest corpus (~20 GiB: billions of tokens of web text) under 2 s (a jsonl plan has one unit per
``unit_bytes``, so it grows with the bytes, by microseconds per unit); a 64-shard plan of the largest corpus with
``max_tokens`` ready in under 2 s.

    python benchmarks/corpus_scale.py                  # 20k, 100k, 400k documents (~3 GB of text per format)
    python benchmarks/corpus_scale.py --quick          # 5k, 20k, 100k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, offline, peak_rss_bytes, print_table, today  # noqa: E402

N_FILES = 16
ROW_GROUP = 1000
POOL = 2048  # distinct documents, repeated: planning and reading cost do not depend on their being unique


def _documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array(["".join(rng.choice(list("etaoinshrdlucmfwypvbgkjqxz"), size=rng.integers(2, 9)))
                      for _ in range(8000)])
    pool = [" ".join(words[rng.integers(0, words.size, size=rng.integers(400, 1600))]) for _ in range(POOL)]
    return [pool[i % POOL] for i in range(n)]


def generate(root: Path, fmt: str, n_docs: int) -> Path:
    """16 files of one format holding ``n_docs`` documents (reused if already there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = root / f"{fmt}-{n_docs}"
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    texts = _documents(n_docs)
    bounds = [i * n_docs // N_FILES for i in range(N_FILES + 1)]
    for f in range(N_FILES):
        lo, hi = bounds[f], bounds[f + 1]
        part = texts[lo:hi]
        rows = {"text": part, "id": [f"<urn:uuid:{i:08d}>" for i in range(lo, hi)],
                "url": [f"https://example.org/{i}" for i in range(lo, hi)], "language": ["en"] * len(part),
                "token_count": [len(t.split()) for t in part]}
        path = out / f"train-{f:05d}-of-{N_FILES:05d}.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.table(rows), path, row_group_size=ROW_GROUP)
        else:
            with open(path, "w", encoding="utf-8") as handle:
                for i in range(len(part)):
                    handle.write(json.dumps({k: v[i] for k, v in rows.items()}) + "\n")
    done.write_text("")
    return out


# ---------------------------------------------------------------- measurements (each in its own process)


def measure_ours(kind: str, corpus: str) -> dict:
    """One cold measurement (a fresh process: no footer is cached): ``plan``, ``budget`` or ``last``."""
    import torch

    from personamine.config import MineConfig
    from personamine.corpus import open_manifest, resolve_corpus
    from personamine.jobs.mine import corpus_spec
    from personamine.model.loading import load_tokenizer
    from personamine.model.prompts import sink_prefix_ids, special_token_ids
    from personamine.shards.documents import UnitDocuments, UnitTally
    from personamine.shards.plan import Schedule
    from personamine.shards.windows import build_batch, pack_batches

    cfg = MineConfig(corpus=corpus)
    tokenizer = load_tokenizer(cfg.model)  # an actor holds it before its first unit: not part of the latency
    began = time.perf_counter()
    spec = corpus_spec(cfg)
    manifest = open_manifest(spec, resolve_corpus(spec))
    if kind == "budget":
        schedule = Schedule(manifest, 64, None, 10**9, {}, lambda *_: np.zeros(0))
        assert schedule.next() is not None
    else:
        Schedule(manifest, None, None, None, {}, lambda *_: np.zeros(0))
    seconds = time.perf_counter() - began
    if kind == "last":
        prefix = sink_prefix_ids(tokenizer)
        docs = UnitDocuments(tokenizer=tokenizer, prefix=prefix, ctx_len=cfg.ctx_len, column="text",
                             skip_malformed=False)
        last = manifest.ref(len(manifest) - 1)
        windows = docs.windows(last, UnitTally(last.index), {"n_documents": 0, "rows_skipped": 0,
                                                             "rows_malformed": 0})
        build_batch(next(pack_batches(windows, 2048)), ctx_len=cfg.ctx_len, pad_id=0,
                    special_ids=special_token_ids(tokenizer, prefix), device=torch.device("cpu"))
        seconds = time.perf_counter() - began
    return {"seconds": seconds, "units": len(manifest), "peak_rss": peak_rss_bytes()}


def measure_baseline(corpus: str) -> dict:
    """The replaced corpus layer's start-up: count a stream, then skip to the last of 64 shards' first row."""
    import datasets

    datasets.disable_progress_bars()
    files = sorted(str(p) for p in Path(corpus).iterdir() if not p.name.startswith("."))
    loader = "parquet" if files[0].endswith(".parquet") else "json"
    began = time.perf_counter()
    stream = datasets.load_dataset(loader, data_files=files, split="train", streaming=True).select_columns(["text"])
    n = sum(1 for _ in stream)
    count_s = time.perf_counter() - began
    t = time.perf_counter()
    start = 63 * n // 64
    next(iter(stream.skip(start).take(1)))
    return {"count_s": count_s, "skip_s": time.perf_counter() - t, "baseline_s": time.perf_counter() - began,
            "rows": n}


def in_child(kind: str, corpus: str, repeat: int = 1) -> dict:
    """The median over ``repeat`` fresh processes (this 2-core machine's speed drifts from minute to minute)."""
    runs = []
    for _ in range(repeat):
        done = subprocess.run([sys.executable, __file__, "--child", kind, corpus], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"{kind} on {corpus} failed:\n{done.stderr[-2000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: float(np.median([r[k] for r in runs])) if isinstance(runs[0][k], float) else runs[0][k]
            for k in runs[0]}


def slope(sizes: list[int], values: list[float]) -> float:
    x, y = np.log(sizes), np.log(np.maximum(values, 1e-6))
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="comma-separated document counts")
    parser.add_argument("--quick", action="store_true", help="5k, 20k, 100k documents")
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument("--workdir", default="/tmp/personamine-corpus-scale", help="where corpora are generated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the replaced layer's measurement")
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per measurement (median)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    offline()
    if args.child:
        kind, corpus = args.child
        print(json.dumps(measure_baseline(corpus) if kind == "baseline" else measure_ours(kind, corpus)), flush=True)
        os._exit(0)  # streaming `datasets` leaves threads that abort a normal interpreter exit
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [5_000, 20_000, 100_000] if args.quick else [20_000, 100_000, 400_000])
    root = Path(args.workdir)
    print(f"corpus_scale: {today()}, {machine()}, load {load_average()}")
    results: dict = {"sizes": sizes, "machine": machine(), "date": today(), "formats": {}}
    for fmt in args.formats.split(","):
        rows, per = [], []
        for n in sizes:
            t = time.perf_counter()
            corpus = generate(root, fmt, n)
            gen = time.perf_counter() - t
            size = sum(p.stat().st_size for p in corpus.iterdir())
            plan = in_child("plan", str(corpus), args.repeat)
            budget = in_child("budget", str(corpus), args.repeat)
            last = in_child("last", str(corpus), args.repeat)
            base = None if args.no_baseline else in_child("baseline", str(corpus))
            ours = {"plan_s": plan["seconds"], "plan_budget_s": budget["seconds"], "last_unit_s": last["seconds"],
                    "units": plan["units"], "peak_rss": max(plan["peak_rss"], budget["peak_rss"], last["peak_rss"])}
            per.append({"documents": n, "bytes": size, "generate_s": gen, **ours, **({} if base is None else base)})
            rows.append([f"{n:,}", f"{size / 2**30:.2f} GiB", ours["units"], f"{ours['plan_s']:.3f}",
                         f"{ours['plan_budget_s']:.3f}", f"{ours['last_unit_s']:.2f}",
                         f"{ours['peak_rss'] / 2**20:,.0f}",
                         "-" if base is None else f"{base['count_s']:.1f} + {base['skip_s']:.1f}",
                         "-" if base is None else f"{base['baseline_s'] / ours['last_unit_s']:.1f}x"])
        print(f"\n{fmt}: {N_FILES} files" + (f", row groups of {ROW_GROUP:,}" if fmt == "parquet" else ""))
        print_table(["documents", "size", "units", "plan s", "plan+budget s", "last unit s", "peak RSS MiB",
                     "baseline count + skip s", "baseline / ours"], rows)
        exps = {key: slope(sizes, [p[key] for p in per]) for key in ("plan_s", "plan_budget_s", "last_unit_s",
                                                                       "peak_rss")}
        if not args.no_baseline:
            exps["baseline_s"] = slope(sizes, [p["baseline_s"] for p in per])
        print("growth exponent vs documents: " + ", ".join(f"{k} {v:+.2f}" for k, v in exps.items()))
        largest = per[-1]
        plan_10x = largest["plan_s"] * 10 ** max(exps["plan_s"], 0.0)
        print(f"goals: last-unit exponent <= 0.1: {'met' if exps['last_unit_s'] <= 0.1 else 'NOT met'}; plan at 10x "
              f"the largest corpus (extrapolated) {plan_10x:.3f} s < 2 s: {'met' if plan_10x < 2 else 'NOT met'}; "
              f"64-shard plan with max_tokens of {largest['documents']:,} documents in "
              f"{largest['plan_budget_s']:.3f} s (< 2 s: {'met' if largest['plan_budget_s'] < 2 else 'NOT met'})")
        results["formats"][fmt] = {"runs": per, "exponents": exps, "plan_10x_s": plan_10x}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
