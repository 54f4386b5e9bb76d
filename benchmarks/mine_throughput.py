"""Mining throughput against the seed notebook's loop and against the bare forward pass, in one process.

Four phases on the same loaded model, layer, corpus and batch shape:

  a  the seed's loop, re-implemented faithfully: one text per forward, ``padding="max_length"`` to ctx_len,
     the last position only, a targeted encoder without b_dec or threshold, a per-feature Python top-k;
  b  the bare early-stopped forward (``capture_windows``) over exactly the windows and batches personamine
     builds: the limit;
  c  personamine's mining of one shard (``MiningEngine`` + ``run_shard``), 20 targeted features;
  d  the same with all features of a second, larger SAE;
  e  the seed's loop as (a), on a second copy of the model in bf16, the dtype the seed loads (``torch_dtype=
     torch.bfloat16``). On a CPU without bf16 units that is the seed's real speed; (a) runs it in our dtype.

Phases b, c and d run interleaved for ``--rounds`` rounds so that other load on a shared machine hits them
alike; each ratio is the median of its per-round ratios. Without ``--sae``, two random BatchTopK SAEs in the
dictionary_learning release layout are built in a temp dir and calibrated on the model's own layer
activations so that about 32 features fire per token.

    python benchmarks/mine_throughput.py            # full run (~10 min on 2 cores)
    python benchmarks/mine_throughput.py --quick    # smoke run (~2 min)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DEFAULT_MODEL,
    PeakMemory,
    Timer,
    calibrated_sae,
    default_corpus,
    load_average,
    machine,
    mib,
    offline,
    placeholder_sae,
    print_table,
    today,
)

GOALS = {"c/b": 0.90, "d/b": 0.75, "c/a": 10.0, "c/a scored": 500.0, "c/e": 10.0, "c/e scored": 500.0}


@dataclass
class Phase:
    name: str
    label: str
    fed: list[float] = field(default_factory=list)  # tokens fed per second, per round
    forward_share: list[float] = field(default_factory=list)  # of the wall time, spent in capture_windows
    scored: list[float] = field(default_factory=list)
    cpu_fed: list[float] = field(default_factory=list)  # tokens fed per CPU second
    peak_rss: int = 0
    rss_growth: int = 0
    cuda_peak: int | None = None
    tokens_fed: int = 0
    tokens_scored: int | None = None
    seconds: list[float] = field(default_factory=list)

    def record(self, fed: int, scored: int | None, timer: Timer, memory: PeakMemory,
               forward_seconds: float | None = None) -> None:
        self.tokens_fed, self.tokens_scored = fed, scored
        if forward_seconds is not None:
            self.forward_share.append(forward_seconds / timer.wall)
        self.seconds.append(timer.wall)
        self.fed.append(fed / timer.wall)
        self.cpu_fed.append(fed / max(timer.cpu, 1e-9))
        if scored is not None:
            self.scored.append(scored / timer.wall)
        self.peak_rss = max(self.peak_rss, memory.peak)
        self.rss_growth = max(self.rss_growth, memory.peak - memory.start)
        if memory.cuda_peak is not None:
            self.cuda_peak = max(self.cuda_peak or 0, memory.cuda_peak)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few tokens, one SAE size smaller, 2 rounds")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--sae", default=None,
                   help="SAE (release dir, ae.pt or hub repo) for every phase instead of the built random ones")
    p.add_argument("--corpus", default=None, help="default: WikiText-2 validation if present, else built-in")
    p.add_argument("--tokens", type=int, default=None, help="corpus tokens per phase and round (full: 16,384)")
    p.add_argument("--seed-texts", type=int, default=None, help="texts per round for the seed loop (full: 32)")
    p.add_argument("--ctx-len", type=int, default=64)
    p.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per batch (default: personamine's)")
    p.add_argument("--features", type=int, default=20, help="targeted features for (a) and (c)")
    p.add_argument("--targeted-dict", type=int, default=4096, help="size of the built SAE for (a) and (c)")
    p.add_argument("--all-dict", type=int, default=8192, help="size of the built SAE for (d)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (full: 4)")
    p.add_argument("--phases", default="abcde", help="subset of abcde to run (ratios need their phases)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every phase")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default=None, help="keep the built SAEs here (reused when present)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    quick = args.quick
    args.tokens = args.tokens or (4096 if quick else 16384)
    args.seed_texts = args.seed_texts or (8 if quick else 32)
    args.rounds = args.rounds or (2 if quick else 4)
    args.corpus = args.corpus or default_corpus()
    return args


# ---------------------------------------------------------------------------------------------------------------
# (a) the seed notebook's mining loop (assistant_persona_notebook, cell 4, ``mine_feature_examples``)
# ---------------------------------------------------------------------------------------------------------------
class _EarlyStop(Exception):
    pass


def seed_texts(corpus, n: int) -> list[str]:
    """The seed's text stream: stripped documents longer than 50 characters, in corpus order."""
    out: list[str] = []
    for text in corpus.texts(0, corpus.count_documents()):
        if isinstance(text, str) and len(text.strip()) > 50:
            out.append(text.strip())
            if len(out) == n:
                break
    return out


def seed_loop(loaded, ae_path: Path, features: np.ndarray, texts: list[str], ctx_len: int, top_k: int) -> int:
    """One text per forward, padded to ctx_len, last position only, per-feature Python top-k. Returns texts done.

    Kept as the seed wrote it, with one fix forced by transformers 5: a decoder layer now returns a Tensor, so
    the seed's ``output[0][:, -1, :]`` would index batch element 0 and fail; the tuple case keeps its meaning.
    """
    import torch

    model, tokenizer, device = loaded.model, loaded.tokenizer, loaded.device
    num_features = len(features)
    top_k_scores = torch.full((num_features, top_k), -float("inf"), dtype=torch.float32)
    top_k_tokens = torch.full((num_features, top_k, ctx_len), tokenizer.pad_token_id, dtype=torch.long)
    activations_buffer: list[torch.Tensor] = []

    def activation_hook(module, input, output):
        hidden = output[0] if isinstance(output, tuple) else output
        activations_buffer.append(hidden[:, -1, :].detach().cpu().float())
        raise _EarlyStop()

    handle = loaded.layer_module.register_forward_hook(activation_hook)
    # The seed held the whole SAE in memory and sliced the encoder rows from it.
    state = torch.load(ae_path, map_location="cpu", weights_only=True)
    index = torch.from_numpy(np.asarray(features))
    with torch.no_grad():
        target_encoder_weights = state["encoder.weight"][index].to(device)
        target_encoder_bias = state["encoder.bias"][index].to(device)
    processed_count = 0
    try:
        for text in texts:
            activations_buffer.clear()
            tokens = tokenizer(text, return_tensors="pt", padding="max_length", truncation=True, max_length=ctx_len)
            tokens = {k: v.to(device) for k, v in tokens.items()}
            try:
                with torch.no_grad():
                    _ = model(**tokens)
            except _EarlyStop:
                pass
            if not activations_buffer:
                continue
            activation = activations_buffer[0]
            activation_gpu = activation.to(device)
            with torch.no_grad():
                target_features = torch.mm(activation_gpu, target_encoder_weights.T)
                target_features += target_encoder_bias
                target_features = torch.relu(target_features)
                feature_scores = target_features.squeeze(0).cpu()
            current_tokens = tokens["input_ids"].cpu()
            for feat_idx in range(num_features):
                score = feature_scores[feat_idx].item()
                min_score = top_k_scores[feat_idx].min().item()
                if score > min_score:
                    combined_scores = torch.cat([top_k_scores[feat_idx], torch.tensor([score])])
                    combined_tokens = torch.cat([top_k_tokens[feat_idx], current_tokens])
                    new_scores, indices = torch.topk(combined_scores, top_k)
                    top_k_scores[feat_idx] = new_scores
                    top_k_tokens[feat_idx] = combined_tokens[indices]
            del tokens, activation, activation_gpu, target_features, feature_scores, current_tokens
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            processed_count += 1
    finally:
        handle.remove()
    return processed_count


# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline()
    import torch

    from personamine.config import MineConfig
    from personamine.merge.hdf5 import write_results
    from personamine.model.loading import load_model
    from personamine.saes import read_sae_meta
    from personamine.shards.plan import Shard, count_documents
    from personamine.shards.run import MiningEngine, run_shard
    from personamine.shards.windows import capture_windows

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# mine_throughput  {today()}  {machine()}  load avg {load_average()}", flush=True)
    loaded = load_model(args.model, args.layer, dtype=args.dtype, device=args.device)
    device = loaded.device
    tmp = tempfile.TemporaryDirectory(prefix="personamine-bench-")
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    base = MineConfig(model=args.model, layer=args.layer, corpus=args.corpus, ctx_len=args.ctx_len,
                      batch_tokens=args.batch_tokens, top_k=args.top_k, dtype=args.dtype, device=args.device,
                      progress=False, n_shards=1)

    # One engine only to cut windows and build batches (its SAE is a placeholder until the real ones exist).
    probe_sae = args.sae or str(placeholder_sae(workdir, loaded, args.layer))
    probe = MiningEngine(base.replace(sae=probe_sae, allow_uncalibrated=True, features=[0]), np.array([0]), loaded)
    n_docs = count_documents(probe.corpus, loaded.tokenizer, None, args.tokens)
    shard = Shard(0, 0, n_docs)
    batches = list(probe.batches(shard, {"n_documents": 0, "rows_skipped": 0}))
    fed_b = int(sum(int(b.real.sum()) for b in batches))
    padded = int(sum(b.input_ids.numel() for b in batches))
    print(f"corpus {args.corpus}: {n_docs} documents, {len(batches)} batches of <= {probe.batch_tokens} tokens, "
          f"{fed_b} tokens fed, padding waste {1 - fed_b / padded:.1%}", flush=True)

    if args.sae:
        sae_targeted = sae_all = args.sae
    else:
        t0 = time.perf_counter()
        sae_targeted = str(calibrated_sae(workdir, loaded, batches, layer=args.layer, dict_size=args.targeted_dict))
        sae_all = str(calibrated_sae(workdir, loaded, batches, layer=args.layer, dict_size=args.all_dict))
        print(f"built calibrated random SAEs ({args.targeted_dict} and {args.all_dict} features) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    targeted_info = read_sae_meta(sae_targeted, layer=args.layer)
    all_info = read_sae_meta(sae_all, layer=args.layer)
    rng = np.random.default_rng(0)
    features = np.sort(rng.choice(targeted_info.d_sae, size=args.features, replace=False)).astype(np.int64)
    engine_c = MiningEngine(base.replace(sae=sae_targeted, features=features.tolist()), features, loaded)
    all_features = np.arange(all_info.d_sae, dtype=np.int64)
    engine_d = MiningEngine(base.replace(sae=sae_all, features="all"), all_features, loaded)
    texts = seed_texts(probe.corpus, args.seed_texts)

    phases = {
        "a": Phase("a", f"seed loop (batch 1, {args.features} features)"),
        "b": Phase("b", "bare forward (capture only)"),
        "c": Phase("c", f"personamine, {args.features} of {targeted_info.d_sae} features"),
        "d": Phase("d", f"personamine, all {all_info.d_sae} features"),
        "e": Phase("e", f"seed loop as written (bf16 weights, {args.features} features)"),
    }
    loaded_bf16 = load_model(args.model, args.layer, dtype="bfloat16", device=args.device) if "e" in args.phases \
        else None
    results: dict[str, object] = {}

    def run_a() -> None:
        with PeakMemory() as mem, Timer(device) as timer:
            done = seed_loop(loaded, targeted_info.ae_path, features, texts, args.ctx_len, args.top_k)
        phases["a"].record(done * args.ctx_len, done, timer, mem)

    def run_e() -> None:
        with PeakMemory() as mem, Timer(device) as timer:
            done = seed_loop(loaded_bf16, targeted_info.ae_path, features, texts, args.ctx_len, args.top_k)
        phases["e"].record(done * args.ctx_len, done, timer, mem)

    def run_b() -> None:
        with PeakMemory() as mem, Timer(device) as timer, torch.inference_mode():
            for batch in batches:
                capture_windows(loaded.model, loaded.layer_module, batch)
        phases["b"].record(fed_b, None, timer, mem)

    # On the CPU every op is synchronous, so timing capture_windows inside run_shard gives the forward's share of
    # the run: a ratio measured within one run, which other load on the machine cannot skew between phases.
    forward_clock = [0.0]
    if device.type == "cpu":
        import personamine.shards.run as run_module

        untimed = run_module.capture_windows

        def timed_capture(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return untimed(*args, **kwargs)
            finally:
                forward_clock[0] += time.perf_counter() - t0

        run_module.capture_windows = timed_capture

    def run_engine(key: str, engine: MiningEngine) -> None:
        forward_clock[0] = 0.0
        with PeakMemory() as mem, Timer(device) as timer:
            result = run_shard(engine, shard)
        counters = result.stats.counters
        phases[key].record(counters["tokens_fed"], counters["tokens_scored"], timer, mem,
                           forward_clock[0] if device.type == "cpu" else None)
        results[key] = (engine, result)

    runners = {"a": run_a, "e": run_e, "b": run_b, "c": lambda: run_engine("c", engine_c),
               "d": lambda: run_engine("d", engine_d)}
    wanted = [k for k in "aebcd" if k in args.phases]
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection stay out of round 1
        capture_windows(loaded.model, loaded.layer_module, batches[0])
    for r in range(args.rounds):
        # Alternate the order so a load that drifts over a round biases no phase.
        for key in (wanted if r % 2 == 0 else wanted[::-1]):
            runners[key]()
            ph = phases[key]
            print(f"  round {r + 1}/{args.rounds} {key}: {ph.seconds[-1]:7.1f} s  {ph.fed[-1]:9.1f} tokens fed/s"
                  + (f"  {ph.scored[-1]:9.1f} scored/s" if ph.scored else ""), flush=True)

    write_seconds = {}
    for key, (engine, result) in results.items():
        t0 = time.perf_counter()
        write_results(workdir / f"out-{key}.h5", feature_ids=engine.encoder.features, buffer=result.buffer,
                      stats=result.stats, attrs={})
        write_seconds[key] = time.perf_counter() - t0

    print(f"\n## Results ({today()}, {machine()}, load avg {load_average()})")
    print(f"model {args.model} layer {args.layer}, {loaded.dtype} on {device}; corpus {args.corpus}; "
          f"ctx {args.ctx_len}, batches of <= {probe.batch_tokens} tokens; {args.rounds} rounds, median shown\n")
    rows = []
    for key in wanted:
        ph = phases[key]
        rows.append([f"({key}) {ph.label}", f"{ph.tokens_fed:,}", f"{statistics.median(ph.fed):,.1f}",
                     f"{statistics.median(ph.scored):,.1f}" if ph.scored else "-",
                     f"{statistics.median(ph.cpu_fed):,.1f}",
                     f"{statistics.median(ph.forward_share):.1%}" if ph.forward_share else "-",
                     mib(ph.peak_rss), mib(ph.rss_growth),
                     mib(ph.cuda_peak), f"{write_seconds[key]:.2f}" if key in write_seconds else "-"])
    table = print_table(["phase", "tokens fed", "fed/s", "scored/s", "fed/CPU-s", "forward share", "peak RSS MiB",
                         "RSS growth MiB", "GPU peak MiB", "HDF5 write s"], rows)

    def per_round(x: str, y: str, scored: bool = False) -> float | None:
        if x not in wanted or y not in wanted:
            return None
        px, py = phases[x], phases[y]
        vx, vy = (px.scored, py.scored) if scored else (px.fed, py.fed)
        return statistics.median(a / b for a, b in zip(vx, vy, strict=True))

    ratios = {"c/b": per_round("c", "b"), "d/b": per_round("d", "b"), "c/a": per_round("c", "a"),
              "c/a scored": per_round("c", "a", scored=True), "c/e": per_round("c", "e"),
              "c/e scored": per_round("c", "e", scored=True)}
    # The in-run estimate of c/b and d/b: the forward's share of the mining run's own wall time.
    in_run = {"c/b": phases["c"].forward_share, "d/b": phases["d"].forward_share}
    print()
    ratio_rows = [[name, f"{value:,.2f}",
                   f"{statistics.median(in_run[name]):.2f}" if in_run.get(name) else "-",
                   f">= {GOALS[name]:g}", "met" if value >= GOALS[name] else "NOT met"]
                  for name, value in ratios.items() if value is not None]
    ratio_table = print_table(["ratio (tokens/s)", "measured", "forward share in run", "goal", ""], ratio_rows)
    print(f"\npadding waste in (b)-(d): {1 - fed_b / padded:.1%} of fed positions; "
          f"total {time.perf_counter() - started:.0f} s")
    summary = {
        "date": today(), "machine": machine(), "load_average": load_average(), "argv": sys.argv,
        "model": args.model, "layer": args.layer, "corpus": args.corpus, "ctx_len": args.ctx_len,
        "batch_tokens": probe.batch_tokens, "rounds": args.rounds, "padding_waste": 1 - fed_b / padded,
        "phases": {k: vars(phases[k]) for k in wanted}, "ratios": ratios, "write_seconds": write_seconds,
        "table": table, "ratio_table": ratio_table,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    tmp.cleanup()
    return summary


if __name__ == "__main__":
    main()
