"""Mining throughput against the seed notebook's loop and against the bare forward pass, in one process.

On a text corpus at ctx 64, five phases on the same loaded model, layer, corpus and batch shape:

  a  the seed's loop, re-implemented faithfully: one text per forward, ``padding="max_length"`` to ctx_len,
     the last position only, a targeted encoder without b_dec or threshold, a per-feature Python top-k;
  b  the bare early-stopped forward (``capture_windows``) over exactly the windows and batches personamine
     builds (``MiningEngine.batches`` of the shard): the limit;
  c  personamine's mining of that shard (``MiningEngine`` + ``run_shard``), 20 targeted features;
  d  the same with all features of a second, larger SAE;
  e  the seed's loop as (a), on a second copy of the model in bf16, the dtype the seed loads (``torch_dtype=
     torch.bfloat16``). On a CPU without bf16 units that is the seed's real speed; (a) runs it in our dtype.

On a conversation corpus (``builtin:conversations``: a ``messages`` column, rendered with the chat template,
``score_roles=["assistant"]``) at ctx 256 and ctx 1,024, phases (b), (c) and (d) again at each ctx. At ctx 1,024
a conversation longer than the window is windowed with ``stride=512`` (each later window scores 512 tokens after
512 of context); ctx 256 uses the default stride (no overlap). The built-in corpus opens with 2,026 short scripted
bot Q/A (~30 tokens each), which would make every window short whatever ctx_len is: these phases start at its first
unit (1 MiB of jsonl) past them, human chats of ~500 tokens. For (d) at each ctx the benchmark also reports the peak
RSS and the sizes of the run's buffers (top-k, interval samples, non-activating examples), whose rows are display
spans of ``min(example_len, ctx_len)`` tokens, against the dense [features, top_k, ctx_len] layout.

All phases run interleaved for ``--rounds`` rounds so that other load on a shared machine hits them alike; each
ratio is the median of its per-round ratios. Without ``--sae``, random BatchTopK SAEs in the dictionary_learning
release layout are built in a temp dir and calibrated on the model's own layer activations of the corpus they mine
(the text SAEs on the text shard, the conversation SAEs on the ctx-256 conversation shard's assistant tokens) so
that about 32 features fire per scored token.

    python benchmarks/mine_throughput.py            # full run (~20 min on 2 busy cores)
    python benchmarks/mine_throughput.py --quick    # smoke run (~5 min)
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
    print_table,
    probe_batches,
    today,
)
from _gpu_checks import ForwardClock  # noqa: E402

GOALS = {"c/b": 0.90, "d/b": 0.75, "c/a": 10.0, "c/a scored": 500.0, "c/e": 10.0, "c/e scored": 500.0}
CONVERSATIONS = "builtin:conversations"
TEXT = "text"  # the key of the text corpus's setting; a conversation setting's key is "ctx<N>"


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


@dataclass
class Setting:
    """One corpus at one ctx: its shard, the engine's own batches of it (what (b) feeds), the (c) and (d) engines."""

    key: str
    title: str
    config: object  # MineConfig, without its SAE and features
    shard: object
    batches: list
    batch_tokens: int
    engines: dict = field(default_factory=dict)  # "c" / "d" -> MiningEngine
    phases: dict = field(default_factory=dict)  # phase letter -> Phase
    results: dict = field(default_factory=dict)  # "c" / "d" -> the last round's ShardResult

    @property
    def fed(self) -> int:
        return int(sum(int(b.real.sum()) for b in self.batches))

    @property
    def padded(self) -> int:
        return int(sum(b.input_ids.numel() for b in self.batches))

    def layout(self) -> dict:
        """Documents, windows, and how many documents were longer than one window."""
        docs = np.concatenate([b.windows.document for b in self.batches])
        _, per_doc = np.unique(docs, return_counts=True)
        return {"documents": int(per_doc.size), "windows": int(docs.size), "windowed": int((per_doc > 1).sum()),
                "tokens_fed": self.fed, "padding_waste": 1 - self.fed / self.padded, "batches": len(self.batches)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer tokens, 2 rounds")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--sae", default=None,
                   help="SAE (release dir, ae.pt or hub repo) for every phase instead of the built random ones")
    p.add_argument("--corpus", default=None, help="text corpus (default: WikiText-2 validation if present, else "
                   "built-in)")
    p.add_argument("--tokens", type=int, default=None, help="text corpus tokens per phase and round (full: 16,384)")
    p.add_argument("--seed-texts", type=int, default=None, help="texts per round for the seed loop (full: 32)")
    p.add_argument("--ctx-len", type=int, default=64, help="ctx of the text phases")
    p.add_argument("--conv-corpus", default=CONVERSATIONS, help="conversation corpus (a messages column)")
    p.add_argument("--conv-ctx", default="256,1024", help="comma-separated ctx of the conversation phases ('' for "
                   "none)")
    p.add_argument("--conv-strides", default="none,512", help="stride at each --conv-ctx ('none': no overlap)")
    p.add_argument("--conv-tokens", type=int, default=None, help="conversation tokens per phase, ctx and round "
                   "(full: 8,192; quick: 4,096)")
    p.add_argument("--conv-first-unit", type=int, default=None, help="first unit (1 MiB of jsonl) of the "
                   "conversation corpus mined (default: the built-in corpus's first unit past its bot Q/A, else 0)")
    p.add_argument("--batch-tokens", type=int, default=None, help="padded tokens per batch (default: personamine's)")
    p.add_argument("--features", type=int, default=20, help="targeted features for (a) and (c)")
    p.add_argument("--targeted-dict", type=int, default=4096, help="size of the built SAE for (a) and (c)")
    p.add_argument("--all-dict", type=int, default=8192, help="size of the built SAE for (d)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (full: 4)")
    p.add_argument("--phases", default="abcde", help="subset of abcde to run (ratios need their phases; the "
                   "conversation settings run b, c, d)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every phase")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--workdir", default=None, help="keep the built SAEs here (reused when present)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    quick = args.quick
    args.tokens = args.tokens or (4096 if quick else 16384)
    args.conv_tokens = args.conv_tokens or (4096 if quick else 8192)
    args.seed_texts = args.seed_texts or (8 if quick else 32)
    args.rounds = args.rounds or (2 if quick else 4)
    args.corpus = args.corpus or default_corpus()
    args.conv_ctx = [int(c) for c in args.conv_ctx.split(",") if c.strip()]
    strides = [None if s.strip().lower() == "none" else int(s) for s in args.conv_strides.split(",") if s.strip()]
    if not args.conv_ctx:  # --conv-ctx '': the text phases only, whatever the strides say
        strides = []
    if len(strides) != len(args.conv_ctx):
        p.error("--conv-strides needs one stride per --conv-ctx")
    args.conv_strides = strides
    return args


# ---------------------------------------------------------------------------------------------------------------
# (a) the seed notebook's mining loop (assistant_persona_notebook, cell 4, ``mine_feature_examples``)
# ---------------------------------------------------------------------------------------------------------------
class _EarlyStop(Exception):
    pass


def seed_texts(manifest, n: int) -> list[str]:
    """The seed's text stream: stripped documents longer than 50 characters, in corpus order."""
    from personamine.corpus import iter_rows

    out: list[str] = []
    for _, text in iter_rows(manifest):
        if isinstance(text, str) and len(text.strip()) > 50:
            out.append(text.strip())
            if len(out) == n:
                break
    return out


def seed_weights(sae: str, layer: int) -> Path:
    """The dictionary_learning ``ae.pt`` that the seed loop reads whole (the one SAE layout the seed knew)."""
    from personamine.saes.api import locate
    from personamine.saes.dictionary_learning import weights_name
    from personamine.saes.locate import SaeSpec

    folder, loader, _ = locate(SaeSpec(sae, layer=layer))
    path = folder.path(weights_name(folder))
    if path is None or not loader.__name__.endswith(".dictionary_learning"):
        raise SystemExit(f"the seed loop (phases a, e) reads a dictionary_learning ae.pt; {sae} is not one "
                         "(run --phases bcd)")
    return path


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
CONV_UNIT_BYTES = 1 << 20


def first_chat_unit(manifest) -> int:
    """The built-in conversation corpus's first unit past its bot Q/A (rows of the human chats' source)."""
    from personamine.corpus import unit_rows

    for index in range(len(manifest)):
        source = next(iter(unit_rows(manifest.ref(index), "source")), None)
        if isinstance(source, str) and source.startswith("chitchat-dataset"):
            return index
    raise SystemExit(f"{manifest.source}: no unit of human chats found; set --conv-first-unit")


def buffer_sizes(result, ctx_len: int) -> dict:
    """Entries and bytes of a run's three buffers, their window tables' token arrays, and what the per-token arrays
    of the dense [features, top_k, ctx_len] layout would take (token ids, activations, roles: 9 B a cell)."""
    n_features, top_k, _ = result.buffer.shape
    out: dict = {}
    for name, buffer in (("top-k", result.buffer), ("interval samples", result.samples),
                         ("non-activating", result.negatives)):
        if buffer is None:
            continue
        table = buffer.entries.windows
        out[name] = {"entries": len(buffer.entries), "window_rows": len(table),
                     "token_width": int(table.token_ids.shape[1]),
                     "token_bytes": int(table.token_ids.nbytes + table.roles.nbytes),
                     "bytes": int(sum(v.nbytes for v in buffer.arrays().values()))}
    out["dense_topk_bytes"] = n_features * top_k * ctx_len * 9
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline()
    import torch

    from personamine.config import MineConfig
    from personamine.corpus import open_manifest
    from personamine.files.mine import write_results
    from personamine.jobs.mine import corpus_spec
    from personamine.model.loading import load_model
    from personamine.saes import read_sae_meta
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
                      progress=False, preflight_tokens=0)

    settings: list[Setting] = []

    def add_setting(key: str, title: str, config: MineConfig, tokens: int, first_unit: int = 0) -> Setting:
        probe, shard, batches = probe_batches(config, loaded, workdir, tokens, first_unit)
        setting = Setting(key, title, config, shard, batches, probe.batch_tokens)
        lay = setting.layout()
        print(f"{title}: {lay['documents']:,} documents ({lay['windowed']:,} longer than one window), "
              f"{lay['windows']:,} windows in {lay['batches']} batches of <= {setting.batch_tokens} tokens, "
              f"{lay['tokens_fed']:,} tokens fed, padding waste {lay['padding_waste']:.1%}", flush=True)
        settings.append(setting)
        return setting

    text = add_setting(TEXT, f"text {args.corpus}, ctx {args.ctx_len}", base, args.tokens)
    if args.conv_ctx:
        conv = base.replace(corpus=args.conv_corpus, messages_column="messages", score_roles=["assistant"],
                            unit_bytes=CONV_UNIT_BYTES)
        first_unit = args.conv_first_unit
        if first_unit is None:
            first_unit = first_chat_unit(open_manifest(corpus_spec(conv))) if args.conv_corpus == CONVERSATIONS else 0
        for ctx, stride in zip(args.conv_ctx, args.conv_strides, strict=True):
            add_setting(f"ctx{ctx}", f"conversations, ctx {ctx}" + (f", stride {stride}" if stride else ""),
                        conv.replace(ctx_len=ctx, stride=stride), args.conv_tokens, first_unit)
    conversations = [s for s in settings if s.key != TEXT]

    def build_saes(root: Path, setting: Setting) -> tuple[str, str]:
        if args.sae:
            return args.sae, args.sae
        return tuple(str(calibrated_sae(root, loaded, setting.batches, layer=args.layer, dict_size=size))
                     for size in (args.targeted_dict, args.all_dict))

    t0 = time.perf_counter()
    saes = {TEXT: build_saes(workdir, text)}
    if conversations:
        saes["conversations"] = build_saes(workdir / "conversations", conversations[0])
    if not args.sae:
        print(f"built calibrated random SAEs ({args.targeted_dict} and {args.all_dict} features, for "
              f"{' and '.join(saes)}) in {time.perf_counter() - t0:.0f} s", flush=True)
    targeted_info = read_sae_meta(saes[TEXT][0], layer=args.layer)
    rng = np.random.default_rng(0)
    features = np.sort(rng.choice(targeted_info.d_sae, size=args.features, replace=False)).astype(np.int64)
    for setting in settings:
        sae_c, sae_d = saes[TEXT if setting.key == TEXT else "conversations"]
        n_all = read_sae_meta(sae_d, layer=args.layer).d_sae
        setting.engines["c"] = MiningEngine(setting.config.replace(sae=sae_c, features=features.tolist()), features,
                                            loaded)
        setting.engines["d"] = MiningEngine(setting.config.replace(sae=sae_d, features="all"),
                                            np.arange(n_all, dtype=np.int64), loaded)
        setting.phases = {"b": Phase("b", "bare forward (capture only)"),
                          "c": Phase("c", f"personamine, {args.features} of {targeted_info.d_sae} features"),
                          "d": Phase("d", f"personamine, all {n_all} features")}
    text.phases["a"] = Phase("a", f"seed loop (batch 1, {args.features} features)")
    text.phases["e"] = Phase("e", f"seed loop as written (bf16 weights, {args.features} features)")
    texts = seed_texts(open_manifest(corpus_spec(base)), args.seed_texts)
    loaded_bf16 = load_model(args.model, args.layer, dtype="bfloat16", device=args.device) if "e" in args.phases \
        else None

    ae_path = seed_weights(saes[TEXT][0], args.layer) if set("ae") & set(args.phases) else None

    def run_seed(key: str, model) -> None:
        with PeakMemory() as mem, Timer(device) as timer:
            done = seed_loop(model, ae_path, features, texts, args.ctx_len, args.top_k)
        text.phases[key].record(done * args.ctx_len, done, timer, mem)

    def run_bare(setting: Setting) -> None:
        with PeakMemory() as mem, Timer(device) as timer, torch.inference_mode():
            for batch in setting.batches:
                capture_windows(loaded.model, loaded.layer_module, batch)
        setting.phases["b"].record(setting.fed, None, timer, mem)

    def run_engine(setting: Setting, key: str) -> None:
        # The forward's share of the run's own wall time (CPU: every op is synchronous) is a ratio measured within
        # one run, which other load on the machine cannot skew between phases.
        clock = ForwardClock(device)
        with clock.patched(), PeakMemory() as mem, Timer(device) as timer:
            result = run_shard(setting.engines[key], setting.shard)
        counters = result.stats.counters
        if counters["tokens_fed"] != setting.fed:
            print(f"  warning: {setting.key} ({key}) fed {counters['tokens_fed']:,} tokens, (b) {setting.fed:,}")
        setting.phases[key].record(counters["tokens_fed"], counters["tokens_scored"], timer, mem, clock.seconds())
        setting.results[key] = result

    steps = []  # (setting, phase, runner) in round-1 order
    for setting in settings:
        letters = "aebcd" if setting.key == TEXT else "bcd"
        for letter in letters:
            if letter not in args.phases:
                continue
            runner = {"a": lambda: run_seed("a", loaded), "e": lambda: run_seed("e", loaded_bf16),
                      "b": lambda s=setting: run_bare(s)}.get(letter, lambda s=setting, k=letter: run_engine(s, k))
            steps.append((setting, letter, runner))
    with torch.inference_mode():  # warm-up: first-call allocations and kernel selection stay out of round 1
        for setting in settings:
            capture_windows(loaded.model, loaded.layer_module, setting.batches[0])
    for r in range(args.rounds):
        # Alternate the order so a load that drifts over a round biases no phase.
        for setting, letter, runner in (steps if r % 2 == 0 else steps[::-1]):
            runner()
            ph = setting.phases[letter]
            print(f"  round {r + 1}/{args.rounds} {setting.key} {letter}: {ph.seconds[-1]:7.1f} s  "
                  f"{ph.fed[-1]:9.1f} tokens fed/s" + (f"  {ph.scored[-1]:9.1f} scored/s" if ph.scored else ""),
                  flush=True)

    write_seconds: dict[tuple[str, str], float] = {}
    for setting in settings:
        for key, result in setting.results.items():
            t0 = time.perf_counter()
            write_results(workdir / f"out-{setting.key}-{key}.h5", feature_ids=setting.engines[key].encoder.features,
                          buffer=result.buffer, stats=result.stats, attrs={}, samples=result.samples,
                          negatives=result.negatives)
            write_seconds[(setting.key, key)] = time.perf_counter() - t0

    print(f"\n## Results ({today()}, {machine()}, load avg {load_average()})")
    print(f"model {args.model} layer {args.layer}, {loaded.dtype} on {device}; {args.rounds} rounds, median shown\n")
    summary: dict = {"date": today(), "machine": machine(), "load_average": load_average(), "argv": sys.argv,
                     "model": args.model, "layer": args.layer, "rounds": args.rounds, "settings": {}}
    for setting in settings:
        summary["settings"][setting.key] = report_setting(setting, write_seconds)
    summary["memory_table"] = report_memory(settings)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    tmp.cleanup()
    return summary


def median_ratio(px: Phase, py: Phase, scored: bool = False) -> float | None:
    """The median of the per-round ratios of x's to y's tokens/s (fed, or scored)."""
    vx, vy = (px.scored, py.scored) if scored else (px.fed, py.fed)
    if not vx or not vy:
        return None
    return statistics.median(a / b for a, b in zip(vx, vy, strict=True))


def report_setting(setting: Setting, write_seconds: dict) -> dict:
    """The setting's phase table and its ratios against the goals, printed; returns them for the JSON."""
    lay = setting.layout()
    print(f"### {setting.title}: {lay['documents']:,} documents, {lay['windows']:,} windows "
          f"({lay['windowed']:,} documents longer than one), batches of <= {setting.batch_tokens} tokens, "
          f"padding waste {lay['padding_waste']:.1%}\n")
    order = [k for k in "aebcd" if k in setting.phases and setting.phases[k].fed]
    rows = []
    for key in order:
        ph = setting.phases[key]
        result = setting.results.get(key)
        firing = (f"{result.stats.active_tokens.sum() / max(result.stats.counters['tokens_scored'], 1):.1f}"
                  if result is not None else "-")
        rows.append([f"({key}) {ph.label}", f"{ph.tokens_fed:,}", f"{statistics.median(ph.fed):,.1f}",
                     f"{statistics.median(ph.scored):,.1f}" if ph.scored else "-",
                     f"{statistics.median(ph.cpu_fed):,.1f}",
                     f"{statistics.median(ph.forward_share):.1%}" if ph.forward_share else "-", firing,
                     mib(ph.peak_rss), mib(ph.rss_growth), mib(ph.cuda_peak),
                     f"{write_seconds[(setting.key, key)]:.2f}" if (setting.key, key) in write_seconds else "-"])
    table = print_table(["phase", "tokens fed", "fed/s", "scored/s", "fed/CPU-s", "forward share", "firing/token",
                         "peak RSS MiB", "RSS growth MiB", "GPU peak MiB", "HDF5 write s"], rows)
    p = setting.phases
    ratios = {"c/b": ("c", "b", False), "d/b": ("d", "b", False)}
    if setting.key == TEXT:
        ratios.update({"c/a": ("c", "a", False), "c/a scored": ("c", "a", True), "c/e": ("c", "e", False),
                       "c/e scored": ("c", "e", True)})
    values = {name: median_ratio(p[x], p[y], scored) if x in order and y in order else None
              for name, (x, y, scored) in ratios.items()}
    in_run = {"c/b": p["c"].forward_share, "d/b": p["d"].forward_share}
    print()
    ratio_rows = [[name, f"{value:,.2f}", f"{statistics.median(in_run[name]):.2f}" if in_run.get(name) else "-",
                   f">= {GOALS[name]:g}", "met" if value >= GOALS[name] else "NOT met"]
                  for name, value in values.items() if value is not None]
    ratio_table = print_table(["ratio (tokens/s)", "measured", "forward share in run", "goal", ""], ratio_rows)
    print()
    return {"title": setting.title, "ctx_len": setting.config.ctx_len, "stride": setting.config.stride,
            "corpus": setting.config.corpus, "batch_tokens": setting.batch_tokens, "layout": lay,
            "phases": {k: vars(p[k]) for k in order}, "ratios": values,
            "write_seconds": {k: v for (s, k), v in write_seconds.items() if s == setting.key},
            "buffers": buffer_sizes(setting.results["d"], setting.config.ctx_len) if "d" in setting.results else None,
            "table": table, "ratio_table": ratio_table}


def report_memory(settings: list[Setting]) -> str | None:
    """The all-features run at each ctx: its peak RSS and what its buffers hold, against the dense layout."""
    from personamine.merge.samples import N_INTERVALS

    rows = []
    for setting in settings:
        if "d" not in setting.results:
            continue
        sizes = buffer_sizes(setting.results["d"], setting.config.ctx_len)
        ph, bare = setting.phases["d"], setting.phases["b"]
        engine = setting.engines["d"]
        n, cfg = engine.encoder.n_features, engine.config
        k = cfg.top_k
        bound = {"top-k": n * k, "interval samples": n * N_INTERVALS * cfg.samples_per_interval,
                 "non-activating": n * cfg.negatives_per_feature}
        rows.append([f"ctx {cfg.ctx_len} ({'text' if setting.key == TEXT else 'conversations'})",
                     "(d) run", "-", "-", "-", "-", "-",
                     f"peak RSS {mib(ph.peak_rss)} MiB, growth {mib(ph.rss_growth)} (b: {mib(bare.rss_growth)})"])
        for name in ("top-k", "interval samples", "non-activating"):
            if name in sizes:
                s = sizes[name]
                rows.append(["", name, f"{s['entries']:,}", f"{bound[name]:,}",
                             f"{s['window_rows']:,} x {s['token_width']}", f"{s['token_bytes'] / 2**20:,.2f}",
                             f"{s['bytes'] / 2**20:,.2f}", f"{s['bytes'] / max(s['entries'], 1):,.0f} B/entry"])
        rows.append(["", f"dense [F, K, {cfg.ctx_len}] top-k", "-", f"{n * k:,}", "-", "-",
                     f"{sizes['dense_topk_bytes'] / 2**20:,.0f}", "token ids + activations + roles, 9 B a cell"])
    if not rows:
        return None
    print("### All features: memory of the (d) run and of its buffers (last round)\n")
    return print_table(["ctx", "buffer", "entries", "at most", "window rows x token width", "token arrays MiB",
                        "MiB", ""], rows)



if __name__ == "__main__":
    main()
