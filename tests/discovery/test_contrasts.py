"""The contrasts (roles, models) and response pooling, against independent computations on the tiny model, and
their bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER

import personamine
from personamine.files.discover import read_discovery
from personamine.jobs.cli import main

PROMPTS = ["Who are you?", "How do you feel today?", "Are you conscious?", "What do you dream about?",
           "Do you have a self?", "What is your name?"]
RESPONSES = ["I am a helpful assistant.", "I feel calm and ready to help.", "I am not sure, honestly.",
             "I do not dream, but I like the question.", "Perhaps a small one.", "My name is Tiny."]


def prompts_file(tmp_path, with_responses=False):
    path = tmp_path / ("prompts-with-responses.jsonl" if with_responses else "prompts.jsonl")
    rows = [{"content": p, **({"response": r} if with_responses else {})} for p, r in zip(PROMPTS, RESPONSES,
                                                                                          strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def roles_file(tmp_path, roles=(("pirate", "You are a pirate."), ("cat", "You are a cat. Meow."))):
    path = tmp_path / "roles.jsonl"
    path.write_text("".join(json.dumps({"name": n, "system": s}) + "\n" for n, s in roles))
    return str(path)


def kwargs(model_dir, sae_dir, tmp_path, **extra):
    base = dict(model=str(model_dir), layer=SAE_LAYER, sae=str(sae_dir), prompts=prompts_file(tmp_path),
                output=str(tmp_path / "d.h5"), progress=False, top=8, n_boot=200, preflight=False)
    base.update(extra)
    return base


def test_the_same_model_on_both_sides_differs_in_nothing(tiny_model_dir, tiny_sae_dir, tmp_path):
    res = read_discovery(personamine.discover(**kwargs(tiny_model_dir, tiny_sae_dir, tmp_path, contrast="models",
                                                       model_b=str(tiny_model_dir))))
    assert res.contrast == "models" and res.attrs["paired"]
    assert (res.score == 0).all() and (res.ranking.ci_low == 0).all() and (res.ranking.ci_high == 0).all()
    assert not res.discoveries().any() and (res.ranking.support == 0).all()
    np.testing.assert_array_equal(res.persona_acts, res.control_acts)
    d = res.directions[(SAE_LAYER, "last")]
    assert d.norm == 0 and d.auroc == 0.5


@torch.no_grad()
def test_response_pooling_is_the_mean_over_the_responses_own_tokens(tiny_model_dir, tiny_sae_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = read_discovery(personamine.discover(**kwargs(
        tiny_model_dir, tiny_sae_dir, tmp_path, contrast="roles", roles=roles_file(tmp_path),
        prompts=prompts_file(tmp_path), position="response-mean", responses="generate", max_new_tokens=6)))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    def generated(text, system):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
        out = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, len(ids):].tolist()
        out = out[: out.index(tok.eos_token_id)] if tok.eos_token_id in out else out
        return tok.decode(out, skip_special_tokens=True).strip()

    def response_mean(text, system, response):
        """The residual averaged over the response's own characters' tokens, located by character offsets."""
        messages = (([{"role": "system", "content": system}] if system else [])
                    + [{"role": "user", "content": text}, {"role": "assistant", "content": response}])
        rendered = tok.apply_chat_template(messages, tokenize=False)
        start = rendered.rindex(response)
        enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
        keep = [i for i, (a, b) in enumerate(enc["offset_mapping"])
                if a >= start and b <= start + len(response) and b > a]
        h = model(torch.tensor([enc["input_ids"]]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0]
        return h[keep].double().mean(0).numpy()

    assert res.persona_response == [generated(p, None) for p in PROMPTS]
    roles = [("pirate", "You are a pirate."), ("cat", "You are a cat. Meow.")]
    assert res.roles == roles
    assert res.control_response == [generated(p, s) for p in PROMPTS for _, s in roles]
    a = np.stack([response_mean(p, None, r) for p, r in zip(PROMPTS, res.persona_response, strict=True)])
    b = np.stack([np.mean([response_mean(p, s, res.control_response[i * 2 + j]) for j, (_, s) in enumerate(roles)],
                          axis=0) for i, p in enumerate(PROMPTS)])
    np.testing.assert_allclose(res.directions[(SAE_LAYER, "response-mean")].vector, a.mean(0) - b.mean(0),
                               atol=1e-4)


def test_given_responses_are_read_from_the_prompts_file(tiny_model_dir, tiny_sae_dir, tmp_path):
    res = read_discovery(personamine.discover(**kwargs(
        tiny_model_dir, tiny_sae_dir, tmp_path, contrast="models", model_b=str(tiny_model_dir),
        prompts=prompts_file(tmp_path, with_responses=True), position="last,response-mean", responses="given")))
    assert res.persona_response == RESPONSES and res.control_response == RESPONSES
    assert sorted(res.tables) == [("L2", "last"), ("L2", "response-mean")]


def write_wide_model(src, out):
    """The tiny model's tokenizer with a model twice as wide."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(src)
    config.hidden_size, config.intermediate_size = 2 * config.hidden_size, 2 * config.intermediate_size
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


@pytest.mark.parametrize("case", ["empty-roles", "wide-model-b", "no-model-b", "no-given-response",
                                  "response-without-template", "roles-without-template", "layer-past-the-model"])
def test_bad_input_gets_one_line_and_writes_nothing(case, tiny_model_dir, tiny_model_dir_nobos, tiny_sae_dir,
                                                    tmp_path, capsys):
    args = ["discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--prompts", prompts_file(tmp_path), "--output", str(tmp_path / "out.h5"), "--no-progress",
            "--no-preflight"]
    if case == "empty-roles":
        (tmp_path / "none.jsonl").write_text("\n")
        args += ["--contrast", "roles", "--roles", str(tmp_path / "none.jsonl")]
    elif case == "wide-model-b":
        args += ["--contrast", "models", "--model-b", str(write_wide_model(tiny_model_dir, tmp_path / "wide"))]
    elif case == "no-model-b":
        args += ["--contrast", "models"]
    elif case == "no-given-response":
        args += ["--position", "response-mean", "--responses", "given"]
    elif case == "response-without-template":
        args += ["--model", str(_no_template(tiny_model_dir_nobos, tmp_path)), "--position", "response-mean"]
    elif case == "roles-without-template":
        args += ["--model", str(_no_template(tiny_model_dir_nobos, tmp_path)), "--contrast", "roles"]
    elif case == "layer-past-the-model":
        args += ["--direction-layers", "1,9"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("personamine: error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.h5").exists() and not list(tmp_path.glob(".out.h5.tmp*"))


def _no_template(model_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path / "no-template"
    shutil.copytree(model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = None
    tok.save_pretrained(out)
    config = out / "tokenizer_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    for extra in out.glob("chat_template.*"):
        extra.unlink()
    return out


def test_cli_table_shows_the_statistics(tiny_model_dir, tiny_sae_dir, tmp_path, capsys):
    assert main(["discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
                 "--output", str(tmp_path / "out.h5"), "--no-progress", "--n-boot", "200", "--table", "5"]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and " q " in out and "support" in out and "AUROC" in out
    assert "Benjamini-Hochberg" in out
