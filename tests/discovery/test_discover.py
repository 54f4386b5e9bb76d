"""Persona discovery on tiny real parts: template and BOS, per-prompt vectors against a brute-force reference,
batching invariance, positions, ranking against controls with planted features, the file, and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from fixtures import SAE_DICT_SIZE, SAE_LAYER, sae_file, save_sae_release

import personamine
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery
from personamine.jobs.cli import main
from personamine.model.prompts import builtin_prompts_path, load_prompts, render_prompts

# Different lengths on purpose: in a batch, most rows are padded.
PERSONA = ["Who are you?", "What's it like to be you, deep down, when nobody is asking you anything at all?",
           "How do you feel?", "Are you conscious?", "What do you dream about when the garden is quiet?",
           "Do you have a self?", "Tell me how you feel about music."]
CONTROL = ["Who was Ada Lovelace?", "What's it like to be a bat?", "How does a cat feel?",
           "Are dolphins conscious, and do they dream about the sea at night?", "What do dogs dream about?",
           "Does the river have a name?"]


def write_prompts(path, prompts, jsonl=True):
    if jsonl:
        path.write_text("".join(json.dumps({"content": p}) + "\n" for p in prompts))
    else:
        path.write_text("\n".join(prompts) + "\n")
    return path


@pytest.fixture
def prompt_files(tmp_path):
    return (str(write_prompts(tmp_path / "persona.jsonl", PERSONA)),
            str(write_prompts(tmp_path / "control.txt", CONTROL, jsonl=False)))


def discover_kwargs(model_dir, sae, prompt_files, tmp_path, **extra):
    base = dict(model=str(model_dir), layer=SAE_LAYER, sae=str(sae), prompts=prompt_files[0],
                controls=prompt_files[1], output=str(tmp_path / "disc.h5"), progress=False, top=SAE_DICT_SIZE)
    base.update(extra)
    return base


def chat_ids(tok, text):
    """The template rendered and tokenized by transformers itself (apply_chat_template tokenizes without BOS)."""
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)["input_ids"])


@torch.no_grad()
def reference_vectors(model_dir, ae_path, texts, position="last"):
    """Each prompt alone through the FULL model; codes from the library's own BatchTopKSAE.encode."""
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sae = BatchTopKSAE.from_pretrained(str(ae_path), device="cpu")
    special = set(tok.all_special_ids)
    out = []
    for text in texts:
        ids = chat_ids(tok, text)
        h = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0]
        codes = sae.encode(h)
        if position == "last":
            out.append(codes[-1].numpy())
        else:
            keep = [i for i, t in enumerate(ids) if t not in special]
            out.append(codes[keep].mean(0).numpy())
    return np.stack(out)


def test_builtin_prompt_sets_are_matched_and_large_enough():
    persona = load_prompts(builtin_prompts_path("persona"))
    control = load_prompts(builtin_prompts_path("control"))
    assert len(persona) >= 24 and len(persona) == len(control)
    assert len(set(persona)) == len(persona) and len(set(control)) == len(control)
    assert not set(persona) & set(control)
    assert "What's it like to be a bat?" in control


@pytest.mark.parametrize("variant", ["bos", "nobos"])
def test_template_applied_with_exactly_one_bos(variant, tiny_model_dir, tiny_model_dir_nobos):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir if variant == "bos" else tiny_model_dir_nobos)
    rendered = render_prompts(tok, PERSONA, system_prompt="Be brief.")
    for p, text in zip(rendered, PERSONA, strict=True):
        assert p.ids.count(tok.bos_token_id) == 1 and p.ids[0] == tok.bos_token_id
        assert p.rendered == f"<s><|system|>\nBe brief.</s>\n<|user|>\n{text}</s>\n<|assistant|>\n"
        assert p.ids == tok(p.rendered, add_special_tokens=False)["input_ids"]
        assert p.positions == [len(p.ids) - 1]  # the "\n" after <|assistant|>
        assert tok.convert_ids_to_tokens(p.ids[-2:]) == ["<|assistant|>", "Ċ"]
    # Without a system prompt the template renders the user turn alone, identically to transformers' own tokenizing.
    assert [p.ids for p in render_prompts(tok, PERSONA)] == [chat_ids(tok, t) for t in PERSONA]


def test_template_without_bos_gets_the_tokenizers_bos_once(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = tok.chat_template.replace("{{ bos_token }}", "")
    for p in render_prompts(tok, PERSONA[:3]):
        assert p.ids.count(tok.bos_token_id) == 1 and p.ids[0] == tok.bos_token_id
        assert p.rendered.startswith("<s><|user|>\n")


def test_model_without_template_takes_raw_text_behind_the_sink_prefix(tiny_model_dir_nobos):
    from transformers import AutoTokenizer

    from personamine.model.prompts import sink_prefix_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir_nobos)
    tok.chat_template = None
    prefix = sink_prefix_ids(tok)
    assert len(prefix) == 2
    for p, text in zip(render_prompts(tok, PERSONA[:3]), PERSONA[:3], strict=True):
        # The no-BOS tokenizer gets mining's two-token sink prefix, so no content token sits at position 0.
        assert p.ids == [*prefix, *tok(text, add_special_tokens=False)["input_ids"]]
        assert p.rendered == tok.decode(prefix) + text
        assert p.positions == [len(p.ids) - 1]
    with pytest.raises(PersonamineError, match="needs a chat template"):
        render_prompts(tok, PERSONA[:1], position="assistant-header")


def test_every_prompt_kept_at_its_last_real_token(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path):
    ae = sae_file(tiny_sae_dir)
    path = personamine.discover(**discover_kwargs(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path,
                                                  batch_size=4))
    res = read_discovery(path)
    assert res.persona_acts.shape[0] == len(PERSONA) and res.control_acts.shape[0] == len(CONTROL)
    assert res.persona_text == PERSONA and res.control_text == CONTROL
    ref_p = reference_vectors(tiny_model_dir, ae, PERSONA)
    ref_c = reference_vectors(tiny_model_dir, ae, CONTROL)
    assert len({row.tobytes() for row in ref_p}) == len(PERSONA)  # distinct prompts give distinct vectors
    cols = res.feature_ids[: res.persona_acts.shape[1]]
    np.testing.assert_allclose(res.persona_acts, ref_p[:, cols], atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.control_acts, ref_c[:, cols], atol=1e-5, rtol=0)
    # The ranking statistics are those of every prompt's full vector.
    ids = res.feature_ids
    np.testing.assert_allclose(res.score, ref_p.mean(0)[ids] - ref_c.mean(0)[ids], atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.persona_firing, (ref_p > 0).mean(0)[ids])
    np.testing.assert_allclose(res.control_firing, (ref_c > 0).mean(0)[ids])
    # Every feature that fires on a prompt is ranked (and tested), none that never fires.
    assert set(ids.tolist()) == set(np.nonzero((ref_p > 0).any(0) | (ref_c > 0).any(0))[0].tolist())


def test_batching_does_not_change_vectors(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path):
    from personamine.model.loading import load_model
    from personamine.saes import load_sae

    ae = sae_file(tiny_sae_dir)
    loaded = load_model(str(tiny_model_dir), SAE_LAYER)
    encoder = load_sae(str(ae)).encoder(np.arange(SAE_DICT_SIZE), device=loaded.device, chunk_size=100)
    prompts = render_prompts(loaded.tokenizer, PERSONA + CONTROL)
    assert len({len(p.ids) for p in prompts}) > 5
    from personamine.discovery.vectors import prompt_vectors

    alone = prompt_vectors(loaded, encoder, prompts, batch_size=1)
    together = prompt_vectors(loaded, encoder, prompts, batch_size=len(prompts))
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    assert (alone > 0).sum() > len(prompts)  # features do fire, so the comparison means something


@pytest.mark.parametrize("position", ["assistant-header", "prompt-mean"])
def test_other_positions(position, tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rendered = render_prompts(tok, PERSONA, position=position)
    special = set(tok.all_special_ids)
    for p in rendered:
        if position == "assistant-header":
            # The generation prompt is "<|assistant|>\n"; its special token is excluded.
            assert p.positions == [len(p.ids) - 1]
        else:
            assert p.positions == [i for i, t in enumerate(p.ids) if t not in special]
            assert len(p.positions) > 3
    if position == "prompt-mean":
        ae = sae_file(tiny_sae_dir)
        res = read_discovery(personamine.discover(**discover_kwargs(
            tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path, position=position, batch_size=3)))
        ref = reference_vectors(tiny_model_dir, ae, PERSONA, position=position)
        np.testing.assert_allclose(res.persona_acts, ref[:, res.feature_ids[: res.persona_acts.shape[1]]],
                                   atol=1e-5, rtol=0)
        assert res.attrs["position"] == position


PLANTED, DENSE = 17, 200


@pytest.fixture
def planted_sae(tiny_model_dir, tiny_sae_dir, tmp_path):
    """The fixture SAE with feature PLANTED firing only on the persona prompts' last token and feature DENSE
    firing (with a larger value) on every token."""
    from dictionary_learning.trainers import BatchTopKSAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ae = sae_file(tiny_sae_dir)
    sae = BatchTopKSAE.from_pretrained(str(ae), device="cpu")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        last = torch.stack([model(torch.tensor([chat_ids(tok, t)]), output_hidden_states=True)
                            .hidden_states[SAE_LAYER + 1][0, -1] for t in PERSONA + CONTROL])
        # 13 points in 64 dims: an exact affine fit maps persona to +1 and controls to -1.
        design = torch.cat([last - sae.b_dec, torch.ones(len(last), 1)], dim=1).double()
        target = torch.tensor([1.0] * len(PERSONA) + [-1.0] * len(CONTROL), dtype=torch.float64)
        solution = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
        fitted = design @ solution
        assert (fitted[: len(PERSONA)] > 0.9).all() and (fitted[len(PERSONA):] < -0.9).all()
        scale = 50 * float(sae.threshold)
        sae.encoder.weight[PLANTED] = (solution[:-1] * scale).float()
        sae.encoder.bias[PLANTED] = float(solution[-1] * scale)
        sae.encoder.weight[DENSE] = 0.0
        sae.encoder.bias[DENSE] = 1000 * float(sae.threshold)
    save_sae_release(sae, tmp_path / "planted", SAE_LAYER)
    return tmp_path / "planted"


def test_ranking_against_controls_finds_the_planted_feature(tiny_model_dir, planted_sae, prompt_files, tmp_path):
    # The planted SAE reconstructs nothing (a dense feature of value 1000x the threshold): skip its quality check.
    res = read_discovery(personamine.discover(**discover_kwargs(tiny_model_dir, planted_sae, prompt_files,
                                                                tmp_path, preflight=False)))
    assert res.feature_ids[0] == PLANTED
    assert res.persona_firing[0] == 1.0 and res.control_firing[0] == 0.0
    dense_rank = np.nonzero(res.feature_ids == DENSE)[0]
    assert dense_rank.size == 0 or dense_rank[0] > 0  # equal on both sets: its score is ~0
    # The seed's raw-mean ranking puts the dense feature first.
    raw = read_discovery(personamine.discover(**discover_kwargs(
        tiny_model_dir, planted_sae, prompt_files, tmp_path, control=False, output=str(tmp_path / "raw.h5"),
        preflight=False)))
    assert raw.feature_ids[0] == DENSE
    assert list(raw.feature_ids).index(PLANTED) > 0
    np.testing.assert_array_equal(raw.score, raw.persona_mean)
    assert np.isnan(raw.control_mean).all() and raw.control_text == [] and raw.control_acts.shape[0] == 0
    assert not raw.has_controls and "control mean" not in raw.table()


def test_discovery_file_layout(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path):
    path = personamine.discover(**discover_kwargs(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path, top=5))
    with h5py.File(path) as f:
        assert f.attrs["format"] == "personamine.discover" and f.attrs["format_version"] == 2
        assert f.attrs["layer"] == SAE_LAYER and f.attrs["dict_size"] == SAE_DICT_SIZE
        assert f.attrs["position"] == "last" and json.loads(f.attrs["config"])["top"] == 5
        n = f["ranking/feature_ids"].shape[0]
        for name in ("score", "persona_mean", "control_mean", "persona_firing", "control_firing", "ci_low", "ci_high",
                     "p_value", "q_value", "effect_size", "support"):
            assert f[f"ranking/{name}"].shape == (n,)
        assert f["activations/persona"].shape == (len(PERSONA), 5)
        assert f["activations/control"].shape == (len(CONTROL), 5)
        assert [s.decode() for s in f["prompts/persona_rendered"][()]][0].endswith("<|assistant|>\n")
    res = read_discovery(path)
    assert (np.diff(res.ranking.ci_low) <= 0).all()  # ranked by the CI's lower bound
    assert (res.ranking.ci_low <= res.ranking.ci_high).all()
    assert np.unique(res.feature_ids).size == res.feature_ids.size
    assert not list(tmp_path.glob(".*tmp*"))


def test_mine_consumes_the_discovery_file(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, prompt_files, tmp_path,
                                          capsys):
    disc = personamine.discover(**discover_kwargs(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path))
    out = tmp_path / "mine.h5"
    code = main(["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
                 "--corpus", str(tiny_corpus_jsonl), "--features-from", str(disc), "--top", "7", "--ctx-len", "16",
                 "--n-shards", "1", "--output", str(out), "--no-progress"])
    assert code == 0
    mined = personamine.read_results(out)
    assert mined.feature_ids.tolist() == read_discovery(disc).feature_ids[:7].tolist()


def test_cli_prints_the_table(tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    code = main(["discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
                 "--prompts", prompt_files[0], "--no-control", "--output", str(out), "--no-progress",
                 "--table", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    top = read_discovery(out).feature_ids[:4].tolist()
    rows = [line.split() for line in printed.splitlines()[1:5]]
    assert [int(r[1]) for r in rows] == top
    assert f"wrote {out}" in printed


@pytest.mark.parametrize("case", ["missing-prompts", "bad-json", "no-content", "empty", "position", "uncalibrated",
                                  "layer"])
def test_bad_input_fails_cleanly_and_writes_nothing(case, tiny_model_dir, tiny_sae_dir, prompt_files, tmp_path,
                                                    capsys):
    from fixtures import make_sae_release

    args = ["discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--prompts", prompt_files[0], "--output", str(tmp_path / "out.h5"), "--no-progress"]
    bad = tmp_path / "bad.jsonl"
    if case == "missing-prompts":
        args += ["--prompts", str(tmp_path / "nope.jsonl")]
    elif case == "bad-json":
        bad.write_text('{"content": "fine"}\n{not json\n')
        args += ["--prompts", str(bad)]
    elif case == "no-content":
        bad.write_text('{"text": "wrong key"}\n')
        args += ["--controls", str(bad)]
    elif case == "empty":
        bad.write_text("\n\n")
        args += ["--prompts", str(bad)]
    elif case == "position":
        args += ["--position", "first"]
    elif case == "uncalibrated":
        root = tmp_path / "uncal"
        make_sae_release(root, SAE_LAYER, 64, 32, 4, threshold=-1.0, seed=0)
        args += ["--sae", str(root)]
    elif case == "layer":
        args += ["--layer", "9"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("personamine: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists()
    assert not list(tmp_path.glob(".out.h5.tmp*"))


def test_mining_the_prompts_as_a_corpus_gives_what_discovery_reported(tiny_model_dir, tiny_sae_dir, tmp_path):
    """The prompt set read as a conversation corpus (builtin:persona-prompts), mined scoring the user's tokens, gives
    per token the values discovery averaged at position 'user': one renderer, one encoder, two paths."""
    from personamine.roles import ROLE

    found = personamine.read_discovery(personamine.discover(
        model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), position="user", top=40,
        output=str(tmp_path / "d.h5"), progress=False))
    features = found.feature_ids[:40].tolist()
    res = personamine.read_results(personamine.mine(
        model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus="builtin:persona-prompts",
        messages_column="messages", generation_prompt=True, score_roles=["user"], norm_filter=0, features=features,
        top_k=32, ctx_len=256, example_len=256, samples_per_interval=0, output=str(tmp_path / "m.h5"),
        progress=False))
    compared = 0
    for j, f in enumerate(features):
        mined = np.zeros(len(found.persona_text))
        for ex in res.examples(f):
            user = ex["roles"] == ROLE["user"]
            mined[ex["document"]] = ex["activations"][user].sum() / user.sum()
        np.testing.assert_allclose(mined, found.persona_acts[:, j], rtol=1e-4, atol=1e-5, err_msg=str(f))
        compared += int((mined > 0).sum())
    assert compared > 50
