"""Explanations per minute with the in-process explainer (SmolLM2-135M-Instruct by default), default settings.

The mining file comes from the tests' tiny model, SAE and corpus (64-token windows, top 20, 5 per interval, 20
negatives): the explainer's cost depends on prompt lengths, not on which model mined the windows. Each feature
costs one explanation call and one scoring call per held-out and per non-activating text (detection and fuzzing).
Times are split by phase (explanation, scoring), with a fresh response cache. Baseline: the same features with
``batch_size=1`` (no batching), measured in the same run; the ratio is batched / unbatched throughput.

    python benchmarks/explain_throughput.py --quick        # 1 feature, small sets
    python benchmarks/explain_throughput.py --features 4   # 4 features at the defaults
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import DEFAULT_MODEL, load_average, machine, offline, print_table, today


class _Timed:
    """The real backend, with the seconds spent in each kind of call recorded."""

    def __init__(self, backend, seconds: dict) -> None:
        self.backend, self.model, self.seconds = backend, backend.model, seconds
        began = time.perf_counter()
        backend._load()  # not timed as explaining
        seconds["load"] = time.perf_counter() - began

    def complete(self, requests, on_done=None):
        began, cpu = time.perf_counter(), time.process_time()
        out = self.backend.complete(requests, on_done)
        kind = "explanation" if requests and requests[0].top_logprobs == 0 else "scoring"
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - began
        self.seconds[kind + "_cpu"] = self.seconds.get(kind + "_cpu", 0.0) + time.process_time() - cpu
        self.seconds[kind + "_calls"] = self.seconds.get(kind + "_calls", 0) + len(requests)
        return out


def mining_file(tmp: Path) -> Path:
    import fixtures as fx

    import personamine

    model = fx.make_tiny_model(tmp / "model", add_bos=True)
    fx.make_calibrated_sae_release(tmp / "sae", model, layer=fx.SAE_LAYER)
    corpus = fx.write_corpus_jsonl(tmp / "corpus.jsonl")
    return personamine.mine(model=str(model), layer=fx.SAE_LAYER, sae=str(tmp / "sae"), corpus=str(corpus),
                            features=list(range(0, 64, 4)), ctx_len=64, top_k=20, samples_per_interval=5,
                            negatives_per_feature=20, n_shards=1, output=str(tmp / "mine.h5"), progress=False)


def run(path: Path, tmp: Path, features: list[int], batch_size: int, model: str, **sizes) -> dict:
    import personamine
    from personamine.jobs import explain as job

    seconds: dict = {}
    real = job.open_backend
    job.open_backend = lambda cfg: _Timed(real(cfg), seconds)
    try:
        out = personamine.explain(path, features=features, model=model, batch_size=batch_size,
                                  cache_dir=tempfile.mkdtemp(dir=tmp), output=str(tmp / f"ex-{batch_size}.h5"),
                                  progress=False, **sizes)
    finally:
        job.open_backend = real
    seconds["out"] = out
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--features", type=int, default=2, help="features explained (default 2)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    offline()
    sizes = dict(n_explain=4, n_test=4, n_negatives=4, explanation_tokens=64) if args.quick else {}
    n = 1 if args.quick else args.features
    print(f"# explain throughput, {today()}, {machine()}, load average before {load_average()}")
    with tempfile.TemporaryDirectory(prefix="personamine-bench-explain-") as tmpdir:
        tmp = Path(tmpdir)
        path = mining_file(tmp)
        import personamine

        ids = personamine.read_results(path).feature_ids.tolist()
        batched = run(path, tmp, ids[:n], args.batch_size, args.model, **sizes)
        single = run(path, tmp, ids[:1], 1, args.model, **sizes)
        ex = personamine.read_explanations(batched["out"])
        rows = []
        for name, r, k in ((f"batch_size={args.batch_size}", batched, n), ("batch_size=1 (baseline)", single, 1)):
            work = r["explanation"] + r["scoring"]
            rows.append([name, k, r["explanation_calls"], f"{r['explanation']:.1f}", r["scoring_calls"],
                         f"{r['scoring']:.1f}", f"{work:.1f}", f"{r['explanation_cpu'] + r['scoring_cpu']:.1f}",
                         f"{60 * k / work:.2f}"])
        print_table(["run", "features", "explain calls", "explain s", "scoring calls", "scoring s", "wall s",
                     "CPU s", "explained+scored/min"], rows)
        print(f"model load (not counted): {batched['load']:.1f} s")
        ratio = (n / (batched["explanation"] + batched["scoring"])) / (1 / (single["explanation"] + single["scoring"]))
        print(f"batched / unbatched throughput: {ratio:.2f}x   (load average after {load_average()})")
        print(f"explanation only (no scoring): {60 * batched['explanation_calls'] / batched['explanation']:.1f}/min")
        print("what the model wrote, and its scores:")
        print(ex.table(width=300))


if __name__ == "__main__":
    main()
