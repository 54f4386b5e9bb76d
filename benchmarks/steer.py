"""What steering costs: the hooks' overhead on generation and scoring, and the memory of the SAE rows it reads.

  overhead  SmolLM2 (fp32), the first persona prompts rendered as discover renders them, greedy generation:
            (a) the plain model's ``generate``; through the steering hooks with (b) an add (no encoding),
            (c) an ablation (the feature encoded at every position), (d) an ablation with the activation record;
            and the continuation scoring forward plain vs with an ablation. Rounds interleave; ratios are medians.
  sae       resident memory (a fresh subprocess each) of ``SteerSae`` for 3 features of a synthetic 131,072-feature
            SAE file vs ``torch.load`` of the whole file: anonymous memory, and mapped file pages.

    python benchmarks/steer.py            # 16 prompts x 32 tokens, 5 rounds; SAE 131,072 x 2,048 (2.1 GB)
    python benchmarks/steer.py --quick    # 8 prompts x 16 tokens, 3 rounds; SAE 131,072 x 576 (604 MB)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_MODEL, load_average, machine, mib, offline, print_table, today  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sections", default="overhead,sae")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--layer", type=int, default=10)
    p.add_argument("--sae", default=None, help="an SAE for the model at --layer (default: a random calibrated one)")
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--sae-dim", type=int, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.prompts = args.prompts or (8 if args.quick else 16)
    args.tokens = args.tokens or (16 if args.quick else 32)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.sae_dim = args.sae_dim or (576 if args.quick else 2048)
    return args


def _sae_for(args: argparse.Namespace, model, work: Path) -> str:
    if args.sae:
        return args.sae
    from fixtures import make_sae_release

    root = work / "sae"
    make_sae_release(root, args.layer, model.config.hidden_size, 4096, 32, 0.1, 0, lm_name=args.model)
    return str(root)


def overhead(args: argparse.Namespace, work: Path) -> dict:
    import numpy as np
    import torch

    from personamine.model.loading import find_decoder_layers, load_causal_lm, load_tokenizer
    from personamine.model.padding import left_pad
    from personamine.model.prompts import (
        builtin_prompts_path,
        load_prompts,
        render_prompts,
        sink_prefix_ids,
        special_token_ids,
    )
    from personamine.steering.hooks import Steering, generation_positions
    from personamine.steering.interventions import Intervention, Term
    from personamine.steering.measure import score_continuations
    from personamine.steering.sae_access import SteerSae, open_sae

    model, device, _ = load_causal_lm(args.model, dtype="float32", device="cpu")
    tok = load_tokenizer(args.model)
    prompts = [p.ids for p in render_prompts(tok, load_prompts(builtin_prompts_path("persona"))[: args.prompts])]
    sae = SteerSae(open_sae(_sae_for(args, model, work), args.layer), np.array([5]), device)
    steering = Steering(model, find_decoder_layers(model)[args.layer], sae,
                        special_token_ids(tok, sink_prefix_ids(tok)).tolist())
    cases = {"add": Intervention("add", (Term("add", 5, 4.0),)), "ablate": Intervention("ablate", (Term("ablate", 5),))}
    conts = [tok(c, add_special_tokens=False)["input_ids"] for c in ("I am an AI assistant", "As a human, I")]
    pad = tok.pad_token_id
    ids, mask, _ = left_pad(prompts, pad, device)

    def run(name: str | None, record: bool = False) -> None:
        # transformers' generate as personamine's generate calls it, every row made to run all the tokens so the
        # cases compare like with like.
        steering.use(cases[name] if name else None, record=record)
        at = steering.positions(generation_positions(mask.bool(), "all")) if name else contextlib.nullcontext()
        with torch.inference_mode(), at:
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens,
                           min_new_tokens=args.tokens, do_sample=False, pad_token_id=pad)

    def score(name: str | None) -> None:
        steering.use(cases[name] if name else None)
        score_continuations(model, steering, prompts, conts, "all", args.prompts, pad)

    phases = {"(a) plain generate": lambda: run(None), "(b) add": lambda: run("add"),
              "(c) ablate": lambda: run("ablate"), "(d) ablate + record": lambda: run("ablate", True),
              "(e) scoring, plain": lambda: score(None), "(f) scoring, ablate": lambda: score("ablate")}
    times: dict[str, list[float]] = {name: [] for name in phases}
    run(None)  # warm up
    for r in range(args.rounds):
        for name in (list(phases) if r % 2 == 0 else list(phases)[::-1]):
            began = time.perf_counter()
            phases[name]()
            times[name].append(time.perf_counter() - began)
    steering.close()
    tokens = args.prompts * args.tokens
    rows = [[name, f"{statistics.median(t):.2f}", f"{tokens / statistics.median(t):,.0f}" if "scoring" not in name
             else "-"] for name, t in times.items()]
    print_table(["phase", "median s", "generated tokens/s"], rows)
    ratio = {f"{k}/a": statistics.median(x / y for x, y in zip(times[name], times["(a) plain generate"], strict=True))
             for k, name in (("b", "(b) add"), ("c", "(c) ablate"), ("d", "(d) ablate + record"))}
    ratio["f/e"] = statistics.median(x / y for x, y in zip(times["(f) scoring, ablate"], times["(e) scoring, plain"],
                                                            strict=True))
    print("ratios (median over rounds): " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    return {"seconds": times, "ratios": ratio}


def _rss() -> dict[str, int]:
    """Anonymous and file-backed resident memory (Linux): mapped file pages count in RSS but are page cache."""
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def sae_child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    path = Path(args.path)
    before = _rss()
    if args.child == "whole":
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state["decoder.weight"].shape[1] == 131072
    else:
        from personamine.steering.sae_access import SaeHandle, SteerSae

        handle = SaeHandle(path, 131072, args.sae_dim, None, 0.5, "synthetic")
        sae = SteerSae(handle, np.array([7, 70_000, 131_000]), torch.device("cpu"))
        assert sae.decoder.shape == (3, args.sae_dim)
    after = _rss()
    return {k: after[k] - before[k] for k in after}


def sae_memory(args: argparse.Namespace, work: Path) -> dict:
    from memory import synthetic_sae

    path = synthetic_sae(work / f"sae-{args.sae_dim}" / "ae.pt", 131072, args.sae_dim)
    out = {}
    for name in ("rows", "whole"):
        cmd = [sys.executable, __file__, "--child", name, "--path", str(path), "--sae-dim", str(args.sae_dim)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    print_table(["what", "anonymous memory", "file pages mapped"],
                [[f"SteerSae, 3 of 131,072 features (file {mib(size)} MiB)", mib(out["rows"]["RssAnon"]),
                  mib(out["rows"]["RssFile"])],
                 ["torch.load of the whole file", mib(out["whole"]["RssAnon"]), mib(out["whole"]["RssFile"])]])
    return {"file_bytes": size, **out}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    offline()
    if args.child:
        import torch  # noqa: F401 (imported before the baseline so only the read itself is measured)

        import personamine.steering.sae_access  # noqa: F401

        print(json.dumps(sae_child(args)))
        return {}
    import torch

    print(f"# steer  {today()}  {machine()}  load avg {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="personamine-steer-") as tmp:
        summary: dict = {}
        if "overhead" in args.sections:
            torch.manual_seed(0)
            summary["overhead"] = overhead(args, Path(tmp))
        if "sae" in args.sections:
            summary["sae"] = sae_memory(args, Path(tmp))
    print(f"# load avg after {load_average()}")
    return summary


if __name__ == "__main__":
    main()
