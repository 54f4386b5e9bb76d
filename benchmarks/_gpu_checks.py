"""What ``gpu.py`` checks beside the timings: the exactness of a sample of mined windows (each recomputed alone), and
where a mining run's time goes (the forward's share, GPU busy time, the top kernels, host-device syncs, which SDPA
kernel the packed-window mask allows)."""

from __future__ import annotations

import time
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FORWARD_RANGE = "personamine.capture_windows"

# Scores from a packed batch vs the window fed alone: fp32 differs only in summation order; bf16 rounds every
# layer's output to 8 bits of mantissa, and different batch shapes round differently, over 16 layers.
TOLERANCE = {"float32": (1e-4, 1e-5), "bfloat16": (5e-2, 1e-3), "float16": (2e-2, 1e-3)}


# ---------------------------------------------------------------------------------------------------------------
# Exactness: a sample of the (c) phase's top-k windows, each recomputed alone
# ---------------------------------------------------------------------------------------------------------------
def reference_window(doc: list[int], window_start: int, prefix: list[int], ctx_len: int,
                     stride: int | None) -> tuple[list[int], int]:
    """(fed ids, first scored position) of the document's window that starts at ``window_start``, from the rule
    (README "Long windows"): window 0 feeds ``prefix + doc[:C - p]`` and scores its document tokens; a later window
    scores ``stride`` tokens after ``C - p - stride`` tokens of context. Written from the rule, not from the code."""
    capacity = ctx_len - len(prefix)
    step = capacity if stride is None else stride
    context = capacity - step
    if window_start == 0:
        return prefix + doc[:capacity], len(prefix)
    scored_from = window_start + context
    return prefix + doc[window_start:scored_from + step], len(prefix) + context


def check_top_windows(engine, result, docs: list[list[int]], sae_file: Path, n: int, seed: int) -> dict:
    """Recompute ``n`` sampled entries of ``result``'s top-k buffer: the window alone (batch of one, no packing, no
    4D mask) through the same model, the full SAE encode from the ``ae.pt`` state dict (fp32, every feature), the
    window's score as the max over its scored tokens. Compare with the mined score within the dtype's tolerance,
    and the stored display span with the window's tokens."""
    import torch

    from personamine.model.capture import capture_residual
    from personamine.shards.documents import global_documents

    loaded, cfg = engine.loaded, engine.config
    dtype = str(loaded.dtype).removeprefix("torch.")
    rtol, atol = TOLERANCE[dtype]
    entries = result.buffer.entries
    if len(entries) == 0:
        return {"passed": False, "error": "the buffer is empty"}
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(entries), size=min(n, len(entries)), replace=False))
    offsets = np.concatenate([[0], np.cumsum([u.rows for u in result.coverage.units])])[:-1].astype(np.int64)
    documents = global_documents(entries.document[picked], offsets)
    state = torch.load(sae_file, map_location="cpu", mmap=True, weights_only=True)  # the decoder stays unread
    w_enc, b_enc, b_dec = (state[k].to(loaded.device, torch.float32) for k in ("encoder.weight", "encoder.bias",
                                                                               "b_dec"))
    threshold = float(state["threshold"])
    special = set(loaded.tokenizer.all_special_ids) | set(engine.prefix)
    prefix = [int(i) for i in engine.prefix]
    rows, errors, tokens_ok = [], [], True
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference encode in true fp32
    try:
        for i, doc_index in zip(picked, documents, strict=True):
            ids, scored_from = reference_window(docs[int(doc_index)], int(entries.window_start[i]), prefix,
                                                cfg.ctx_len, cfg.stride)
            x = torch.tensor([ids], dtype=torch.long, device=loaded.device)
            hidden = capture_residual(loaded.model, loaded.layer_module, x, torch.ones_like(x))[0].float()
            eligible = torch.tensor([p >= scored_from and t not in special for p, t in enumerate(ids)],
                                    device=x.device)
            norms = hidden.norm(dim=-1)
            keep = eligible.clone()
            if cfg.norm_filter > 0 and eligible.any():
                keep &= norms <= cfg.norm_filter * norms[eligible].median()
            feature = int(engine.encoder.features[entries.feature[i]])
            pre = torch.nn.functional.linear(hidden - b_dec, w_enc, b_enc).relu_()
            acts = pre * (pre > threshold)
            want = float(acts[keep, feature].max()) if keep.any() else 0.0
            got = float(entries.score[i])
            errors.append((abs(got - want), abs(got - want) / max(abs(want), 1e-30), atol + rtol * abs(want)))
            span_start, length = int(entries.span_start[i]), int(entries.length[i])
            tokens_ok &= entries.token_ids[i][:length].tolist() == ids[span_start:span_start + length]
            rows.append({"feature": feature, "document": int(doc_index), "window_start": int(entries.window_start[i]),
                         "mined": got, "recomputed": want})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    abs_err = np.array([e[0] for e in errors])
    rel_err = np.array([e[1] for e in errors])
    within = bool(all(e[0] <= e[2] for e in errors))
    return {"passed": within and bool(tokens_ok), "windows": len(rows), "dtype": dtype, "rtol": rtol, "atol": atol,
            "max_abs_err": float(abs_err.max()), "max_rel_err": float(rel_err.max()),
            "median_rel_err": float(np.median(rel_err)), "tokens_match": bool(tokens_ok), "samples": rows[:8]}


# ---------------------------------------------------------------------------------------------------------------
# Where the time goes
# ---------------------------------------------------------------------------------------------------------------
class ForwardClock:
    """Times every ``capture_windows_at`` call (one forward per batch) that ``run_shard`` makes: CUDA events on a GPU
    (no sync added; read once the run is done), the wall clock on the CPU, where every op is synchronous. Also names
    the calls for the profiler."""

    def __init__(self, device) -> None:
        self.device = device
        self.spans: list = []

    @contextmanager
    def patched(self):
        import torch

        import personamine.shards.run as run_module

        original = run_module.capture_windows_at  # the one forward per batch, every readout's layer
        cuda = self.device.type == "cuda"

        def timed(*args, **kwargs):
            with torch.profiler.record_function(FORWARD_RANGE):
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    out = original(*args, **kwargs)
                    end.record()
                    self.spans.append((start, end))
                    return out
                t0 = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.spans.append(time.perf_counter() - t0)

        run_module.capture_windows_at = timed
        try:
            yield self
        finally:
            run_module.capture_windows_at = original

    def seconds(self) -> float:
        import torch

        if self.device.type != "cuda":
            return float(sum(self.spans))
        torch.cuda.synchronize()
        return float(sum(s.elapsed_time(e) for s, e in self.spans)) / 1000


def _kernel_table(prof, top: int) -> tuple[float, list[dict]]:
    """(total GPU kernel seconds, the ``top`` kernels by GPU time) from a profile."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    kernels.sort(key=lambda e: -e.self_device_time_total)
    total = sum(e.self_device_time_total for e in kernels) / 1e6
    return total, [{"kernel": e.key[:120], "seconds": e.self_device_time_total / 1e6, "calls": e.count}
                   for e in kernels[:top]]


def attention_path(kernels: list[dict]) -> str:
    """Which SDPA implementation the profile's kernel names show (a heuristic on names)."""
    names = " ".join(k["kernel"].lower() for k in kernels)
    if "flash" in names:
        return "flash"
    if "fmha" in names or "efficient" in names or "cutlass" in names:
        return "memory-efficient (cutlass fmha)"
    if "cudnn" in names:
        return "cudnn"
    return "math (bmm + softmax) or not among the top kernels"


def diagnose(engine, shard, run_shard, top: int = 15) -> dict:
    """One profiled mining run: wall time, the forward's share of it, GPU busy time and the top kernels, and (on a
    GPU) every host-device sync it makes, by source line (``torch.cuda.set_sync_debug_mode``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    device = engine.device
    cuda = device.type == "cuda"
    clock = ForwardClock(device)
    batches = [0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings(record=True) as caught, clock.patched(), profile(activities=activities) as prof:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        try:
            run_shard(engine, shard, on_batch=lambda *_: batches.__setitem__(0, batches[0] + 1))
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    out: dict = {"wall_s": wall, "batches": batches[0], "forward_s": clock.seconds(),
                 "note": "profiled, with sync warnings on: slower than the timed runs; read the shares, not the rate"}
    out["forward_share"] = out["forward_s"] / wall
    if cuda:
        total, kernels = _kernel_table(prof, top)
        out.update(gpu_kernel_s=total, gpu_busy_share=total / wall, top_kernels=kernels,
                   attention_path=attention_path(kernels))
        syncs = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                        if "synchroniz" in str(w.message).lower())
        out["syncs"] = {"total": int(sum(syncs.values())), "per_batch": sum(syncs.values()) / max(batches[0], 1),
                        "by_line": dict(syncs.most_common(25))}
    else:
        forward = [e for e in prof.key_averages() if e.key == FORWARD_RANGE]
        out["profiled_forward_share"] = forward[0].cpu_time_total / 1e6 / wall if forward else None
    return out


def sdpa_backends(loaded, batch, repeats: int = 3) -> dict:
    """The forward over one batch under each SDPA backend alone: milliseconds, or why that backend refused (flash
    takes no mask; a refusal of every fast one means the math kernel runs). The batch is a packed one where the
    shard has one (its 4D additive mask is what decides)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from personamine.shards.windows import capture_windows

    cuda = loaded.device.type == "cuda"
    out: dict = {"packed": batch.segment is not None, "shape": list(batch.input_ids.shape)}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                capture_windows(loaded.model, loaded.layer_module, batch)  # warm-up
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(repeats):
                    capture_windows(loaded.model, loaded.layer_module, batch)
                if cuda:
                    torch.cuda.synchronize()
            out[name.lower()] = {"ms": (time.perf_counter() - t0) / repeats * 1000}
        except RuntimeError as exc:
            out[name.lower()] = {"error": str(exc).splitlines()[0][:200]}
    return out


def _mm_fp32_out(a, b):
    """a @ b.T of bf16 operands, accumulated and returned in fp32: cuBLAS's bf16 GEMM with an fp32 output
    (``aten::mm.dtype``, CUDA only); elsewhere the same numbers from an fp32 product, since a product of two bf16
    values is exact in fp32."""
    import torch

    if a.device.type == "cuda":
        return torch.mm(a, b.T, out_dtype=torch.float32)
    return a.float() @ b.float().T


def encoder_precisions(sae_file: Path, hidden, threshold: float, chunk_size: int = 8192, repeats: int = 3,
                       sample: int = 2048) -> dict:
    """The all-features encoder's matmul, ``pre = (x - b_dec) W_enc^T + b_enc`` over one batch of captured
    activations (every feature, in chunks as the engine runs it), in four precisions: tokens/s, and the error on a
    sample of features against a float64 reference (and how many (token, feature) pairs land on the other side of
    the threshold). fp32 is what the engine runs; bf16x3 splits each fp32 operand into two bf16 halves and keeps the
    three leading products (fp32 accumulation): near-fp32 accuracy at three bf16 GEMMs."""
    import torch
    import torch.nn.functional as F

    device = hidden.device
    cuda = device.type == "cuda"
    state = torch.load(sae_file, map_location="cpu", mmap=True, weights_only=True)
    w, b, b_dec = (state[k].to(device, torch.float32) for k in ("encoder.weight", "encoder.bias", "b_dec"))
    s = hidden.float() - b_dec
    cols = torch.linspace(0, w.shape[0] - 1, min(sample, w.shape[0]), device=device).long()
    ref = (s.double() @ w[cols].double().T + b[cols].double())
    w_hi = w.bfloat16()
    w_lo = (w - w_hi.float()).bfloat16()
    s_hi = s.bfloat16()
    s_lo = (s - s_hi.float()).bfloat16()
    chunks = [(lo, min(lo + chunk_size, w.shape[0])) for lo in range(0, w.shape[0], chunk_size)]
    tf32 = torch.backends.cuda.matmul.allow_tf32

    def fp32(lo, hi):
        return F.linear(s, w[lo:hi], b[lo:hi])

    def bf16(lo, hi):
        return F.linear(s_hi, w_hi[lo:hi], b[lo:hi].bfloat16()).float()

    def bf16x3(lo, hi):
        out = _mm_fp32_out(s_hi, w_hi[lo:hi])
        out += _mm_fp32_out(s_hi, w_lo[lo:hi])
        out += _mm_fp32_out(s_lo, w_hi[lo:hi])
        return out.add_(b[lo:hi])

    results: dict = {"tokens": int(s.shape[0]), "features": int(w.shape[0]), "chunk_size": chunk_size,
                     "reference": f"float64 on {cols.numel()} features"}
    for name, fn, allow in (("fp32", fp32, False), ("tf32", fp32, True), ("bf16", bf16, False),
                            ("bf16x3", bf16x3, False)):
        torch.backends.cuda.matmul.allow_tf32 = allow
        try:
            got = torch.cat([fn(lo, hi)[:, (cols >= lo) & (cols < hi)] for lo, hi in chunks], dim=1).double()
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                for lo, hi in chunks:
                    fn(lo, hi)
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / repeats
            err = (got - ref).abs()
            results[name] = {"tokens_per_s": s.shape[0] / seconds, "seconds": seconds,
                             "max_abs_err": float(err.max()), "rel_err": float(err.norm() / ref.norm()),
                             "threshold_flips": int(((got > threshold) != (ref > threshold)).sum()),
                             "active_pairs": int((ref > threshold).sum())}
        except Exception as exc:  # e.g. no fp32-output bf16 GEMM in this torch
            results[name] = {"error": str(exc).splitlines()[0][:200]}
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    return results
