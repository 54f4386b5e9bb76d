"""Shared shards of the benchmarks: defaults, machine description, memory sampling, a calibrated random SAE.

The benchmarks are scripts, not tests: run them from the repository root (``python benchmarks/<name>.py``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.valid.raw"
DEFAULT_MODEL = "builtin:smollm2-135m-instruct"
BUILTIN_CORPUS = "builtin:chat-and-prose"
SAE_FIRING_PER_TOKEN = 32  # like the k=32 trainer of andyrdt/saes-llama-3.1-8b-instruct (trainer_0)

# tests/fixtures.py builds the SAE files the tests use; the benchmarks reuse it instead of a second writer.
sys.path.insert(0, str(ROOT / "tests"))


def default_corpus() -> str:
    """WikiText-2 validation (the seed's corpus family) when the shared copy is present, else the built-in one."""
    return str(WIKITEXT) if WIKITEXT.is_file() else BUILTIN_CORPUS


def offline() -> None:
    """Benchmarks never download: built-in model and local files only."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [f"{os.cpu_count()} cores ({cpu})", f"torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


def today() -> str:
    return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def rss_bytes() -> int:
    """Resident set size now (Linux /proc; elsewhere the process peak, which is all we can get)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak RSS: Linux's VmHWM, because ru_maxrss of a child started by fork + exec starts at the
    parent's RSS at the fork (measured: a 10 MiB child of a 317 MiB parent reports 317 MiB)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Peak RSS (sampled every few ms on a thread) and peak CUDA memory within a ``with`` block.

    ru_maxrss only ever grows over the whole process, so per-phase peaks in one process need sampling.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self.start = 0
        self.cuda_peak: int | None = None
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        import torch

        self.start = self.peak = rss_bytes()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        import torch

        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        if torch.cuda.is_available():
            self.cuda_peak = int(torch.cuda.max_memory_allocated())


def sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall and process CPU seconds of a block (CPU time is less sensitive to other jobs on a shared box)."""

    def __init__(self, device=None) -> None:
        self.device = device

    def __enter__(self) -> Timer:
        sync(self.device)
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def mib(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table, columns padded (the first left-aligned, the rest right-aligned)."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(r, widths, strict=True))) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def print_table(headers: list[str], rows: list[list[object]]) -> str:
    text = format_table(headers, rows)
    print(text, flush=True)
    return text


# ---------------------------------------------------------------------------------------------------------------
# A random BatchTopK SAE in the dictionary_learning release layout, calibrated on the model's own residual stream
# ---------------------------------------------------------------------------------------------------------------
def scored_activations(loaded, batches, norm_filter: float, limit: int):
    """Layer activations of the tokens personamine would score (content, not special, not a massive-norm
    outlier within its window), up to ``limit`` rows, in fp32 on the CPU."""
    import torch

    from personamine.shards.windows import capture_windows, scored_tokens

    rows: list[torch.Tensor] = []
    total = 0
    with torch.inference_mode():
        for batch in batches:
            hidden = capture_windows(loaded.model, loaded.layer_module, batch)
            keep, _ = scored_tokens(hidden, batch, norm_filter)
            rows.append(hidden[keep].float().cpu())
            total += rows[-1].shape[0]
            if total >= limit:
                break
    return torch.cat(rows)[:limit]


def write_calibrated_sae(root: Path, *, layer: int, activation_dim: int, dict_size: int, acts,
                         firing_per_token: int = SAE_FIRING_PER_TOKEN, seed: int = 0, lm_name: str = "",
                         device=None) -> Path:
    """Random ``BatchTopKSAE`` with ``b_dec`` = mean activation and a threshold that lets about
    ``firing_per_token`` features fire per token on ``acts``; saved as ``resid_post_layer_{layer}/trainer_0``.
    Built and calibrated on ``device`` (default: where ``acts`` are; a 131,072 x 4,096 SAE initialises in a
    second on a GPU). Returns the release root."""
    import torch
    from fixtures import build_batchtopk_sae, save_sae_release

    device = torch.device(device) if device is not None else acts.device
    acts = acts.to(device)
    with torch.device(device):
        sae = build_batchtopk_sae(activation_dim, dict_size, firing_per_token, threshold=-1.0, seed=seed)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
        pre = torch.nn.functional.linear(acts - sae.b_dec, sae.encoder.weight, sae.encoder.bias).relu_().flatten()
        keep = firing_per_token * acts.shape[0]
        # kthvalue, not quantile: torch.quantile refuses inputs over 2**24 elements.
        threshold = float(torch.kthvalue(pre, pre.numel() - keep).values)
        if threshold <= 0:
            threshold = float(pre[pre > 0].median())
        sae.threshold.fill_(threshold)
        del pre
    save_sae_release(sae.cpu(), root, layer, lm_name=lm_name or "benchmark")
    return root


def calibrated_sae(workdir: Path, loaded, batches, *, layer: int, dict_size: int, norm_filter: float = 10.0,
                   seed: int = 0, device=None) -> Path:
    """Build (once per ``workdir``) a calibrated random SAE of ``dict_size`` features for ``loaded``'s layer."""
    root = workdir / f"sae-{dict_size}"
    if (root / f"resid_post_layer_{layer}" / "trainer_0" / "ae.pt").is_file():
        return root
    # Calibration needs about 2**26 pre-activations at most (256 MiB fp32) to place a quantile well.
    limit = int(np.clip(2**26 // dict_size, 256, 4096))
    acts = scored_activations(loaded, batches, norm_filter, limit)
    return write_calibrated_sae(root, layer=layer, activation_dim=loaded.hidden_size, dict_size=dict_size, acts=acts,
                                seed=seed, lm_name=loaded.source, device=device)


def placeholder_sae(workdir: Path, loaded, layer: int) -> Path:
    """A 16-feature SAE that only lets an engine be built to cut windows (before the real SAE exists, to calibrate
    it); never used to encode."""
    from fixtures import make_sae_release

    root = workdir / "sae-placeholder"
    make_sae_release(root, layer, loaded.hidden_size, 16, 4, threshold=-1.0, seed=0, lm_name=loaded.source)
    return root


# ---------------------------------------------------------------------------------------------------------------
# A shard of a corpus, as mining covers it
# ---------------------------------------------------------------------------------------------------------------
def leading_shard(engine, manifest, max_tokens: int | None, first_unit: int = 0):
    """The ``Shard`` of whole documents in corpus order, from unit ``first_unit``, up to and including the one whose
    tokens reach ``max_tokens`` (all of them without a budget): what ``mine`` covers with ``max_tokens`` when
    ``first_unit`` is 0. The last unit gets the budget left, as the schedule hands it out (``shards.plan``); finding
    that unit reads (tokenizes) the units once."""
    from personamine.merge.stats import FeatureStats
    from personamine.shards.documents import UnitTally
    from personamine.shards.plan import Budget, Shard

    units, left = [], max_tokens
    for index in range(first_unit, len(manifest)):
        units.append(manifest.ref(index))
        if left is None:
            continue
        tally = UnitTally(index)
        for _ in engine.documents.windows(units[-1], tally, FeatureStats.empty(0).counters, budget=Budget(tokens=left)):
            pass
        if tally.reached_budget:
            return Shard(tuple(units), budget=Budget(tokens=left))
        left -= tally.tokens
    return Shard(tuple(units))


def probe_batches(config, loaded, workdir: Path, max_tokens: int | None, first_unit: int = 0):
    """(engine, shard, batches): an engine on a placeholder SAE (only to cut windows; ``config.sae`` is replaced),
    the leading shard of ``config.corpus`` and the engine's own batches of it, as ``run_shard`` would build them."""
    from personamine.corpus import open_manifest
    from personamine.jobs.mine import corpus_spec
    from personamine.merge.stats import FeatureStats
    from personamine.shards.run import MiningEngine

    placeholder = str(placeholder_sae(workdir, loaded, loaded.layer))
    engine = MiningEngine(config.replace(sae=placeholder, allow_uncalibrated=True, features=[0]), np.array([0]), loaded)
    shard = leading_shard(engine, open_manifest(corpus_spec(engine.config)), max_tokens, first_unit)
    return engine, shard, list(engine.batches(shard, [], FeatureStats.empty(0).counters))
