"""Peak memory of one huge document, each case in a fresh subprocess (Linux ``VmHWM``).

  windows  reading, tokenizing and windowing the document alone (``UnitDocuments.windows`` over the corpus's one
           unit, every window dropped as it comes): what grows with a document if anything does;
  mine     ``personamine mine`` on it, end to end (the tiny test model, ctx 64, 3 features; slow: the model is fed
           every token).

Each document is one row of random words (a jsonl line ``{"text": ...}``, a plain text line, a conversation of
two turns, or a list of token ids), so nothing in it is a natural place to cut. A one-row corpus of a short
sentence is the baseline: the difference is what the document costs.

    python benchmarks/huge_document.py --sizes 8,50                 # windows, jsonl, 8 MB and 50 MB
    python benchmarks/huge_document.py --sizes 8 --modes mine       # the whole run (~35 s per MB on 2 cores)
    python benchmarks/huge_document.py --sizes 8 --kinds text,messages,tokens
    python benchmarks/huge_document.py --sizes 8 --code ../before   # a worktree of an earlier commit
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, load_average, machine, offline, print_table, today  # noqa: E402

KINDS = ("jsonl", "text", "messages", "tokens")
WORDS = ("alpha", "beta", "gamma", "delta", "cat", "garden", "night", "river", "model", "answer", "é", "日本")


def write_document(path: Path, kind: str, megabytes: float, seed: int = 0) -> None:
    """One row of about ``megabytes`` MB (10^6 bytes) of random words (a few non-ASCII), streamed to disk."""
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as out:
        if kind == "tokens":
            out.write('{"ids": [')
            written = 0
            while written < target:
                chunk = ", ".join(str(rng.randrange(10, 300)) for _ in range(10_000))
                out.write(("" if written == 0 else ", ") + chunk)
                written += len(chunk) + 2
            out.write("]}\n")
            return
        head = {"jsonl": '{"text": "', "text": "", "messages": '{"messages": [{"role": "user", "content": '
                '"Tell me everything."}, {"role": "assistant", "content": "'}[kind]
        tail = {"jsonl": '"}\n', "text": "\n", "messages": '"}]}\n'}[kind]
        out.write(head)
        written = 0
        while written < target:
            chunk = " ".join(rng.choice(WORDS) for _ in range(20_000)) + " "
            out.write(chunk)
            written += len(chunk.encode())
        out.write(tail)


def corpus_for(tmp: Path, kind: str, megabytes: float) -> Path:
    path = tmp / f"{kind}-{megabytes:g}MB.{'txt' if kind == 'text' else 'jsonl'}"
    if not path.exists():
        if megabytes == 0:
            row = {"jsonl": {"text": "A short one."}, "messages": {"messages": [
                {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "A short one."}]},
                "tokens": {"ids": [11, 12, 13]}}.get(kind)
            path.write_text("A short one.\n" if row is None else json.dumps(row) + "\n")
        else:
            write_document(path, kind, megabytes)
    return path


CHILD_WINDOWS = r"""
import resource, sys, time
from transformers import AutoTokenizer
from personamine.config.mine import MineConfig
from personamine.corpus import CorpusSpec, open_manifest
from personamine.model.prompts import sink_prefix_ids
from personamine.merge.stats import FeatureStats
from personamine.shards.documents import UnitTally
from personamine.shards.run import unit_documents

model, corpus, kind = sys.argv[1:4]
column = {"jsonl": "text", "text": "text", "messages": "messages", "tokens": "ids"}[kind]
extra = {"messages": {"messages_column": column}, "tokens": {"tokens_column": column}}.get(
    kind, {"text_column": column})
cfg = MineConfig(model=model, layer=2, sae="unused", corpus=corpus, ctx_len=64, **extra)
tokenizer = AutoTokenizer.from_pretrained(model)
prefix = sink_prefix_ids(tokenizer, cfg.sink_prefix)
documents = unit_documents(cfg, tokenizer, prefix)
manifest = open_manifest(CorpusSpec(corpus, column=column))
counters = FeatureStats.empty(0).counters
start = time.perf_counter()
windows = tokens = 0
for u in range(len(manifest)):
    tally = UnitTally(u)
    for w in documents.windows(manifest.ref(u), tally, counters):
        windows += 1
    tokens += tally.tokens
seconds = time.perf_counter() - start
print(windows, tokens, counters["documents_chunked"], f"{seconds:.1f}",
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def run_windows(model: Path, corpus: Path, kind: str, code: Path = ROOT) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD_WINDOWS, str(model), str(corpus), kind], capture_output=True,
                         text=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    if out.returncode:
        raise SystemExit(out.stderr)
    windows, tokens, chunked, seconds, peak = out.stdout.split()[-5:]
    return {"windows": int(windows), "tokens": int(tokens), "chunked": int(chunked), "seconds": float(seconds),
            "peak": int(peak)}


def run_mine(model: Path, sae: Path, corpus: Path, kind: str, tmp: Path, code: Path = ROOT) -> dict:
    """The CLI in a child; its peak is the child's ``ru_maxrss`` (``RUSAGE_CHILDREN`` of a fresh wrapper)."""
    column = {"jsonl": [], "text": [], "messages": ["--messages-column", "messages"],
              "tokens": ["--tokens-column", "ids"]}[kind]
    out = tmp / "out.h5"
    argv = [sys.executable, "-m", "personamine.jobs.cli", "mine", "--no-progress", "--model", str(model),
            "--layer", "2", "--sae", str(sae), "--corpus", str(corpus), "--features", "1,2,3", "--ctx-len", "64",
            "--preflight-tokens", "0", "--output", str(out), *column]
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, f'{time.perf_counter() - t:.1f}', "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.stderr.write(r.stderr)")
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, cwd=code,
                          env={**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"})
    code, seconds, peak = done.stdout.split()[-3:]
    if code != "0":
        raise SystemExit(done.stderr)
    out.unlink()
    return {"seconds": float(seconds), "peak": int(peak)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="8,50", help="document sizes in MB (10^6 bytes), comma-separated")
    p.add_argument("--kinds", default="jsonl", help=f"comma list of {', '.join(KINDS)}")
    p.add_argument("--modes", default="windows", help="comma list of windows, mine")
    p.add_argument("--workdir", default=None, help="keep the model and documents here (default: a temp dir)")
    p.add_argument("--code", default=str(ROOT), help="the personamine tree measured (default: this one; e.g. a "
                   "worktree of an earlier commit, for a before/after)")
    args = p.parse_args(argv)
    offline()
    import fixtures

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="pm-huge-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model = tmp / "model"
    if not (model / "config.json").exists():
        fixtures.make_tiny_model(model)
    sae = tmp / "sae"
    if "mine" in args.modes and not sae.exists():
        fixtures.make_calibrated_sae_release(sae, model)
    print(f"# {machine()}; {today()}; load before {load_average()}")
    rows = []
    for kind in args.kinds.split(","):
        for mode in args.modes.split(","):
            base = None
            for size in [0.0, *map(float, args.sizes.split(","))]:
                corpus = corpus_for(tmp, kind, size)
                t0 = time.perf_counter()
                code = Path(args.code)
                got = (run_windows(model, corpus, kind, code) if mode == "windows"
                       else run_mine(model, sae, corpus, kind, tmp, code))
                base = got["peak"] if base is None else base
                rows.append([kind, mode, f"{size:g}", f"{got['peak'] / 2**20:,.0f}",
                             f"{(got['peak'] - base) / 2**20:,.0f}", f"{got['seconds']:.1f}",
                             str(got.get("tokens", "")), str(got.get("chunked", "")),
                             f"{time.perf_counter() - t0:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    print_table(["kind", "mode", "MB", "peak MiB", "over 1 row", "s", "tokens", "chunked", "wall s"], rows)
    print(f"# load after {load_average()}")


if __name__ == "__main__":
    main()
