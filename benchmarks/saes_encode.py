"""Cost of each encode mode on one batch: targeted elementwise, every feature, and the exact TopK mode.

    python benchmarks/saes_encode.py [--tokens 2048 --d-in 576 --d-sae 16384 --features 20 --k 32]

Builds one random SAELens-layout SAE twice (jumprelu and topk, same weights) in a temp dir and times each
encoder's ``encode`` on the same batch (best of 3), printing each as a ratio of the all-features jumprelu encode
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, today  # noqa: E402


def write(folder: Path, architecture: str, d_in: int, d_sae: int, k: int) -> Path:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    w_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=gen), dim=1)
    tensors = {"W_enc": w_dec.T.contiguous(), "W_dec": w_dec, "b_dec": torch.zeros(d_in),
               "b_enc": torch.randn(d_sae, generator=gen) * 0.1 - 0.5}
    if architecture == "jumprelu":
        tensors["threshold"] = torch.full((d_sae,), 0.5)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    cfg = {"d_in": d_in, "d_sae": d_sae, "architecture": architecture, "apply_b_dec_to_input": True,
           "normalize_activations": "none", "metadata": {"hook_name": "blocks.10.hook_resid_post"}}
    if architecture == "topk":
        cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def best_of(encoder, x, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder.encode(x)
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--quick", action="store_true", help="512 tokens, 4,096 features")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.d_sae = min(args.tokens, 512), min(args.d_sae, 4096)
    import numpy as np
    import torch

    from personamine.saes import load_sae

    print(f"# saes_encode  {today()}  {machine()}  load avg {load_average()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="personamine-bench-"))
    jump = load_sae(str(write(tmp / "jumprelu", "jumprelu", args.d_in, args.d_sae, args.k)))
    topk = load_sae(str(write(tmp / "topk", "topk", args.d_in, args.d_sae, args.k)))
    x = torch.randn(args.tokens, args.d_in, generator=torch.Generator().manual_seed(1))
    chosen = np.sort(np.random.default_rng(0).choice(args.d_sae, args.features, replace=False))
    with torch.inference_mode():
        timings = {
            "jumprelu, all features": best_of(jump.encoder(None, chunk_size=args.chunk), x),
            f"jumprelu, {args.features} targeted features": best_of(jump.encoder(chosen, chunk_size=args.chunk), x),
            f"topk (k={args.k}), all features": best_of(topk.encoder(None, chunk_size=args.chunk), x),
            f"topk (k={args.k}), {args.features} features, exact mode":
                best_of(topk.encoder(chosen, chunk_size=args.chunk, exact_topk=True), x),
        }
    base = timings["jumprelu, all features"]
    print(f"{args.tokens} tokens x {args.d_in} -> {args.d_sae} features, chunk {args.chunk}")
    for name, seconds in timings.items():
        print(f"  {name:<45} {seconds * 1000:8.1f} ms   {seconds / base:6.2f}x all-features jumprelu")
    return timings


if __name__ == "__main__":
    main()
