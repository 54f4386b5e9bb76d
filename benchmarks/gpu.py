"""The real shapes on a GPU, in one prepared command: Llama-3.1-8B-Instruct through layer 15, a 131,072-feature SAE.

Everything is built on the device, with no download (``_gpu_build.py``): a random-weight model with Llama-3.1-8B-
Instruct's exact config in bf16 (the checkpoint holds layers 0-15, what a truncated load reads), a small stand-in
tokenizer (token ids come from the corpora), a random 131,072 x 4,096 dictionary_learning BatchTopK SAE whose
threshold is calibrated on the model's own layer-15 activations (about 32 features fire per token), and two
pre-tokenized jsonl corpora of random token ids (``tokens_column``: mined as they are). Then, in one process, with
the real engine (``MiningEngine`` + ``run_shard`` on a ``Shard`` of the corpus's units):

  b  the bare early-stopped forward over the engine's own batches (``engine.batches``, then ``capture_windows``)
  c  mining 20 features
  d  mining all 131,072 features

at ctx 128 and at ctx 1,024 (long windows: stride 512, 64-token display spans), each at several ``batch_tokens``.
Round 1 sweeps every batch size; later rounds repeat the best ones in reverse order (interleaved, so drift hits
all phases alike). Also: device memory (the truncated load vs the whole 32-layer model; each phase's peak as if it
ran alone), the forward's share of each mining run (CUDA events), one profiled run per phase (GPU busy time, top
kernels, host-device syncs by source line), the forward under each SDPA backend on a packed batch, and a bf16
exactness check (``_gpu_checks.check_top_windows``). Writes ``OUT/gpu.json`` and ``OUT/gpu.md`` after every step,
so a run stopped by its time limit still leaves what it measured.

    python benchmarks/gpu.py --out gpu-bench-out        # on a GPU (~5 min on an H200, see --budget-s)
    python benchmarks/gpu.py --tiny --out /tmp/tiny     # the same code on the CPU at test size (seconds)
    benchmarks/gpu_run.sh                               # on a bare GPU machine: installs wheels/, then runs this
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # this checkout's personamine: a GPU machine has it installed nowhere

from _common import PeakMemory, Timer, format_table, load_average, machine, offline, placeholder_sae, today  # noqa: E402
from _gpu_build import REAL, TINY, Mode, Shapes, build_checkpoint, build_sae, load_truncated, write_corpus  # noqa: E402
from _gpu_checks import ForwardClock, check_top_windows, diagnose, encoder_precisions, sdpa_backends  # noqa: E402,E501

GIB = 2**30
PHASES = {"b": "bare forward", "c": "mine 20 features", "d": "mine all features"}
# The goals on one H200 or H100 (fed tokens/s; memory at ctx 128).
GOALS = {"c": 60_000, "d": 45_000, "c/b": 0.9, "c_memory_gib": 9.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the same code at test size (CPU, seconds)")
    p.add_argument("--quick", action="store_true", help="half the corpora and one round: about half the time")
    p.add_argument("--out", default="gpu-bench-out", help="folder for gpu.json and gpu.md (gpu-tiny.* with --tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="model dtype (auto: bf16 on a GPU, fp32 on the CPU)")
    p.add_argument("--batch-tokens", default=None, help="comma-separated batch_tokens to sweep (real: "
                   f"{','.join(map(str, REAL.batch_tokens))})")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every corpus's token count (0.5: half)")
    p.add_argument("--rounds", type=int, default=2, help="round 1 sweeps every batch size; later rounds repeat the "
                   "best ones")
    p.add_argument("--modes", default=None, help="comma-separated subset of the window modes (real: ctx128,ctx1024)")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting new measurements after this many "
                   "seconds (what was measured is written; a later step is listed as skipped)")
    p.add_argument("--no-full-model", action="store_true", help="skip materialising the whole 32-layer model")
    p.add_argument("--workdir", default=None, help="where the model, SAE and corpora are built (default: a temp dir, "
                   "in /dev/shm when it has room: the 12 GB of files are written and read back at memory speed)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (--tiny: 1; tiny shapes gain "
                   "nothing from more, and on a shared machine OpenMP's spin-waits cost 4x)")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.rounds = args.scale / 2, 1
    return args


# ---------------------------------------------------------------------------------------------------------------
class Report:
    """The run's JSON and Markdown, rewritten (atomically) after every step."""

    def __init__(self, out: Path, name: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.json_path, self.md_path = out / f"{name}.json", out / f"{name}.md"
        self.data: dict = {"runs": [], "skipped": [], "errors": [], "exactness": {}, "diagnostics": {},
                           "sdpa_backends": {}, "setup": {}}

    def save(self) -> None:
        from personamine.atomic import atomic_write_bytes

        try:
            self.data["summary"] = summarize(self.data["runs"])
            self.data["goals"] = goals(self.data)
            text = markdown(self.data)
        except Exception:  # the measurements must reach the JSON even if rendering them fails
            self.data["render_error"] = traceback.format_exc()
            text = f"# GPU benchmark\n\nThe report could not be rendered:\n\n```\n{self.data['render_error']}```\n"
        atomic_write_bytes(self.json_path, json.dumps(self.data, indent=1, default=str).encode())
        atomic_write_bytes(self.md_path, text.encode())


class Budget:
    def __init__(self, seconds: float | None) -> None:
        self.t0, self.seconds = time.perf_counter(), seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def allows(self, estimate: float) -> bool:
        return self.seconds is None or self.elapsed() + estimate <= self.seconds


def log(budget: Budget, message: str) -> None:
    print(f"[{budget.elapsed():6.1f} s] {message}", flush=True)


@dataclass
class Point:
    """One (window mode, batch size): its corpus shard, its engines and, for (b), the engine's own batches."""

    mode: Mode
    batch_tokens: int
    shard: object
    docs: list[list[int]]
    engines: dict = field(default_factory=dict)  # phase -> (engine, device bytes it keeps resident)
    batches: list = field(default_factory=list)
    fed: int = 0


def allocated(device) -> int:
    import torch

    return int(torch.cuda.memory_allocated()) if device.type == "cuda" else 0


def make_engine(config, features: np.ndarray, loaded):
    from personamine.shards.run import MiningEngine

    before = allocated(loaded.device)
    engine = MiningEngine(config, features, loaded)
    resident = allocated(loaded.device) - before if loaded.device.type == "cuda" else engine.encoder.nbytes
    return engine, int(resident)


def steady_rate(marks: list[tuple[float, int]]) -> float | None:
    """Fed tokens/s over the second half of a run's batches (the top-k buffers fill during the first ones)."""
    if len(marks) < 4:
        return None
    half = len(marks) // 2
    seconds = marks[-1][0] - marks[half - 1][0]
    return sum(fed for _, fed in marks[half:]) / seconds if seconds > 0 else None


def measure(point: Point, phase: str, round_: int, model_bytes: int) -> tuple[dict, object]:
    import torch

    from personamine.shards.run import run_shard
    from personamine.shards.windows import capture_windows

    engine, resident = point.engines["c" if phase == "b" else phase]
    loaded, device = engine.loaded, engine.device
    base = allocated(device)
    marks: list[tuple[float, int]] = []
    clock = ForwardClock(device)
    result = None
    with clock.patched(), PeakMemory() as mem, Timer(device) as timer:
        if phase == "b":
            with torch.inference_mode():
                for batch in point.batches:
                    capture_windows(loaded.model, loaded.layer_module, batch)
        else:
            result = run_shard(engine, point.shard, on_batch=lambda fed, *_: marks.append((time.perf_counter(), fed)))
    fed = point.fed if phase == "b" else result.stats.counters["tokens_fed"]
    counters = None if phase == "b" else result.stats.counters
    scored = None if counters is None else counters["tokens_scored"]
    transient = None if mem.cuda_peak is None else mem.cuda_peak - base
    row = {"mode": point.mode.name, "phase": phase, "batch_tokens": point.batch_tokens, "round": round_,
           "wall_s": timer.wall, "tokens_fed": int(fed), "tokens_scored": scored, "fed_per_s": fed / timer.wall,
           "scored_per_s": None if scored is None else scored / timer.wall, "steady_fed_per_s": steady_rate(marks),
           "tokens_norm_filtered": None if counters is None else counters["tokens_norm_filtered"],
           "forward_share": 1.0 if phase == "b" else clock.seconds() / timer.wall,
           "batches": len(point.batches) if phase == "b" else len(marks), "gpu_peak_bytes": mem.cuda_peak,
           "gpu_transient_bytes": transient, "rss_peak_bytes": mem.peak,
           # What the phase would hold with nothing else on the device: the model, its own engine, its run.
           "gpu_alone_bytes": None if transient is None else model_bytes + (0 if phase == "b" else resident)
           + transient}
    return row, result


# ---------------------------------------------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    """Per mode and phase: the median fed/s at each batch size over its rounds, the best batch size; per mode and
    batch size, the medians of the per-round ratios c/b and d/b."""
    out: dict = {}
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        entry: dict = {"phases": {}, "ratios": {}}
        for phase in PHASES:
            sizes: dict = {}
            for bt in sorted({r["batch_tokens"] for r in mine if r["phase"] == phase}):
                rows = [r for r in mine if r["phase"] == phase and r["batch_tokens"] == bt]
                steady = [r["steady_fed_per_s"] for r in rows if r["steady_fed_per_s"]]
                alone = [r["gpu_alone_bytes"] for r in rows if r["gpu_alone_bytes"] is not None]
                sizes[bt] = {"fed_per_s": statistics.median(r["fed_per_s"] for r in rows), "rounds": len(rows),
                             "scored_per_s": statistics.median(r["scored_per_s"] for r in rows)
                             if rows[0]["scored_per_s"] is not None else None,
                             "steady_fed_per_s": statistics.median(steady) if steady else None,
                             "forward_share": statistics.median(r["forward_share"] for r in rows),
                             "gpu_alone_bytes": max(alone) if alone else None}
            if sizes:
                best = max(sizes, key=lambda bt: sizes[bt]["fed_per_s"])
                entry["phases"][phase] = {"best_batch_tokens": best, "best": sizes[best], "by_batch_tokens": sizes}
        for bt in sorted({r["batch_tokens"] for r in mine}):
            by_round = {(r["phase"], r["round"]): r["fed_per_s"] for r in mine if r["batch_tokens"] == bt}
            ratios = {}
            for x in ("c", "d"):
                per = [by_round[(x, k)] / by_round[("b", k)] for (p, k) in by_round if p == x and ("b", k) in by_round]
                ratios[f"{x}/b"] = statistics.median(per) if per else None
            entry["ratios"][bt] = ratios
        out[mode] = entry
    return out


def goals(data: dict) -> list[dict]:
    """The issue's goals against what was measured (at each phase's best batch size); only on a GPU."""
    meta = data.get("meta", {})
    if meta.get("tiny") or meta.get("device_type") != "cuda":
        return []
    rows = []
    for mode, entry in data.get("summary", {}).items():
        phases = entry["phases"]
        for phase in ("c", "d"):
            if phase in phases:
                value = phases[phase]["best"]["fed_per_s"]
                rows.append({"goal": f"({phase}) fed tokens/s, {mode}", "target": f">= {GOALS[phase]:,}",
                             "measured": f"{value:,.0f}", "met": value >= GOALS[phase]})
        if "c" in phases:
            best = phases["c"]["best_batch_tokens"]
            ratio = entry["ratios"].get(best, {}).get("c/b")
            if ratio is not None:
                rows.append({"goal": f"c/b at c's best batch size ({best}), {mode}", "target": f">= {GOALS['c/b']}",
                             "measured": f"{ratio:.2f}", "met": ratio >= GOALS["c/b"]})
            alone = phases["c"]["best"]["gpu_alone_bytes"]
            if alone is not None and mode == "ctx128":
                rows.append({"goal": f"GPU peak, (c) alone at {best} tokens/batch, {mode}",
                             "target": f"<= {GOALS['c_memory_gib']} GiB", "measured": f"{alone / GIB:.2f} GiB",
                             "met": alone / GIB <= GOALS["c_memory_gib"]})
                fits = {bt: v for bt, v in phases["c"]["by_batch_tokens"].items()
                        if v["gpu_alone_bytes"] is not None and v["gpu_alone_bytes"] <= GOALS["c_memory_gib"] * GIB}
                if fits:  # both goals at once: the fastest batch size that stays within the memory goal
                    bt = max(fits, key=lambda k: fits[k]["fed_per_s"])
                    rate = fits[bt]["fed_per_s"]
                    rows.append({"goal": f"(c) fed tokens/s within {GOALS['c_memory_gib']} GiB ({bt} tokens/batch), "
                                         f"{mode}", "target": f">= {GOALS['c']:,}", "measured": f"{rate:,.0f}",
                                 "met": rate >= GOALS["c"]})
    return rows


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def markdown(data: dict) -> str:
    meta, setup = data.get("meta", {}), data.get("setup", {})
    lines = [f"# GPU benchmark: {meta.get('shapes', '')}", "",
             f"{meta.get('date', '')}; {meta.get('machine', '')}; load avg {meta.get('load_average', '')}; "
             f"model dtype {meta.get('dtype', '')}; {meta.get('elapsed_s', 0):.0f} s in all.", ""]
    rows = []
    for mode, entry in data.get("summary", {}).items():
        for phase, info in entry["phases"].items():
            for bt, v in info["by_batch_tokens"].items():
                ratio = entry["ratios"].get(bt, {}).get(f"{phase}/b") if phase != "b" else None
                rows.append([f"{mode} ({phase}) {PHASES[phase]}", f"{bt:,}" + (" *" if bt == info["best_batch_tokens"]
                                                                              else ""),
                             _num(v["fed_per_s"]), _num(v["scored_per_s"]), _num(v["steady_fed_per_s"]),
                             _num(ratio, ".2f"), f"{v['forward_share']:.0%}", _gib(v["gpu_alone_bytes"]),
                             v["rounds"]])
    if rows:
        lines += ["## Throughput (median over rounds; * = the phase's best batch size)", "",
                  format_table(["mode, phase", "batch tokens", "fed/s", "scored/s", "steady fed/s", "x/b",
                                "forward share", "GPU GiB alone", "rounds"], rows), "",
                  "steady fed/s: the second half of the run's batches (the top-k buffers fill in the first ones). "
                  "GPU GiB alone: model + the phase's engine + its run's peak, as if nothing else were loaded.", ""]
    if data.get("goals"):
        lines += ["## Goals", "", format_table(["goal", "target", "measured", ""],
                                               [[g["goal"], g["target"], g["measured"], "met" if g["met"] else
                                                 "NOT met"] for g in data["goals"]]), ""]
    memory = [[name, info.get("layers", "-"), _gib(info.get("weights_bytes")), _gib(info.get("gpu_peak_bytes")),
               info.get("how", "")] for name, info in
              (("whole model", setup.get("full_model")), ("truncated load", setup.get("truncated_model"))) if info]
    if memory:
        lines += ["## Model memory", "", format_table(["model", "layers", "weights GiB", "GPU peak GiB", "how"],
                                                       memory), ""]
    if data.get("exactness"):
        lines += ["## Exactness (sampled (c) top-k windows, each recomputed alone)", "",
                  format_table(["mode", "windows", "dtype", "tolerance", "max abs err", "max rel err",
                                "median rel err", "tokens", ""],
                               [[m, e.get("windows", 0), e.get("dtype", ""), f"{e.get('atol')} + {e.get('rtol')} x ref",
                                 _num(e.get("max_abs_err"), ".2e"), _num(e.get("max_rel_err"), ".2e"),
                                 _num(e.get("median_rel_err"), ".2e"), "match" if e.get("tokens_match") else "DIFFER",
                                 "passed" if e.get("passed") else "FAILED"] for m, e in data["exactness"].items()]),
                  ""]
    matmul = data.get("encoder_matmul", {})
    variants = [[name, _num(v.get("tokens_per_s")), _num(v.get("rel_err"), ".1e"), _num(v.get("max_abs_err"), ".1e"),
                 f"{v['threshold_flips']} of {v['active_pairs']}" if "threshold_flips" in v else v.get("error", "")]
                for name, v in matmul.items() if isinstance(v, dict)]
    if variants:
        lines += [f"## The all-features encoder's matmul alone ({matmul['tokens']:,} tokens x {matmul['features']:,} "
                  f"features, chunks of {matmul['chunk_size']:,}; error vs {matmul['reference']})", "",
                  format_table(["precision", "tokens/s", "rel err", "max abs err", "threshold flips"], variants),
                  "", "fp32 is what the engine runs; bf16x3: each operand split into two bf16 halves, three bf16 GEMMs "
                  "accumulated in fp32.", ""]
    diag = []
    for key, d in data.get("diagnostics", {}).items():
        top = ", ".join(f"{k['kernel'][:40]} {k['seconds']:.2f}s" for k in d.get("top_kernels", [])[:3])
        syncs = d.get("syncs", {})
        diag.append([key, f"{d['forward_share']:.0%}", _num(d.get("gpu_busy_share"), ".0%"),
                     _num(syncs.get("per_batch"), ".1f"), d.get("attention_path", "-"), top or "-"])
    if diag:
        lines += ["## Where the time goes (one profiled run each)", "",
                  format_table(["run", "forward share", "GPU busy", "syncs/batch", "attention", "top kernels"], diag),
                  ""]
    for mode, backends in data.get("sdpa_backends", {}).items():
        cells = ", ".join(f"{k}: {v['ms']:.1f} ms" if "ms" in v else f"{k}: refused" for k, v in backends.items()
                          if isinstance(v, dict))
        lines.append(f"- SDPA backends on one {'packed ' if backends.get('packed') else ''}batch "
                     f"{backends.get('shape')}, {mode}: {cells}")
    for s in data.get("skipped", []):
        lines.append(f"- skipped: {s}")
    for e in data.get("errors", []):
        lines.append(f"- ERROR: {e.splitlines()[-1] if e else e}")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------------------
def meta_info(args: argparse.Namespace, shapes: Shapes, device, dtype) -> dict:
    import torch

    modules = {}
    for name in ("torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy", "fsspec", "h5py",
                 "dictionary_learning", "pyarrow", "datasets", "ray"):
        module = sys.modules.get(name)
        if module is not None:
            modules[name] = getattr(module, "__version__", "?")
    info = {"date": today(), "machine": machine(), "load_average": load_average(), "argv": sys.argv,
            "tiny": args.tiny, "shapes": shapes.name, "layer": shapes.layer, "dict_size": shapes.dict_size,
            "device_type": device.type, "dtype": str(dtype).removeprefix("torch."),
            "modes": [asdict(m) for m in shapes.modes], "batch_tokens": list(shapes.batch_tokens),
            "modules": modules, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_bytes": props.total_memory,
                       "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
    return info


def scratch_dir(needed: int = 16 * GIB) -> str | None:
    """/dev/shm when it has room for the checkpoint and the SAE (11.5 GB), else the default temp dir."""
    shm = Path("/dev/shm")
    try:
        return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > needed else None
    except OSError:
        return None


def pick_shapes(args: argparse.Namespace) -> Shapes:
    shapes = TINY if args.tiny else REAL
    modes = tuple(replace(m, doc_tokens=max(int(m.doc_tokens * args.scale), 1)) for m in shapes.modes)
    if args.modes:
        wanted = args.modes.split(",")
        modes = tuple(m for m in modes if m.name in wanted)
    sizes = tuple(int(s) for s in args.batch_tokens.split(",")) if args.batch_tokens else shapes.batch_tokens
    return replace(shapes, modes=modes, batch_tokens=sizes)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline()
    import torch

    from personamine.model.loading import pick_device, pick_dtype

    shapes = pick_shapes(args)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    threads = args.threads or (1 if args.tiny else None)
    if threads:
        torch.set_num_threads(threads)
    budget = Budget(args.budget_s)
    report = Report(Path(args.out), "gpu-tiny" if args.tiny else "gpu")
    report.data["meta"] = meta_info(args, shapes, device, dtype)
    tmp = tempfile.TemporaryDirectory(prefix="personamine-gpu-", dir=None if args.tiny else scratch_dir())
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    log(budget, f"gpu benchmark: {shapes.name} on {device} ({report.data['meta']['dtype']}), {machine()}")
    try:
        run(args, shapes, device, dtype, workdir, budget, report)
    except BaseException:
        report.data["errors"].append(traceback.format_exc())
        raise
    finally:
        report.data["meta"]["elapsed_s"] = budget.elapsed()
        report.data["meta"]["modules"].update(meta_info(args, shapes, device, dtype)["modules"])
        report.save()
        tmp.cleanup()
        print("\n" + report.md_path.read_text(), flush=True)
    return report.data


@dataclass
class Prepared:
    loaded: object
    points: dict  # (mode name, batch_tokens) -> Point
    sae_file: Path
    model_bytes: int


def prepare(args, shapes: Shapes, device, dtype, workdir: Path, budget: Budget, report: Report) -> Prepared:
    """Build the checkpoint, load it truncated, write the corpora, build and calibrate the SAE, make the engines
    and warm them up."""
    import torch

    from personamine.config import MineConfig
    from personamine.corpus import open_manifest
    from personamine.jobs.mine import corpus_spec
    from personamine.merge.stats import FeatureStats
    from personamine.shards.plan import Shard
    from personamine.shards.run import run_shard
    from personamine.shards.windows import capture_windows

    setup, dtype_name = report.data["setup"], str(dtype).removeprefix("torch.")
    t0 = time.perf_counter()
    model_dir = workdir / "model"
    setup.update(build_checkpoint(shapes, model_dir, device, dtype, measure_full=not args.no_full_model))
    setup["seconds_checkpoint"] = time.perf_counter() - t0
    log(budget, f"checkpoint built and saved ({setup['checkpoint_bytes'] / GIB:.2f} GiB)")
    t0 = time.perf_counter()
    loaded, setup["truncated_model"] = load_truncated(model_dir, shapes.layer, device, dtype_name, args.device)
    setup["seconds_load"] = time.perf_counter() - t0
    model_bytes = setup["truncated_model"]["gpu_resident_bytes"] or setup["truncated_model"]["weights_bytes"]
    log(budget, f"truncated model loaded: {_gib(model_bytes)} GiB on the device")
    report.save()

    def config(mode: Mode, corpus: Path, sae: str, bt: int, features, calibrated: bool = True) -> MineConfig:
        return MineConfig(model=str(model_dir), layer=shapes.layer, sae=sae, features=features, corpus=str(corpus),
                          tokens_column="tokens", ctx_len=mode.ctx_len, stride=mode.stride,
                          example_len=mode.example_len, batch_tokens=bt, dtype=dtype_name, device=args.device,
                          preflight_tokens=0, progress=False, unit_bytes=1 << 30, allow_uncalibrated=not calibrated)

    corpora = {}
    for i, mode in enumerate(shapes.modes):
        path = workdir / f"corpus-{mode.name}.jsonl"
        docs = write_corpus(path, mode, int(shapes.model["vocab_size"]), shapes.first_id, seed=10 + i)
        manifest = open_manifest(corpus_spec(config(mode, path, "", shapes.batch_tokens[0], [0])))
        corpora[mode.name] = (path, docs, Shard(tuple(manifest.ref(u) for u in range(len(manifest)))))
        setup.setdefault("corpora", {})[mode.name] = {"documents": len(docs), "tokens": sum(map(len, docs)),
                                                      "units": len(manifest)}

    # The SAE is calibrated on activations of windows the engine cuts: a placeholder SAE lets one be built first.
    t0 = time.perf_counter()
    first = shapes.modes[0]
    path, _, shard = corpora[first.name]
    probe, _ = make_engine(config(first, path, str(placeholder_sae(workdir, loaded, shapes.layer)),
                                  shapes.batch_tokens[0], [0], calibrated=False), np.array([0]), loaded)
    sae_root = build_sae(workdir, loaded, probe.batches(shard, [], FeatureStats.empty(0).counters), shapes,
                         probe.config.norm_filter)
    sae_file = sae_root / f"resid_post_layer_{shapes.layer}" / "trainer_0" / "ae.pt"
    del probe
    setup["sae"] = {"features": shapes.dict_size, "file_bytes": sae_file.stat().st_size,
                    "threshold": float(torch.load(sae_file, mmap=True, weights_only=True)["threshold"]),
                    "seconds": time.perf_counter() - t0}
    log(budget, f"SAE built and calibrated: {shapes.dict_size} features, threshold {setup['sae']['threshold']:.4g}")

    rng = np.random.default_rng(0)
    targeted = np.sort(rng.choice(shapes.dict_size, size=shapes.features, replace=False)).astype(np.int64)
    points: dict[tuple[str, int], Point] = {}
    t0 = time.perf_counter()
    for mode in shapes.modes:
        path, docs, shard = corpora[mode.name]
        for bt in shapes.batch_tokens:
            point = Point(mode, bt, shard, docs)
            point.engines["c"] = make_engine(config(mode, path, str(sae_root), bt, targeted.tolist()), targeted,
                                             loaded)
            point.batches = list(point.engines["c"][0].batches(shard, [], FeatureStats.empty(0).counters))
            point.fed = int(sum(int(b.real.sum()) for b in point.batches))
            points[(mode.name, bt)] = point
    every = np.arange(shapes.dict_size, dtype=np.int64)
    for point in points.values():  # after the (c) engines: their resident bytes are measured alone
        point.engines["d"] = make_engine(config(point.mode, corpora[point.mode.name][0], str(sae_root),
                                                point.batch_tokens, "all"), every, loaded)
    setup["engines"] = {f"{m} {bt}": {p: point.engines[p][1] for p in ("c", "d")} for (m, bt), point in
                        points.items()}
    setup["seconds_engines"] = time.perf_counter() - t0
    log(budget, f"{2 * len(points)} engines built in {setup['seconds_engines']:.0f} s")

    # Warm-up: kernel selection, cuBLAS handles and first-call allocations stay out of round 1.
    for mode in shapes.modes:
        point = points[(mode.name, shapes.batch_tokens[0])]
        with torch.inference_mode():
            capture_windows(loaded.model, loaded.layer_module, point.batches[0])
        short = Shard(point.shard.units, row_limit=min(8, len(point.docs)))
        for phase in ("c", "d"):
            run_shard(point.engines[phase][0], short)
    report.save()
    log(budget, "warm-up done")
    return Prepared(loaded, points, sae_file, model_bytes)


def run(args, shapes: Shapes, device, dtype, workdir: Path, budget: Budget, report: Report) -> None:
    """Round 1 over every point; the exactness check and the encoder's matmul; the profiled runs and the SDPA
    backends at the best points; then the later rounds, as long as the time budget allows."""
    import torch

    from personamine.shards.run import run_shard
    from personamine.shards.windows import capture_windows, scored_tokens

    prep = prepare(args, shapes, device, dtype, workdir, budget, report)
    loaded, points = prep.loaded, prep.points
    estimates: dict[tuple[str, str, int], float] = {}
    keep_c: dict[str, object] = {}
    exact_bt = shapes.batch_tokens[len(shapes.batch_tokens) // 2]

    def attempt(step: str, work) -> None:
        try:
            work()
        except Exception:  # one failed step must not cost the rest of the run
            report.data["errors"].append(f"{step}:\n{traceback.format_exc()}")
            log(budget, f"{step}: FAILED")

    def measure_point(point: Point, phase: str, round_: int) -> None:
        key = (point.mode.name, phase, point.batch_tokens)
        what = f"round {round_} {point.mode.name} ({phase}) at {point.batch_tokens} tokens/batch"
        if not budget.allows(estimates.get(key, 0.0)):
            report.data["skipped"].append(f"{what}: time budget")
            return

        def work() -> None:
            row, result = measure(point, phase, round_, prep.model_bytes)
            estimates[key] = row["wall_s"]
            report.data["runs"].append(row)
            if phase == "c" and round_ == 1 and point.batch_tokens == exact_bt:
                keep_c[point.mode.name] = result
            log(budget, f"{what}: {row['fed_per_s']:,.0f} fed/s, {row['wall_s']:.1f} s, GPU alone "
                        f"{_gib(row['gpu_alone_bytes'])} GiB")

        attempt(what, work)

    for mode in shapes.modes:
        for j, bt in enumerate(shapes.batch_tokens):
            for phase in ("bcd" if j % 2 == 0 else "dcb"):
                measure_point(points[(mode.name, bt)], phase, 1)
        report.save()

    for mode in shapes.modes:
        if mode.name not in keep_c:
            report.data["skipped"].append(f"exactness check, {mode.name}: no (c) run at {exact_bt} tokens/batch")
            continue
        point = points[(mode.name, exact_bt)]

        def check(point: Point = point) -> None:
            out = check_top_windows(point.engines["c"][0], keep_c[point.mode.name], point.docs, prep.sae_file,
                                    shapes.sample, seed=1)
            report.data["exactness"][point.mode.name] = out
            log(budget, f"exactness check, {point.mode.name}: {'passed' if out['passed'] else 'FAILED'}")

        attempt(f"exactness check, {mode.name}", check)
    keep_c.clear()

    def encoder_matmul() -> None:  # what the all-features encoder's matmul costs, and how exact it stays
        point = points[(shapes.modes[0].name, shapes.batch_tokens[0])]
        engine = point.engines["d"][0]
        with torch.inference_mode():
            batch = point.batches[0]
            hidden = capture_windows(loaded.model, loaded.layer_module, batch)
            scored, _ = scored_tokens(hidden, batch, engine.config.norm_filter)
            report.data["encoder_matmul"] = encoder_precisions(prep.sae_file, hidden[scored],
                                                               report.data["setup"]["sae"]["threshold"],
                                                               engine.config.feature_chunk)
        log(budget, "encoder matmul precisions measured")

    attempt("encoder matmul precisions", encoder_matmul)
    report.save()

    summary = summarize(report.data["runs"])
    for mode in shapes.modes:
        phases = summary.get(mode.name, {}).get("phases", {})
        for phase in ("c", "d"):
            if phase not in phases:
                continue
            point = points[(mode.name, phases[phase]["best_batch_tokens"])]
            key = f"{mode.name} ({phase}) {point.batch_tokens}"
            if not budget.allows(2 * estimates.get((mode.name, phase, point.batch_tokens), 0.0)):
                report.data["skipped"].append(f"profiled run, {key}: time budget")
                continue

            def profiled(key: str = key, point: Point = point, phase: str = phase) -> None:
                report.data["diagnostics"][key] = diagnose(point.engines[phase][0], point.shard, run_shard)
                log(budget, f"profiled run, {key} done")

            attempt(f"profiled run, {key}", profiled)
        # The smallest batches first: a refused fast kernel leaves the math one materialising [rows, heads, L, L].
        batches = [b for bt in shapes.batch_tokens for b in points[(mode.name, bt)].batches]
        packed = next((b for b in batches if b.segment is not None), batches[0])  # the 4D mask is what decides

        def backends(mode: Mode = mode, packed=packed) -> None:
            report.data["sdpa_backends"][mode.name] = sdpa_backends(loaded, packed)

        attempt(f"SDPA backends, {mode.name}", backends)
        report.save()

    for round_ in range(2, args.rounds + 1):
        for mode in shapes.modes:
            phases = summary.get(mode.name, {}).get("phases", {})
            for bt in sorted({info["best_batch_tokens"] for info in phases.values()}, reverse=True):
                for phase in ("dcb" if round_ % 2 == 0 else "bcd"):
                    measure_point(points[(mode.name, bt)], phase, round_)
            report.save()
    log(budget, "done")

if __name__ == "__main__":
    main()
