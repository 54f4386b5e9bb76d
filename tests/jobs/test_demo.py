"""The demo pipeline end to end: on the tiny fixtures (SAE trained on first use, cached, reused), and on the real
SmolLM2 with the built-in corpus (slow)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from fixtures import NOISE, SAE_LAYER, personamine_cli, tiny_demo_kwargs

import personamine
from personamine.discovery.select import positive_only_note, top_discovered
from personamine.jobs.cli import main
from personamine.jobs.demo import demo
from personamine.roles import ROLE


def test_demo_end_to_end_on_tiny_fixtures(tiny_model_dir, tiny_corpus_jsonl, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONAMINE_CACHE", str(tmp_path / "cache"))
    lines: list[str] = []
    first = demo(say=lines.append, **tiny_demo_kwargs(tiny_model_dir, tiny_corpus_jsonl, tmp_path))
    text = "\n".join(lines)
    assert "training a 256-feature SAE" in text and "variance explained" in text
    # The SAE was trained and cached, in the release layout, on documents the demo did not mine.
    assert first.sae.parent == tmp_path / "cache" / "saes"
    saved = json.loads((first.sae / f"resid_post_layer_{SAE_LAYER}/trainer_0/config.json").read_text())
    assert saved["personamine"]["capture"]["skip_documents"] == 25
    found = personamine.read_discovery(first.discovery)
    mined = personamine.read_results(first.mining)
    # The top 12 ranked, less those scoring below zero (said in the output).
    expected = top_discovered(found.feature_ids, found.score, 12).tolist()
    assert mined.feature_ids.tolist() == expected
    assert (positive_only_note(len(expected), 12, found.feature_ids.size) or f"mining these {len(expected)} features"
            ) in lines
    # The conversations were mined with only the Assistant's turns scored, and their contexts show the turns.
    assert mined.has_turns() and mined.tokens_scored == mined.tokens_scored_by_role[ROLE["assistant"]] > 300
    assert mined.tokens_seen_by_role[ROLE["user"]] > 0 and "‹assistant›" in text and "peak in assistant" in text
    assert f"{mined.tokens_scored:,} assistant tokens of {tmp_path / 'chats.jsonl'} scored" in text
    # Printed: the discovery table, then each shown feature's scores and its top contexts with marked tokens.
    assert found.table(12) in text
    shown = [int(m) for m in re.findall(r"^feature (\d+):", text, flags=re.M)]
    assert shown == expected[:3]
    assert text.count("discovery score") == 3 and "«" in text
    strongest = [m[1] for m in re.findall(r"^  strongest on: (['\"])(.+?)\1 ", text, flags=re.M)]
    for j, prompt in enumerate(strongest):
        assert prompt == found.persona_text[int(found.persona_acts[:, j].argmax())]
    assert len(strongest) == 3
    assert not (tmp_path / "demo" / "mine.work").exists()  # a finished demo leaves no checkpoints behind
    report = first.mining.parent / "report.html"
    assert f"report: {report}" in text and str(shown[0]) in report.read_text()  # test_report.py checks the page

    # Second run: the cached SAE is reused (no training), the results are the same.
    again: list[str] = []
    second = demo(say=again.append, **tiny_demo_kwargs(tiny_model_dir, tiny_corpus_jsonl, tmp_path))
    assert "training" not in "\n".join(again) and "(cached)" in "\n".join(again)
    assert second.sae == first.sae
    redo = personamine.read_results(second.mining)
    np.testing.assert_array_equal(redo.score, mined.score)


def test_demo_cli_with_a_given_sae(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    """As a user runs it: only the demo's own lines, no library noise (the model loads twice)."""
    out = tmp_path / "cli-demo"
    run = personamine_cli("demo", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                          str(tiny_sae_dir), "--corpus", str(tiny_corpus_jsonl), "--mine-corpus",
                          str(tiny_corpus_jsonl), "--messages-column", "", "--mine-tokens", "800", "--mine-ctx-len",
                          "16", "--top", "5", "--show", "2", "--output-dir", str(out), "--no-progress")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    printed = run.stdout
    assert not any(noise in printed for noise in NOISE)
    lines = printed.splitlines()
    assert lines[0] == f"personamine demo: {tiny_model_dir} layer {SAE_LAYER}, mining {tiny_corpus_jsonl} (all offline)"
    assert lines[1] == f"SAE {tiny_sae_dir} (given)"
    found = personamine.read_discovery(out / "discover.h5")
    assert f"wrote {out / 'discover.h5'}: {found.summary()}; top features by the lower bound of the 95% CI of " \
           "mean(persona) - mean(control) at the last token:" in lines
    assert any(line.startswith(f"L{SAE_LAYER} last: ") and "survive FDR" in line for line in lines)
    assert any(line.startswith(f"layer {SAE_LAYER:>3} response-mean") and "AUROC" in line for line in lines)
    assert "mining these 5 features" in lines and printed.count("discovery score") == 2
    assert any(line.startswith(f"wrote {out / 'mine.h5'}: ") and line.endswith(" documents)") for line in lines)
    assert lines[-1] == f"report: {out / 'report.html'} (open it in a browser; it works offline)"
    assert personamine.read_results(out / "mine.h5").feature_ids.size == 5
    # the persona directions at the SAE's layer were mined in the same forward, next to its features
    directions = personamine.read_results(out / "mine.h5", readout=f"directions-L{SAE_LAYER}")
    assert directions.direction_names == [f"L{SAE_LAYER}/last", f"L{SAE_LAYER}/response-mean"]
    assert directions.config["center_directions"] and "the persona directions at layer" in printed
    assert f"direction 'L{SAE_LAYER}/last' (centred): mean" in printed and "documents, highest mean:" in printed


@pytest.mark.slow
def test_real_demo_on_smollm2(tmp_path):
    """The real thing, smaller mining budget: SmolLM2 + the cached demo SAE (trained here if the cache is cold,
    ~5 minutes on 2 cores) + the built-in corpus, mining the built-in conversations."""
    lines: list[str] = []
    result = demo(mine_tokens=20_000, show=3, examples=2, output_dir=str(tmp_path), progress=False,
                  say=lines.append)
    text = "\n".join(lines)
    explained = float(re.search(r"variance explained (-?[\d.]+)%", result.sae_summary).group(1)) / 100
    assert explained > 0.5
    found = personamine.read_discovery(result.discovery)
    assert len(found.persona_text) >= 24 and len(found.control_text) == len(found.persona_text)
    assert found.score[0] > 0 and found.persona_firing[0] > found.control_firing[0]
    mined = personamine.read_results(result.mining)
    assert mined.feature_ids.tolist() == top_discovered(found.feature_ids, found.score, 20).tolist()
    assert (found.score[np.isin(found.feature_ids, mined.feature_ids)] > 0).all()
    # Mined over the built-in conversations, scoring the Assistant's turns only: its contexts show the turns.
    assert mined.attrs["corpus"] == "builtin:conversations" and mined.has_turns()
    assert mined.tokens_scored == mined.tokens_scored_by_role[ROLE["assistant"]] > 4_000
    assert text.count("discovery score") == 3 and "«" in text and "‹assistant›" in text
    # The pre-flight quality check passed at the SAE's layer, and its neighbours fit worse (README figures).
    for attrs in (found.attrs, mined.attrs):
        assert attrs["preflight_fve"] > 0.5, attrs
        assert attrs["preflight_fve_layer_9"] < attrs["preflight_fve"] > attrs["preflight_fve_layer_11"]


def test_demo_reports_a_missing_builtin_in_one_line(tiny_model_dir, tmp_path, capsys):
    code = main(["demo", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--corpus", "builtin:nope",
                 "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("personamine: error: Unknown built-in corpus 'builtin:nope'")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
