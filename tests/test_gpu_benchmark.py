"""benchmarks/gpu.py at test size (--tiny, on the CPU) through the wrapper a GPU machine runs (benchmarks/gpu_run.sh):
the prepared GPU command works end to end, measures what it says, and its exactness check passes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from fixtures import REPO, user_env

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402


def llama_params(cfg: dict, layers: int, lm_head: bool) -> int:
    """Parameters of a Llama with ``layers`` decoder layers, from its config (no bias, untied head)."""
    d, heads, kv, hd = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    attention = d * heads * hd * 2 + d * kv * hd * 2
    layer = attention + 3 * d * cfg["intermediate_size"] + 2 * d
    return cfg["vocab_size"] * d * (2 if lm_head else 1) + layers * layer + d


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-bench")
    env = {**user_env(), "OUT": str(out), "GPU_BENCH_PYTHON": sys.executable, "GPU_BENCH_LIMIT": "240",
           "GPU_BENCH_WHEELS": str(out / "no-wheels")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_run.sh"), "--tiny", "--device", "cpu", "--workdir",
                           str(out / "work")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    docs = {mode: [json.loads(line)["tokens"] for line in (out / "work" / f"corpus-{mode}.jsonl").open()]
            for mode in ("ctx32", "ctx128")}
    return json.loads((out / "gpu-tiny.json").read_text()), (out / "gpu-tiny.md").read_text(), docs, done.stdout


def test_it_ran_everything_without_errors_and_printed_the_table(bench):
    data, md, _, stdout = bench
    assert data["errors"] == [] and data["skipped"] == []
    meta = data["meta"]
    assert meta["tiny"] and meta["device_type"] == "cpu" and meta["dtype"] == "float32"
    # What the GPU machine must bring is what ran here: no pyarrow, datasets or ray behind the pre-tokenized path.
    assert {"torch", "transformers", "dictionary_learning", "h5py", "fsspec"} <= set(meta["modules"])
    assert not {"pyarrow", "datasets", "ray"} & set(meta["modules"])
    assert data["goals"] == []  # goals are judged on a GPU only
    for heading in ("## Throughput", "## Model memory", "## Exactness", "## Where the time goes"):
        assert heading in md
    assert "## Throughput" in stdout and "gpu_run.sh: exit 0" in stdout


def test_the_checkpoint_is_truncated_and_the_whole_model_is_not(bench):
    data, _, _, _ = bench
    setup = data["setup"]
    cfg = setup["config"]
    layer = data["meta"]["layer"]
    assert cfg["num_hidden_layers"] == 4 and cfg["rope_parameters"]["rope_type"] == "llama3"
    assert setup["truncated_model"]["layers"] == layer + 1
    assert setup["truncated_model"]["weights_bytes"] == 4 * llama_params(cfg, layer + 1, lm_head=False)
    assert setup["full_model"]["weights_bytes"] == 4 * llama_params(cfg, cfg["num_hidden_layers"], lm_head=True)


def test_every_phase_and_batch_size_was_measured_over_the_same_windows(bench):
    data, _, docs, _ = bench
    runs = data["runs"]
    for mode in ("ctx32", "ctx128"):
        tokens = sum(map(len, docs[mode]))
        assert data["setup"]["corpora"][mode]["tokens"] == tokens
        for bt in data["meta"]["batch_tokens"]:
            first = {r["phase"]: r for r in runs if r["mode"] == mode and r["batch_tokens"] == bt and r["round"] == 1}
            assert set(first) == {"b", "c", "d"}
            # (b) is the forward over exactly the batches (c) and (d) mine.
            assert first["b"]["tokens_fed"] == first["c"]["tokens_fed"] == first["d"]["tokens_fed"]
            for phase in "cd":  # every document token is scored once (or dropped by the norm filter)
                assert first[phase]["tokens_scored"] + first[phase]["tokens_norm_filtered"] == tokens
            for r in first.values():
                assert math.isfinite(r["fed_per_s"]) and r["fed_per_s"] > 0 and 0 < r["forward_share"] <= 1
        if mode == "ctx32":  # plain windows: each document once, a 1-token sink prefix per 31 of its tokens
            assert first["b"]["tokens_fed"] == sum(len(d) + -(-len(d) // 31) for d in docs[mode])
        else:  # long windows feed real context again: more positions than tokens
            assert first["b"]["tokens_fed"] > tokens
    assert {r["round"] for r in runs} == {1, 2}


def test_summary_ratios_are_finite(bench):
    data, _, _, _ = bench
    assert set(data["summary"]) == {"ctx32", "ctx128"}
    for entry in data["summary"].values():
        assert set(entry["phases"]) == {"b", "c", "d"}
        for info in entry["phases"].values():
            assert info["best_batch_tokens"] in data["meta"]["batch_tokens"]
        for ratios in entry["ratios"].values():
            assert all(math.isfinite(v) and v > 0 for v in ratios.values())


def test_exactness_check_recomputed_the_sampled_windows_and_passed(bench):
    data, md, _, _ = bench
    for mode in ("ctx32", "ctx128"):
        e = data["exactness"][mode]
        assert e["passed"] and e["tokens_match"] and e["windows"] == 12
        assert e["dtype"] == "float32" and e["max_rel_err"] <= e["rtol"]
        assert all(s["recomputed"] > 0 for s in e["samples"])
    assert md.count("passed") >= 2


def test_diagnostics_and_sdpa_backends(bench):
    data, _, _, _ = bench
    assert len(data["diagnostics"]) == 4  # (c) and (d) in each mode
    for d in data["diagnostics"].values():
        assert d["batches"] > 0 and 0 < d["forward_share"] <= 1
    for mode in ("ctx32", "ctx128"):
        assert "ms" in data["sdpa_backends"][mode]["math"]  # the math kernel always runs
    assert data["sdpa_backends"]["ctx32"]["packed"]


def test_encoder_matmul_precisions_are_measured_against_float64(bench):
    data, md, _, _ = bench
    m = data["encoder_matmul"]
    assert m["features"] == data["meta"]["dict_size"] and m["tokens"] > 0
    assert m["fp32"]["rel_err"] < 1e-6 and m["fp32"]["threshold_flips"] == 0
    # The bf16 split recovers what a plain bf16 GEMM loses: near-fp32, and far below bf16.
    assert m["bf16x3"]["rel_err"] < 1e-4 and m["bf16"]["rel_err"] > 100 * m["bf16x3"]["rel_err"]
    assert "## The all-features encoder's matmul alone" in md


def test_goals_on_a_gpu_run_pick_the_best_and_the_fastest_within_memory(bench):
    """The goal rows a GPU run gets (a CPU run gets none), from the tiny run's own rows relabelled as a GPU's."""
    data, _, _, _ = bench
    gib = 2**30
    runs = [dict(r) for r in data["runs"] if r["mode"] == "ctx128"]
    sizes = sorted({r["batch_tokens"] for r in runs})
    for r in runs:  # the larger batch over the memory goal, the smaller within it
        r["gpu_alone_bytes"] = int((12 if r["batch_tokens"] == sizes[-1] else 8) * gib)
        r["fed_per_s"] = {("b", sizes[0]): 100e3, ("c", sizes[0]): 95e3, ("d", sizes[0]): 30e3,
                          ("b", sizes[-1]): 120e3, ("c", sizes[-1]): 108e3, ("d", sizes[-1]): 50e3}[
            (r["phase"], r["batch_tokens"])]
    fake = {"meta": {**data["meta"], "tiny": False, "device_type": "cuda"}, "runs": runs}
    fake["summary"] = gpu.summarize(runs)
    rows = {g["goal"]: g for g in gpu.goals(fake)}
    big, small = sizes[-1], sizes[0]
    assert rows["(c) fed tokens/s, ctx128"]["measured"] == "108,000" and rows["(c) fed tokens/s, ctx128"]["met"]
    assert rows["(d) fed tokens/s, ctx128"]["measured"] == "50,000" and rows["(d) fed tokens/s, ctx128"]["met"]
    assert rows[f"c/b at c's best batch size ({big}), ctx128"]["measured"] == "0.90"
    assert not rows[f"GPU peak, (c) alone at {big} tokens/batch, ctx128"]["met"]
    within = rows[f"(c) fed tokens/s within 9.0 GiB ({small} tokens/batch), ctx128"]
    assert within["measured"] == "95,000" and within["met"]
    assert "## Goals" in gpu.markdown({**fake, "goals": list(rows.values())})
