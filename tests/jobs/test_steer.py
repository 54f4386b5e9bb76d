"""`personamine.steer` end to end on the tiny model: every number in the file against an independent computation
(one unpadded forward per prompt + continuation, a hook written here, the library's own SAE encoder), alpha = 0
bitwise equal to the plain model, the file and its config, the CLI, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, SENTENCES

import personamine
from personamine.config import SteerConfig, field_help
from personamine.jobs.cli import main

PERSONA = ["Who are you?", "What do you think about yourself, when the garden is quiet?", "How do you feel?"]
CONTROL = ["Who was Ada Lovelace?", "What does a cat think about the sea?", "How does a bat feel?"]
CONTINUATIONS = {"assistant": ["I am an AI model", "As an assistant, I", "I am {name}"],
                 "human": ["I feel happy when", "I remember the first time"]}
FEATURES = [3, 7]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steer-inputs")
    files = {}
    for kind, texts in (("persona", PERSONA), ("control", CONTROL)):
        files[kind] = tmp / f"{kind}.jsonl"
        files[kind].write_text("".join(json.dumps({"content": t}) + "\n" for t in texts))
    files["continuations"] = tmp / "continuations.json"
    files["continuations"].write_text(json.dumps(CONTINUATIONS))
    files["corpus"] = tmp / "corpus.jsonl"
    files["corpus"].write_text("".join(json.dumps({"text": " ".join(SENTENCES[i: i + 3])}) + "\n"
                                       for i in range(0, 24, 3)))
    return files


def steer_kwargs(model_dir, sae_dir, inputs, tmp_path, **extra):
    base = dict(model=str(model_dir), sae=str(sae_dir), layer=SAE_LAYER, features=FEATURES,
                prompts=str(inputs["persona"]), controls=str(inputs["control"]),
                continuations=str(inputs["continuations"]), self_name="Tiny", ppl_corpus=str(inputs["corpus"]),
                ppl_tokens=60, ppl_ctx_len=16, max_new_tokens=5, clamp_unit="absolute", clamp=[0.4],
                alpha_unit="absolute", alphas=[-0.3, 0.3], combine=False, batch_size=4,
                output=str(tmp_path / "steer.h5"), progress=False)
    base.update(extra)
    return base


# ---------------------------------------------------------------- the independent reference


class Reference:
    """The full model run one sequence at a time, no padding, no cache; interventions by a hook written here and
    activations from dictionary_learning's own ``BatchTopKSAE.encode``."""

    def __init__(self, model_dir, sae_dir):
        from dictionary_learning.trainers import BatchTopKSAE
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        ae = sae_dir / f"resid_post_layer_{SAE_LAYER}/trainer_0/ae.pt"
        self.sae = BatchTopKSAE.from_pretrained(str(ae), device="cpu")
        self.special = set(self.tok.all_special_ids) | {self.tok.pad_token_id}
        self.terms: list[tuple] = []  # (kind, feature, value, where)
        self.region = (0, 0)  # [start, end) of the positions to act on
        self.model.model.layers[SAE_LAYER].register_forward_hook(self._hook)

    def prompt_ids(self, text):
        rendered = self.tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                add_generation_prompt=True, date_string="26 Jul 2024")
        return rendered, self.tok(rendered, add_special_tokens=False)["input_ids"]

    def _hook(self, _module, _args, h):
        if not self.terms:
            return None
        ids = self._ids
        start, end = self.region
        rows = [t for t in range(start, min(end, h.shape[1])) if ids[t] not in self.special]
        if not rows:
            return None
        h = h.clone()
        x = h[0, rows]
        with torch.no_grad():
            codes = self.sae.encode(x)
        change = torch.zeros_like(x)
        for kind, f, value, where in self.terms:
            d = self.sae.decoder.weight[:, f].detach()
            a = codes[:, f:f + 1]
            if kind == "ablate":
                change -= a * d
            elif kind == "clamp":
                change += (value - a) * ((a > 0) | (where == "all")) * d
            else:
                change += value * d / d.norm()
        h[0, rows] = x + change
        return h

    @torch.no_grad()
    def logits(self, ids, region):
        self._ids, self.region = ids, region
        return self.model(torch.tensor([ids])).logits[0].double()

    def logprob(self, prompt, cont, mode):
        region = {"all": (0, 10**9), "prompt": (0, len(prompt)), "generated": (len(prompt), 10**9)}[mode]
        logp = self.logits(prompt + cont, region).log_softmax(-1)
        total = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
        return total, logp[len(prompt) - 1]

    def greedy(self, prompt, n, mode, stop):
        ids = list(prompt)
        for _ in range(n):
            region = {"all": (0, 10**9), "prompt": (0, len(prompt)), "generated": (len(prompt), 10**9)}[mode]
            nxt = int(self.logits(ids, region)[-1].argmax())
            if nxt in stop:
                break
            ids.append(nxt)
        return ids[len(prompt):]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tied_sae_dir):
    return Reference(tiny_model_dir, tied_sae_dir)


def _terms(res, i):
    rows = np.nonzero(res.term_intervention == i)[0]
    return [(res.term_kind[r], int(res.term_feature[r]), float(res.term_value[r]), res.term_where[r]) for r in rows]


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_every_measurement_equals_an_independent_computation(tiny_model_dir, tied_sae_dir, inputs, tmp_path,
                                                             reference, positions):
    extra = {"interventions": ["ablate:3+add:7=0.5"]} if positions == "all" else {"features": [7], "clamp": []}
    path = personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, positions=positions,
                                            **extra))
    res = personamine.read_steering(path)
    ref = reference
    texts = [c.replace("{name}", "Tiny") for cs in CONTINUATIONS.values() for c in cs]
    assert res.continuations == texts and res.set_names == ["assistant", "human"]
    conts = [ref.tok(c, add_special_tokens=False)["input_ids"] for c in texts]
    stop = {ref.tok.eos_token_id}
    for kind, prompts in (("persona", PERSONA), ("control", CONTROL)):
        data = res.sets[kind]
        assert data.text == prompts
        rendered = [ref.prompt_ids(p) for p in prompts]
        assert data.rendered == [r for r, _ in rendered]
        for i in range(len(res.names)):
            ref.terms = _terms(res, i)
            for p, (_, prompt) in enumerate(rendered):
                ref.terms, saved = [], ref.terms
                _, base_first = ref.logprob(prompt, conts[0], positions)
                ref.terms = saved
                for c, cont in enumerate(conts):
                    lp, first = ref.logprob(prompt, cont, positions)
                    assert data.logprob[i, p, c] == pytest.approx(lp, abs=2e-4), (res.names[i], kind, p, c)
                kl = float((base_first.exp() * (base_first - first)).sum())
                assert data.kl[i, p] == pytest.approx(kl, abs=1e-5), (res.names[i], kind, p)
                response = ref.greedy(prompt, 5, positions, stop)
                assert data.tokens[i, p, : data.length[i, p]].tolist() == response, (res.names[i], kind, p)
                assert data.responses[i][p] == ref.tok.decode(response).replace("\x00", "\u2400")  # HDF5: no NUL
                assert bool(data.finished[i, p]) == (len(response) < 5)
        # The set log-probability is the log of the set's summed probability.
        lp = res.set_logprob(kind, "human")
        assert lp[0, 1] == pytest.approx(math.log(sum(math.exp(v) for v in data.logprob[0, 1, 3:])), abs=1e-9)
    if positions == "generated":  # the first generated token comes from the prompt alone: no KL, by definition
        assert np.all(res.sets["persona"].kl == 0)
    else:
        assert res.sets["persona"].kl[1:].max() > 1e-4
    # Perplexity: the first documents' windows, the intervention at every position, whatever `positions` says.
    prefix = [ref.tok.bos_token_id]
    windows, budget = [], 60
    for line in inputs["corpus"].read_text().splitlines():
        tokens = ref.tok(json.loads(line)["text"], add_special_tokens=False)["input_ids"][: min(15, budget)]
        windows.append(prefix + tokens)
        budget -= len(tokens)
        if budget <= 0:
            break
    assert res.attrs["ppl_tokens"] == 60
    for i in range(len(res.names)):
        ref.terms = _terms(res, i)
        nll = 0.0
        for w in windows:
            logp = ref.logits(w, (0, 10**9)).log_softmax(-1)
            nll -= sum(float(logp[t - 1, w[t]]) for t in range(1, len(w)))
        assert res.perplexity[i] == pytest.approx(math.exp(nll / 60), rel=1e-5), res.names[i]
    ref.terms = []


def test_units_come_from_the_unsteered_prompts(tiny_model_dir, tied_sae_dir, inputs, tmp_path, reference):
    # The tied SAE has the reference's encoder (only the decoder differs), so the maxima below hold for both.
    path = personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, clamp_unit="prompt-max",
                                            clamp=[2.0], alpha_unit="residual-norm", alphas=[0.5], ablate=False,
                                            ppl_corpus=""))
    res = personamine.read_steering(path)
    ref = reference
    ref.terms = []
    norms, maxima = [], np.zeros(len(FEATURES))
    for kind, prompts in (("persona", PERSONA), ("control", CONTROL)):
        for text in prompts:
            _, ids = ref.prompt_ids(text)
            with torch.no_grad():
                h = ref.model(torch.tensor([ids]), output_hidden_states=True).hidden_states[SAE_LAYER + 1][0]
            keep = [t for t, i in enumerate(ids) if i not in ref.special]
            norms += h[keep].norm(dim=-1).tolist()
            if kind == "persona":
                with torch.no_grad():
                    codes = ref.sae.encode(h[keep])[:, FEATURES].numpy()
                maxima = np.maximum(maxima, codes.max(0))
    assert res.attrs["residual_norm"] == pytest.approx(float(torch.tensor(norms).median()), rel=1e-5)
    np.testing.assert_allclose(res.prompt_max, maxima, rtol=1e-5)
    np.testing.assert_allclose(res.feature_scale, maxima, rtol=1e-5)
    clamps = [r for r, k in enumerate(res.term_kind) if k == "clamp"]
    np.testing.assert_allclose(res.term_value[clamps], 2 * maxima, rtol=1e-5)
    adds = [r for r, k in enumerate(res.term_kind) if k == "add"]
    np.testing.assert_allclose(res.term_value[adds], 0.5 * res.attrs["residual_norm"], rtol=1e-6)
    assert np.isnan(res.perplexity).all()  # ppl_corpus "" skips it
    # Clamping on the tied SAE (encoder rows = decoder directions) reaches its value where the feature fired.
    stats = res.sets["persona"].term_stats
    np.testing.assert_allclose(stats["after_fired_mean"][clamps], 2 * maxima, rtol=1e-3)
    assert np.nanmax(stats["target_error"][clamps]) < 1e-4


def test_alpha_zero_is_bitwise_the_unsteered_model(tiny_model_dir, tied_sae_dir, inputs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, alphas=[0.0],
                                            ablate=False, clamp=[], combine=True, max_new_tokens=6))
    res = personamine.read_steering(path)
    assert res.names == ["unsteered", "add 3=0", "add 7=0", "add 3+7=0"]
    for data in res.sets.values():
        for i in (1, 2, 3):
            assert np.array_equal(data.logprob[i], data.logprob[0])
            assert np.array_equal(data.tokens[i], data.tokens[0])
            assert np.all(data.kl[i] == 0)
    assert np.all(res.perplexity == res.perplexity[0])
    assert np.all(res.sets["persona"].term_stats["n_positions"] > 0)  # the zero change did run
    # ... and the unsteered generations are the plain model's own `generate`, batched and left-padded the same way.
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [tok(r, add_special_tokens=False)["input_ids"] for r in res.sets["persona"].rendered]
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)[:, width:]
    data = res.sets["persona"]
    for p in range(len(prompts)):
        tokens = out[p].tolist()
        end = tokens.index(tok.eos_token_id) if tok.eos_token_id in tokens else len(tokens)
        assert data.tokens[1, p, : data.length[1, p]].tolist() == tokens[:end]


def test_file_holds_the_config_and_reads_back(tiny_model_dir, tied_sae_dir, inputs, tmp_path):
    cfg = SteerConfig(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, sample=True, seed=3,
                                     temperature=0.8, n_prompts=2))
    path = personamine.steer(cfg)
    res = personamine.read_steering(path)
    assert res.config == json.loads(json.dumps(cfg.to_dict()))
    assert res.attrs["decoding"] == "sampled" and res.attrs["format"] == "personamine.steer"
    assert res.names == ["unsteered", "ablate 3", "clamp 3=0.4", "add 3=-0.3", "add 3=0.3", "ablate 7",
                         "clamp 7=0.4", "add 7=-0.3", "add 7=0.3"]
    assert res.sets["persona"].tokens.shape == (9, 2, 5) and res.sets["control"].logprob.shape == (9, 2, 5)
    assert res.feature_ids.tolist() == FEATURES
    np.testing.assert_allclose(res.encoder_decoder_dot, 1.0, atol=1e-5)  # the fixture ties encoder and decoder
    assert [p.name for p in tmp_path.iterdir()] == ["steer.h5"]  # written atomically: no temp file left
    # Seeded sampling: the same seed gives the same draws.
    again = personamine.read_steering(personamine.steer(cfg, output=str(tmp_path / "again.h5")))
    assert np.array_equal(again.sets["persona"].tokens, res.sets["persona"].tokens)
    table = res.table()
    assert table.splitlines()[0].split()[:3] == ["intervention", "Δlog", "p"] and "ablate 7" in table


def test_features_and_model_come_from_a_mining_file(tiny_model_dir, tiny_sae_dir, inputs, tiny_corpus_jsonl,
                                                    tmp_path):
    mined = personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                             corpus=str(tiny_corpus_jsonl), features=[11, 3, 7], ctx_len=16, max_documents=12,
                             n_shards=1, output=str(tmp_path / "mine.h5"), progress=False)
    kwargs = steer_kwargs(tiny_model_dir, tiny_sae_dir, inputs, tmp_path, clamp_unit="auto", clamp=[1.5],
                          alphas=[], ablate=False, features=[], features_from=str(mined), top=2)
    for key in ("model", "sae", "layer"):
        del kwargs[key]
    res = personamine.read_steering(personamine.steer(**kwargs))
    maxima = personamine.read_results(mined).max
    assert res.feature_ids.tolist() == [11, 3] and res.attrs["clamp_unit"] == "corpus-max"
    assert res.attrs["model"] == str(tiny_model_dir) and res.attrs["layer"] == SAE_LAYER
    np.testing.assert_allclose(res.feature_scale, maxima[:2], rtol=1e-6)
    np.testing.assert_allclose(res.term_value, 1.5 * maxima[:2], rtol=1e-6)


def test_every_config_field_has_help():
    assert all(field_help(SteerConfig).values())


def test_cli_steer_prints_the_table(tiny_model_dir, tied_sae_dir, inputs, tmp_path, capsys):
    out = tmp_path / "cli.h5"
    args = ["steer", "--model", str(tiny_model_dir), "--sae", str(tied_sae_dir), "--features", "3",
            "--prompts", str(inputs["persona"]), "--controls", str(inputs["control"]), "--n-prompts", "2",
            "--ppl-corpus", "", "--max-new-tokens", "3", "--alphas=-0.5,0.5", "--clamp", "1,2",
            "--clamp-unit", "absolute", "--no-combine", "--output", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "clamp 3=2" in printed and "add 3=-0.5" in printed and f"wrote {out}" in printed
    assert personamine.read_steering(out).attrs["layer"] == SAE_LAYER  # the SAE's own layer, from its config


@pytest.mark.parametrize("args, message", [
    (["--features", "9999"], "feature id 9999 is out of range: the SAE has 256 features"),
    (["--features", "3", "--layer", "1", "--sae", "AE_FILE"], "the SAE reads the output of layer 2, not layer 1"),
    (["--features", "3", "--layer", "1"], "has no resid_post_layer_1/trainer_0: it holds resid_post_layer_2/trainer_0"),
    (["--features", "3", "--alphas=nan,1"], "alphas must be finite numbers, got nan"),
    (["--features", "3", "--alphas=1,inf"], "alphas must be finite numbers, got inf"),
    (["--features", "3", "--clamp=-inf"], "clamp must be finite numbers, got -inf"),
    (["--features", "3", "--interventions", "add:3=nan"], "'nan' is not a finite number"),
    (["--features", "3", "--prompts", "EMPTY"], "holds no prompts"),
    (["--features", "3", "--positions", "middle"], "positions must be one of all, prompt, generated"),
    (["--features", "3", "--features-from", "NOT_H5"], "cannot open features_from file"),
    (["--features", "3", "--clamp-unit", "corpus-max"], "clamp multiples of the corpus max need a mining file"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_model_dir, tied_sae_dir, tmp_path, capsys, args, message):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    (tmp_path / "not.h5").write_text("not hdf5")
    ae_file = tied_sae_dir / f"resid_post_layer_{SAE_LAYER}/trainer_0/ae.pt"
    args = [{"EMPTY": str(empty), "NOT_H5": str(tmp_path / "not.h5"), "AE_FILE": str(ae_file)}.get(a, a) for a in args]
    out = tmp_path / "out" / "steer.h5"
    code = main(["steer", "--model", str(tiny_model_dir), "--sae", str(tied_sae_dir), "--output", str(out),
                 "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("personamine: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_prompt_set_that_renders_empty_is_refused(tiny_model_dir, tied_sae_dir, tmp_path, capsys):
    """A chat template that drops the user's text leaves nothing but special tokens to steer on."""
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        path = model_dir / name
        if name.endswith(".json"):
            config = json.loads(path.read_text())
            if "chat_template" in config:
                config["chat_template"] = "{{ bos_token }}"
            path.write_text(json.dumps(config))
        elif path.exists():
            path.write_text("{{ bos_token }}")
    out = tmp_path / "out" / "steer.h5"
    code = main(["steer", "--model", str(model_dir), "--sae", str(tied_sae_dir), "--features", "3",
                 "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "\"What's it like to be you?\": the chat template drops or reorders turn 0" in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- direction interventions


def _write_directions(path, seed=0, width=64):
    """Directions "L{0..3}/x" (each recorded at its layer) and "axis" (no layer), as an .npy with its .json."""
    rng = np.random.default_rng(seed)
    names = [f"L{layer}/x" for layer in range(4)] + ["axis"]
    np.save(path, rng.standard_normal((len(names), width)).astype(np.float32))
    path.with_suffix(".json").write_text(json.dumps(
        {"names": names, "directions": {f"L{layer}/x": {"layer": layer} for layer in range(4)}}))
    return path


def _carried(model, tok, ids, layer):
    """The plain model's residual after ``layer`` (the next layer's input), one unpadded sequence."""
    seen = {}
    handle = model.model.layers[layer + 1].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.__setitem__("h", args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True)
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return seen["h"][0].double()


def test_direction_interventions_measure_exactly(tiny_model_dir, tied_sae_dir, inputs, tmp_path, reference):
    directions = _write_directions(tmp_path / "dirs.npy")
    interventions = ["add:[axis]@1:3=0", "cap:[L{layer}/x]@1:1=p10", "add:[L{layer}/x]@0:3=0.25",
                     "ablate:[axis]@2", "cap:[L{layer}/x]@0:3=p50", "floor:[L1/x]=p75", "cap:[axis]@1=-0.5",
                     "add:3=0.2+cap:[axis]@2=p50"]
    path = personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, ablate=False, clamp=[],
                                            alphas=[], directions=str(directions), interventions=interventions,
                                            alpha_unit="residual-norm", ppl_corpus=""))
    res = personamine.read_steering(path)
    assert res.names[1:] == ["add [axis]@1:3=0", "cap [L{layer}/x]@1:1=p10", "add [L{layer}/x]@0:3=0.25",
                             "ablate [axis]@2", "cap [L{layer}/x]@0:3=p50", "floor [L1/x]=p75", "cap [axis]@1=-0.5",
                             "add 3=0.2 + cap [axis]@2=p50"]
    assert res.kinds[1:] == ["add", "none", "add", "ablate", "cap", "floor", "cap", "mixed"]
    # Alpha 0 and an empty layer range: bitwise the unsteered model.
    for i in (1, 2):
        for kind, data in res.sets.items():
            assert np.array_equal(data.logprob[i], data.logprob[0]) and np.array_equal(data.kl[i], data.kl[0])
            assert np.array_equal(data.tokens[i], data.tokens[0]), (res.names[i], kind)
    rows = {i: np.nonzero(res.direction_intervention == i)[0] for i in range(len(res.names))}
    assert [res.direction_name[r] for r in rows[3]] == ["L0/x", "L1/x", "L2/x"]  # each layer its own direction
    assert res.direction_layer[rows[6]].tolist() == [1]  # the layer the file records for L1/x
    assert rows[2].size == 0

    # The units, from an independent computation: unpadded forwards of prompt + unsteered response.
    ref = reference
    vectors = np.load(directions)
    names = json.loads(directions.with_suffix(".json").read_text())["names"]
    unit = {n: vectors[k].astype(np.float64) / np.linalg.norm(vectors[k].astype(np.float64))
            for k, n in enumerate(names)}
    norms, projections = {layer: [] for layer in range(3)}, {layer: [] for layer in range(3)}
    for kind, prompts in (("persona", PERSONA), ("control", CONTROL)):
        data = res.sets[kind]
        for p, text in enumerate(prompts):
            _, prompt = ref.prompt_ids(text)
            seq = prompt + data.tokens[0, p, : data.length[0, p]].tolist()
            real = np.array([t not in ref.special for t in seq])
            for layer in range(3):
                h = _carried(ref.model, ref.tok, seq, layer).numpy()
                norms[layer].append(np.linalg.norm(h[: len(prompt)][real[: len(prompt)]], axis=-1))
                if kind == "persona":
                    projections[layer].append(h[real])
    for r in rows[3]:  # add: alpha x the median residual norm at each layer (the lower middle one, as torch's)
        layer = int(res.direction_layer[r])
        all_norms = np.sort(np.concatenate(norms[layer]))
        assert res.direction_scale[r] == pytest.approx(float(all_norms[(all_norms.size - 1) // 2]), rel=1e-5)
        assert res.direction_value[r] == pytest.approx(0.25 * res.direction_scale[r], rel=1e-9)
    for i, percent in ((5, 50), (6, 75)):  # percentiles of the persona prompts' projections, unsteered
        for r in rows[i]:
            layer = int(res.direction_layer[r])
            proj = np.concatenate(projections[layer]) @ unit[res.direction_name[r]]
            assert res.direction_value[r] == pytest.approx(float(np.percentile(proj, percent)), abs=1e-5)

    for data in res.sets.values():
        st = data.direction_stats
        assert st["n_positions"].min() > 0
        for r in rows[3]:  # add: shifted by alpha x norm exactly, at each layer
            assert st["after_mean"][r] - st["before_mean"][r] == pytest.approx(res.direction_value[r], abs=1e-4)
        assert abs(st["after_mean"][rows[4][0]]) < 1e-5  # ablation leaves 0
        for r in rows[5]:  # cap: nothing above tau, and it acted somewhere but not everywhere
            assert st["after_max"][r] <= res.direction_value[r] + 1e-5
            assert 0 < st["active_fraction"][r] < 1
        r = rows[6][0]
        assert st["after_min"][r] >= res.direction_value[r] - 1e-5 and st["n_active"][r] > 0
        r = rows[8][0]  # with a feature term at the same layer: the cap still holds on the layer's output
        assert st["after_max"][r] <= res.direction_value[r] + 1e-5
    # The floor at the 75th percentile acted on about a quarter of the persona positions (they change as the
    # response does), and the table shows it.
    assert "(floor " in res.table() and "L1 " in res.table()


def test_a_cap_reads_its_percentile_from_a_mining_run(tiny_model_dir, tied_sae_dir, inputs, tiny_corpus_jsonl,
                                                      tmp_path):
    """percentiles_from: the threshold is the corpus's percentile, stored by a mining run's directions readout at the
    layer the cap acts on (raw projection units); a layer the run did not mine is refused in one line."""
    directions = _write_directions(tmp_path / "dirs.npy")
    mined = personamine.mine(model=str(tiny_model_dir), directions=str(directions), direction_names=["L1/x"],
                             corpus=str(tiny_corpus_jsonl), ctx_len=16, output=str(tmp_path / "m.h5"),
                             progress=False, center_directions=True)
    want = personamine.read_results(mined).direction_percentiles()["L1/x"]
    path = personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path, ablate=False, clamp=[],
                                            alphas=[], directions=str(directions), interventions=["cap:[L1/x]=p90"],
                                            percentiles_from=str(mined), ppl_corpus=""))
    res = personamine.read_steering(path)
    (row,) = np.nonzero(res.direction_intervention == 1)[0]
    assert res.direction_value[row] == pytest.approx(want[90], rel=1e-9)
    with pytest.raises(personamine.PersonamineError, match="holds no directions mined at layer 2"):
        personamine.steer(**steer_kwargs(tiny_model_dir, tied_sae_dir, inputs, tmp_path / "x", ablate=False,
                                         clamp=[], alphas=[], directions=str(directions),
                                         interventions=["cap:[L2/x]=p90"], percentiles_from=str(mined),
                                         ppl_corpus=""))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args, message", [
    (["--interventions", "cap:[axis]@1=p101"], "percentile 'p101' is outside 0-100"),
    (["--interventions", "cap:[axis]@1=p-1"], "percentile 'p-1' is outside 0-100"),
    (["--interventions", "add:[axis]@2:9=1", "--directions", "DIRS"], "layer 4 is out of range"),
    (["--interventions", "add:[axis]@1=1", "--directions", "WIDE"], "is 65 wide, but the model's residual stream"),
    (["--interventions", "add:[nope]@1=1", "--directions", "DIRS"], "has no direction 'nope'"),
    (["--interventions", "add:[L{layer}/x]@3:5=1", "--directions", "DIRS"], "has no direction 'L4/x'"),
    (["--interventions", "add:[axis]@1=1"], "names a direction: give directions"),
    (["--interventions", "cap:[L{layer}/x]=p5"], "stands for a direction per layer: give the layers"),
    (["--interventions", "cap:[axis]@1"], "cap needs a value"),
    (["--interventions", "push:[axis]@1=1"], "unknown kind 'push' for a direction"),
    (["--interventions", "add:[axis]@a:b=1"], "'@a:b' is not a layer or a range of layers"),
    (["--percentile-prompts", "roles"], "percentile_prompts must be one of persona, control, both"),
])
def test_bad_direction_input_is_one_line_and_writes_nothing(tiny_model_dir, tied_sae_dir, tmp_path, capsys, args,
                                                            message):
    dirs = _write_directions(tmp_path / "dirs.npy")
    wide = _write_directions(tmp_path / "wide.npy", width=65)
    args = [{"DIRS": str(dirs), "WIDE": str(wide)}.get(a, a) for a in args]
    out = tmp_path / "out" / "steer.h5"
    code = main(["steer", "--model", str(tiny_model_dir), "--sae", str(tied_sae_dir), "--features", "3",
                 "--output", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("personamine: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
