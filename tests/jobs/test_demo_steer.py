"""`personamine demo-steer` after the demo: on the tiny fixtures through the CLI, and on the real SmolLM2 with the
demo's cached SAE (slow: the whole steering path offline, kept short for CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import tiny_demo_kwargs

import personamine
from personamine.jobs.cli import main
from personamine.jobs.demo import demo
from personamine.jobs.demo_steer import demo_steer


def test_demo_steer_cli_after_the_tiny_demo(tiny_model_dir, tiny_corpus_jsonl, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PERSONAMINE_CACHE", str(tmp_path / "cache"))
    first = demo(say=lambda _: None, **tiny_demo_kwargs(tiny_model_dir, tiny_corpus_jsonl, tmp_path, top=4))
    out = first.mining.parent
    assert main(["demo-steer", "--output-dir", str(out), "--top", "2", "--n-prompts", "2", "--max-new-tokens", "3",
                 "--alphas=-0.5,0.5", "--ppl-tokens", "0", "--show", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    found = personamine.read_discovery(first.discovery)
    res = personamine.read_steering(out / "steer.h5")
    assert res.feature_ids.tolist() == found.feature_ids[:2].tolist()
    assert res.attrs["clamp_unit"] == "corpus-max" and res.table() in printed
    assert "prompt: " in printed and "unsteered" in printed
    assert 'id="pm-steering"' in (out / "report.html").read_text()
    # The discovered persona direction at the demo's layer: added, ablated, capped and floored at its 25th percentile.
    name = f"[L{res.attrs['layer']}/response-mean]"
    steered = [res.names[i] for i in range(len(res.names)) if res.directions_of(i)]
    assert steered == [f"add {name}=-0.25", f"add {name}=-0.1", f"add {name}=0.1", f"add {name}=0.25",
                       f"ablate {name}", f"cap {name}=p25", f"floor {name}=p25"]
    assert res.attrs["directions"] == str(first.discovery)
    assert f"cap {name}=p25" in printed and "(cap " in printed and "(floor " in printed


def test_demo_steer_before_the_demo_says_what_to_run(tmp_path, capsys):
    assert main(["demo-steer", "--output-dir", str(tmp_path / "nothing"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "discover.h5 does not exist: run `personamine demo` first" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_real_demo_steer_on_smollm2(tmp_path):
    """SmolLM2 + the demo's cached SAE (trained here if the cache is cold): discover, a short mine, then steer the
    top two features on three prompts of each set."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personamine.config import DemoConfig
    from personamine.jobs.demo import ensure_sae
    from personamine.model.loading import resolve_model_source

    cfg = DemoConfig()
    sae, _ = ensure_sae(cfg, say=lambda _: None)
    found = personamine.read_discovery(personamine.discover(model=cfg.model, layer=cfg.layer, sae=str(sae),
                                                            position=cfg.discover_position, n_boot=200,
                                                            output=str(tmp_path / "discover.h5"), progress=False))
    personamine.mine(model=cfg.model, layer=cfg.layer, sae=str(sae), corpus=cfg.corpus,
                     features=found.feature_ids[:2].tolist(), max_tokens=4000, n_shards=1,
                     output=str(tmp_path / "mine.h5"), progress=False)
    lines: list[str] = []
    result = demo_steer(output_dir=str(tmp_path), top=2, n_prompts=3, max_new_tokens=8, alphas=[-0.25, 0.25],
                        direction_alphas=[0.1], ppl_tokens=256, progress=False, say=lines.append)
    res = personamine.read_steering(result.steering)
    assert res.feature_ids.tolist() == found.feature_ids[:2].tolist()
    assert res.attrs["self_name"] == "SmolLM" and "SmolLM" in res.continuations[2]
    assert len(res.names) == 1 + 2 * 4 + 4 and res.table() in "\n".join(lines)
    persona = res.sets["persona"]
    # The unsteered responses are SmolLM2's own greedy ones, from transformers alone.
    tok = AutoTokenizer.from_pretrained(resolve_model_source(cfg.model))
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(cfg.model), dtype=torch.float32).eval()
    with torch.no_grad():
        for p, rendered in enumerate(persona.rendered):
            ids = tok(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
            end = out.index(tok.eos_token_id) if tok.eos_token_id in out else len(out)
            assert persona.tokens[0, p, : persona.length[0, p]].tolist() == out[:end]
    # Ablation and clamping reach their targets up to the encoder/decoder bound |1 - e_f . d_f|.
    stats = persona.term_stats
    for t, kind in enumerate(res.term_kind):
        f = res.term_feature[t]
        slack = abs(1 - res.encoder_decoder_dot[res.feature_ids.tolist().index(f)])
        before, after = stats["before_fired_mean"][t], stats["after_fired_mean"][t]
        if stats["n_fired"][t] == 0:
            continue
        if kind == "ablate":
            assert after <= before * slack + 1e-3
        elif kind == "clamp":
            value = res.term_value[t]
            assert abs(after - value) <= abs(value - before) * slack + 1e-2 * value
    # The persona direction's cap and floor hold on SmolLM2's residual stream, and acted somewhere.
    dstats = persona.direction_stats
    for r, kind in enumerate(res.direction_kind):
        if kind == "cap":
            assert dstats["after_max"][r] <= res.direction_value[r] + 1e-3 and dstats["n_active"][r] > 0
        elif kind == "floor":
            assert dstats["after_min"][r] >= res.direction_value[r] - 1e-3 and dstats["n_active"][r] > 0
    # Steering moves the model, and adding in opposite directions moves the identity log-probabilities apart.
    assert np.all(persona.kl[1:].max(-1) > 0) and np.isfinite(res.perplexity).all()
    assert 'id="pm-steering"' in result.report.read_text()
