"""Each bad input: a clear one-line error, a non-zero exit, and no output file."""

from __future__ import annotations

import json

import pytest
from fixtures import SAE_LAYER, TINY_NUM_LAYERS, make_sae_release

from personamine.jobs.cli import main


@pytest.fixture()
def run_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "out.h5"

    def run(**changes):
        args = {"model": str(tiny_model_dir), "layer": str(SAE_LAYER), "sae": str(tiny_sae_dir),
                "corpus": str(tiny_corpus_jsonl), "features": "1,2,3", "ctx-len": "16", "output": str(out)}
        args.update({k: str(v) for k, v in changes.items()})
        argv = ["mine", "--no-progress"] + [x for k, v in args.items() for x in (f"--{k}", v)]
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        return code, err

    run.out = out
    return run


def assert_clean_failure(run, fragment, **changes):
    code, err = run(**changes)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("personamine: error: "), err
    assert fragment in err[0], err[0]
    assert not run.out.exists()
    assert not list(run.out.parent.glob("*.h5*tmp*"))


def test_layer_out_of_range(run_cli):
    assert_clean_failure(run_cli, f"layer {TINY_NUM_LAYERS} is out of range", layer=TINY_NUM_LAYERS)
    assert_clean_failure(run_cli, "layer -1 is out of range", layer=-1)


def test_sae_width_mismatch(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "wide", layer=SAE_LAYER, activation_dim=32, dict_size=64, k=4,
                           threshold=0.1, seed=0)
    assert_clean_failure(run_cli, "has width 32, but the model's hidden size is 64", sae=sae)


def test_sae_trained_on_another_layer(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "l1", layer=1, activation_dim=64, dict_size=64, k=4, threshold=0.1, seed=0)
    assert_clean_failure(run_cli, "was trained on resid_post_layer_1 (the output of decoder layer 1", sae=sae)


def test_uncalibrated_sae(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "raw", layer=SAE_LAYER, activation_dim=64, dict_size=64, k=4,
                           threshold=-1.0, seed=0)
    assert_clean_failure(run_cli, "never calibrated", sae=sae)


def test_feature_out_of_range(run_cli):
    assert_clean_failure(run_cli, "feature id 256 is out of range: the SAE has 256 features", features="3,256")


def test_empty_corpus(run_cli, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = run_cli(corpus=empty)
    assert code == 2 and len(err) == 1 and not run_cli.out.exists()
    assert "empty" in err[0] or "cannot read corpus" in err[0]


def test_missing_text_column(run_cli, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": f"hello {i}"}) for i in range(3)))
    assert_clean_failure(run_cli, "no text column 'text' (columns: body)", corpus=corpus)


@pytest.mark.parametrize("what", ["model", "sae", "corpus"])
def test_unreadable_paths(run_cli, tmp_path, what):
    assert_clean_failure(run_cli, "does not exist", **{what: tmp_path / "nope" / "missing"})


def test_unreadable_file(run_cli, tmp_path):
    bad = tmp_path / "ae.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_clean_failure(run_cli, "cannot read SAE file", sae=bad)
