"""Discovery at several layers in one pass against one run per layer, on SmolLM2-135M-Instruct.

    python benchmarks/discover_layers.py              # layers 5,10,15,20,25, 2 interleaved rounds (~5 min on 2 cores)
    python benchmarks/discover_layers.py --quick      # layers 5,15, 1 round

Each layer gets a random BatchTopK SAE calibrated on the model's own activations there (the benchmark measures
speed, not what the features mean; the pre-flight is off). Both arms run ``personamine.discover`` end to end on the
shipped 32 persona prompts and 32 controls (model loading, rendering, the forwards, every feature encoded, the
statistics, the file): the combined run once with ``layers=...``, the single runs once per layer. It prints each
arm's seconds, the speed-up (single runs' total / combined) and the ideal speed-up of the forwards alone (the sum
of the layers' depths over the deepest: what the early stop saves when the forward dominates).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import load_average, machine, offline, today, write_calibrated_sae  # noqa: E402

MODEL = "builtin:smollm2-135m-instruct"


def calibrate(root: Path, layers: list[int], dict_size: int) -> Path:
    """One random SAE per layer, calibrated on the residual there over the shipped prompts."""
    import torch

    from personamine.model.capture import capture_layers
    from personamine.model.loading import find_decoder_layers, load_model
    from personamine.model.prompts import builtin_prompts_path, load_prompts, render_prompts

    loaded = load_model(MODEL, max(layers))
    prompts = render_prompts(loaded.tokenizer, load_prompts(builtin_prompts_path("persona")), position="prompt-mean")
    modules = find_decoder_layers(loaded.model)
    acts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for p in prompts:
        ids = torch.tensor([p.ids])
        hidden = capture_layers(loaded.model, {layer: modules[layer] for layer in layers}, ids, torch.ones_like(ids))
        for layer in layers:
            acts[layer].append(hidden[layer][0, p.positions].float())
    for layer in layers:
        write_calibrated_sae(root, layer=layer, activation_dim=loaded.hidden_size, dict_size=dict_size,
                             acts=torch.cat(acts[layer]), seed=layer, lm_name=MODEL)
    return root


def timed(**kwargs) -> float:
    import personamine

    began = time.perf_counter()
    personamine.discover(model=MODEL, progress=False, preflight=False, **kwargs)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="5,10,15,20,25", help="SAE layers (default: 5,10,15,20,25)")
    parser.add_argument("--dict-size", type=int, default=4096, help="features per SAE (default: 4096)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: 2)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    parser.add_argument("--quick", action="store_true", help="layers 5,15 and one round")
    args = parser.parse_args()
    offline()
    layers = [5, 15] if args.quick else [int(x) for x in args.layers.split(",")]
    rounds = 1 if args.quick else args.rounds
    print(f"discover_layers: {today()}, {machine()}, load {load_average()}")
    with tempfile.TemporaryDirectory(prefix="personamine-discover-layers-") as tmp:
        work = Path(tmp)
        sae = calibrate(work / "sae", layers, args.dict_size)
        common = dict(sae=str(sae), n_boot=args.n_boot, top=20)
        combined, single = [], []
        for r in range(rounds):
            combined.append(timed(layers=layers, output=str(work / f"all-{r}.h5"), **common))
            single.append(sum(timed(layer=layer, output=str(work / f"L{layer}-{r}.h5"), **common) for layer in layers))
            print(f"round {r + 1}: one pass {combined[-1]:.1f} s, one run per layer {single[-1]:.1f} s")
    one, each = min(combined), min(single)
    ideal = sum(layer + 1 for layer in layers) / (max(layers) + 1)
    print(f"layers {layers}, {args.dict_size:,} features each, 64 prompts, n_boot {args.n_boot}")
    print(f"one pass: {one:.1f} s; one run per layer: {each:.1f} s; speed-up {each / one:.2f}x "
          f"(forwards alone, ideal: {ideal:.2f}x); load {load_average()}")


if __name__ == "__main__":
    main()
