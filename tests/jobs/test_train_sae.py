"""train-sae on the tiny model: the release loads through the library and our resolver, has a calibrated threshold,
takes raw activations, beats a random SAE; its capture follows mining's token rules; the faster trainer step
equals the library's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, TINY_HIDDEN_SIZE, build_batchtopk_sae, calibrate_sae, sae_file

import personamine
from personamine.config import TrainSaeConfig
from personamine.errors import PersonamineError
from personamine.jobs.cli import main
from personamine.jobs.train_sae import _trainer_class, capture_activations, evaluate_sae, split_held_out
from personamine.saes import read_sae_meta
from personamine.saes.base import check_meta

TRAIN = dict(layer=SAE_LAYER, dict_size=256, k=8, steps=300, batch_size=256, ctx_len=32, max_tokens=20_000)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_corpus_jsonl, tmp_path_factory):
    """One CLI training run shared by the tests below (it is the slow part)."""
    out = tmp_path_factory.mktemp("trained") / "sae"
    args = ["train-sae", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_jsonl), "--output", str(out),
            "--no-progress"]
    for key, value in TRAIN.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    assert main(args) == 0
    return out


def test_release_loads_with_a_calibrated_threshold(trained, tiny_model_dir, capsys):
    from dictionary_learning.trainers import BatchTopKSAE

    ae_path = sae_file(trained)
    config_path = ae_path.with_name("config.json")
    sae = BatchTopKSAE.from_pretrained(str(ae_path))
    assert float(sae.threshold) > 0 and int(sae.k) == 8 and sae.dict_size == 256
    info = read_sae_meta(str(trained), layer=SAE_LAYER)
    assert info.layer == SAE_LAYER and info.d_in == TINY_HIDDEN_SIZE and info.k == 8 and info.trainer == 0
    assert info.threshold == float(sae.threshold)
    check_meta(info, hidden_size=TINY_HIDDEN_SIZE)  # no error: calibrated, right width
    config = json.loads(config_path.read_text())
    assert config["trainer"]["trainer_class"] == "BatchTopKTrainer" and config["trainer"]["steps"] == 300
    assert config["trainer"]["submodule_name"] == f"resid_post_layer_{SAE_LAYER}"


def test_beats_a_random_sae_on_held_out_raw_activations(trained, tiny_model_dir, tiny_corpus_jsonl):
    from dictionary_learning.trainers import BatchTopKSAE

    cfg = TrainSaeConfig(model=str(tiny_model_dir), corpus=str(tiny_corpus_jsonl), **TRAIN)
    train, held = split_held_out(capture_activations(cfg), cfg.held_out, cfg.seed)
    assert held.shape[0] > 100
    ae_path = sae_file(trained)
    config_path = ae_path.with_name("config.json")
    saved = json.loads(config_path.read_text())["personamine"]
    # The saved SAE takes RAW activations: the normalisation used in training was folded back into it.
    trained_q = evaluate_sae(BatchTopKSAE.from_pretrained(str(ae_path)), held)
    assert abs(trained_q.variance_explained - saved["held_out_quality"]["variance_explained"]) < 1e-6
    assert saved["n_train_tokens"] == train.shape[0]
    # A random SAE of the same size with every advantage we can give it: centred on the data, threshold
    # calibrated to the same sparsity.
    random_sae = build_batchtopk_sae(TINY_HIDDEN_SIZE, 256, 8, threshold=-1.0, seed=3)
    calibrate_sae(random_sae, train, active_fraction=trained_q.l0 / 256)
    random_q = evaluate_sae(random_sae, held)
    assert trained_q.variance_explained > 0.5
    assert trained_q.variance_explained > random_q.variance_explained + 0.3
    assert 0 < trained_q.l0 < 4 * 8


def test_capture_follows_the_mining_token_rules(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    # A tight norm filter makes the outlier rule bite; the counts must equal what mining reports.
    cfg = TrainSaeConfig(model=str(tiny_model_dir), layer=SAE_LAYER, corpus=str(tiny_corpus_jsonl), ctx_len=16,
                         norm_filter=1.05, max_tokens=10**9, batch_tokens=96)
    acts = capture_activations(cfg)
    mined = personamine.read_results(personamine.mine(
        model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(tiny_corpus_jsonl),
        features=[0, 1], ctx_len=16, norm_filter=1.05, n_shards=3, output=str(tmp_path / "m.h5"), progress=False))
    for key in ("tokens_scored", "tokens_norm_filtered", "tokens_special", "n_windows", "rows_skipped", "tokens_fed"):
        assert acts.counters[key] == mined.counters[key], key
    assert acts.counters["tokens_norm_filtered"] > 0
    assert acts.x.shape[0] == mined.tokens_scored
    # Every row is a scored token's residual: the two features' activation totals agree with mining's stats.
    from personamine.saes import load_sae

    ae = sae_file(tiny_sae_dir)
    codes = load_sae(str(ae)).encoder(np.array([0, 1]), device=torch.device("cpu")).encode(acts.x).double()
    np.testing.assert_allclose(codes.sum(0).numpy(), mined.activation_sum, rtol=1e-5)
    np.testing.assert_array_equal((codes > 0).sum(0).numpy(), mined.active_tokens)
    # Skipping documents skips exactly their tokens.
    later = capture_activations(TrainSaeConfig(**{**cfg.to_dict(), "skip_documents": 30}))
    assert later.document.min() >= 30 and later.counters["n_documents"] == 62 - 30


def test_trainer_step_equals_the_librarys(tiny_model_dir):
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer

    torch.manual_seed(0)
    data = torch.randn(6, 128, 32) * 3 + 1
    kwargs = dict(steps=6, activation_dim=32, dict_size=64, k=4, layer=0, lm_name="x", warmup_steps=1,
                  threshold_start_step=2, seed=5, device="cpu")
    theirs, ours = BatchTopKTrainer(**kwargs), _trainer_class()(**kwargs)
    for step, x in enumerate(data):
        assert ours.update(step, x) == pytest.approx(theirs.update(step, x), rel=1e-4)
    for (name, a), (_, b) in zip(theirs.ae.state_dict().items(), ours.ae.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    assert float(ours.ae.threshold) > 0


@pytest.mark.parametrize("bad, message", [
    (dict(steps=10, threshold_start_step=9), "never calibrated"),
    (dict(k=300, dict_size=256), "cannot exceed"),
    (dict(held_out=0.0), "held_out"),
    (dict(steps=10, warmup_steps=10, threshold_start_step=2), "warmup_steps"),
])
def test_bad_training_config(bad, message):
    with pytest.raises(PersonamineError, match=message):
        TrainSaeConfig(**bad)


def test_cli_rejects_bad_config_and_writes_nothing(tiny_model_dir, tiny_corpus_jsonl, tmp_path, capsys):
    code = main(["train-sae", "--model", str(tiny_model_dir), "--layer", "7", "--corpus", str(tiny_corpus_jsonl),
                 "--output", str(tmp_path / "sae"), "--no-progress"])
    assert code == 2
    assert "layer 7 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "sae").exists()


BLOCKED_IMPORT = """
import importlib.abc, sys

class Missing(importlib.abc.MetaPathFinder):
    # As if these packages were not installed.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from personamine.jobs.cli import main
code = main({argv})
assert "nnsight" not in sys.modules and "wandb" not in sys.modules
sys.exit(code)
"""


@pytest.mark.parametrize("blocked", [("nnsight",), ("dictionary_learning",)])
def test_train_sae_with_dictionary_learning_installed_without_its_dependencies(tiny_model_dir, tiny_corpus_jsonl,
                                                                               tmp_path, blocked):
    """`pip install --no-deps dictionary-learning` (README "Install"): its package __init__ imports nnsight, which
    is not there; training still works. Without the package at all: one line that says what to install."""
    import subprocess
    import sys

    from fixtures import user_env

    out = tmp_path / "sae"
    argv = ["train-sae", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--corpus",
            str(tiny_corpus_jsonl), "--max-tokens", "3000", "--dict-size", "64", "--k", "4", "--steps", "20",
            "--batch-size", "128", "--output", str(out), "--no-progress"]
    run = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT.format(blocked=set(blocked), argv=argv)],
                         capture_output=True, text=True, env=user_env(), timeout=300)
    if blocked == ("dictionary_learning",):
        assert run.returncode == 2 and not out.exists()
        assert run.stderr == ("personamine: error: train-sae needs dictionary-learning: pip install einops && pip "
                              "install --no-deps dictionary-learning==0.1.0\n")
    else:
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[-1] == f"wrote {out} (use it as --sae {out} --layer {SAE_LAYER})"
        assert read_sae_meta(str(out), layer=SAE_LAYER).threshold > 0
