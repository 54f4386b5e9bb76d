"""Non-finite numbers are never silent: SAE weights are checked finite as their rows are read, activations while
mining, discovering and steering (one reduction per encoded block), and a pre-flight whose variance explained is
NaN is a failure. Each case: one ``personamine: error:`` line naming where, exit 2, no output and no work dir."""

from __future__ import annotations

import math
import re
import shutil

import numpy as np
import pytest
import torch
from fixtures import SAE_LAYER, sae_file

import personamine
from personamine.jobs.cli import main
from personamine.saes import PreflightResult


def broken_sae(src, dst, change):
    """A copy of the release at ``src`` whose state dict ``change`` edits in place."""
    shutil.copytree(src, dst)
    path = sae_file(dst)
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return dst


def set_row(feature, value, column=slice(None)):
    def change(state):
        state["encoder.weight"][feature, column] = value
    return change


@pytest.fixture()
def run_mine(tiny_model_dir, tiny_corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "out.h5"

    def run(sae, *extra, features="1,2,3"):
        argv = ["mine", "--no-progress", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                str(sae), "--corpus", str(tiny_corpus_jsonl), "--features", features, "--ctx-len", "16",
                "--output", str(out), *extra]
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.err.strip().splitlines()

    run.out = out
    return run


def assert_one_line(code, err, *fragments):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("personamine: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]


def assert_nothing_left(out):
    assert not out.exists()
    assert not list(out.parent.glob("*.h5*tmp*"))
    assert not (out.parent / (out.name + ".work")).exists()


@pytest.fixture(scope="module")
def overflowing_sae(tiny_sae_dir, tmp_path_factory):
    """Every weight finite, but feature 2's pre-activation overflows float32 on most tokens (inf): what an fp16 or
    bf16 overflow does to a healthy SAE."""
    def change(state):
        state["encoder.weight"][2] = 1e38
        state["encoder.bias"][2] = 3e38
    return broken_sae(tiny_sae_dir, tmp_path_factory.mktemp("overflow") / "sae", change)


def test_nan_in_a_mined_encoder_row_is_refused_when_loaded(run_mine, tiny_sae_dir, tmp_path):
    sae = broken_sae(tiny_sae_dir, tmp_path / "sae", set_row(2, math.nan, 5))
    code, err = run_mine(sae)
    assert_one_line(code, err, "the encoder row of feature 2 holds nan (1 of 64 values non-finite)")
    assert_nothing_left(run_mine.out)


def test_only_the_rows_read_are_checked(run_mine, tiny_sae_dir, tmp_path):
    """A targeted run without the pre-flight reads only its features' rows: a NaN elsewhere is never read, so the
    run is right; the pre-flight reads every row, and names the broken one."""
    sae = broken_sae(tiny_sae_dir, tmp_path / "sae", set_row(200, math.inf, 7))
    code, err = run_mine(sae)
    assert_one_line(code, err, "the encoder row of feature 200 holds inf")
    assert_nothing_left(run_mine.out)
    code, err = run_mine(sae, "--preflight-tokens", "0")
    assert code == 0, err
    assert personamine.read_results(run_mine.out).feature_ids.tolist() == [1, 2, 3]


@pytest.mark.parametrize("tensor, index, message", [
    ("b_dec", 3, "the decoder bias holds nan (1 of 64 values non-finite)"),
    ("encoder.bias", 17, "the encoder bias of feature 17 holds -inf (1 of 256 values non-finite)"),
    ("threshold", (), "the threshold holds nan"),
    ("decoder.weight", (5, 9), "the decoder row of feature 9 holds nan"),
])
def test_non_finite_vectors_and_decoder_rows_are_refused(run_mine, tiny_sae_dir, tmp_path, tensor, index, message):
    def change(state):
        state[tensor][index] = -math.inf if tensor == "encoder.bias" else math.nan
    sae = broken_sae(tiny_sae_dir, tmp_path / "sae", change)
    code, err = run_mine(sae, "--features", "1,2,9")
    assert_one_line(code, err, message)
    assert_nothing_left(run_mine.out)


def test_a_non_finite_preflight_is_a_failure(run_mine, overflowing_sae):
    assert not PreflightResult(fve=math.nan, l0=1.0, n_tokens=4096).passed  # NaN compares false: never a pass
    assert not PreflightResult(fve=-math.inf, l0=1.0, n_tokens=4096, min_fve=-math.inf).passed
    code, err = run_mine(overflowing_sae)
    assert_one_line(code, err, "explains -inf% of the variance at layer 2", "which is not a number")
    assert_nothing_left(run_mine.out)


def test_a_non_finite_activation_stops_mining_naming_feature_document_and_token(run_mine, overflowing_sae,
                                                                                tiny_model_dir, tiny_corpus_jsonl):
    import json
    import re

    from transformers import AutoTokenizer

    code, err = run_mine(overflowing_sae, "--preflight-tokens", "0")
    assert_one_line(code, err, f"feature 2 is inf at layer {SAE_LAYER} on corpus file",
                    "Pass allow_nonfinite (--allow-nonfinite)")
    found = re.search(r"unit 0 row (\d+), token (\d+) \('([^']*)', id (\d+)\)", err[0])
    assert found, err[0]
    row, token, text, token_id = int(found[1]), int(found[2]), found[3], int(found[4])
    # The named token is where it says: that row of the corpus, tokenized as mining does, has it at that index.
    document = json.loads(tiny_corpus_jsonl.read_text().splitlines()[row])["text"]
    ids = AutoTokenizer.from_pretrained(tiny_model_dir)(document, add_special_tokens=False)["input_ids"]
    assert ids[token] == token_id
    assert AutoTokenizer.from_pretrained(tiny_model_dir).decode([token_id]) == text
    assert_nothing_left(run_mine.out)  # the work dir held no checkpoint: removed, so the fixed rerun starts afresh


def test_allow_nonfinite_reads_them_as_zero_and_counts_them(run_mine, overflowing_sae):
    code, err = run_mine(overflowing_sae, "--preflight-tokens", "0", "--allow-nonfinite")
    assert code == 0, err
    assert any(re.search(r"warning: [0-9,]+ activations were NaN or infinite and were read as 0", line)
               for line in err), err
    res = personamine.read_results(run_mine.out)
    assert res.attrs["activations_nonfinite"] > 0
    assert np.isfinite(res.score).all() and np.isfinite(res.max).all()


def test_discover_names_the_prompt_and_token(tiny_model_dir, overflowing_sae, tmp_path):
    from personamine.errors import PersonamineError

    with pytest.raises(PersonamineError, match=r"^feature 2 is inf on prompt '.*', token \d+ \('.*'\); "):
        personamine.discover(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(overflowing_sae),
                             output=str(tmp_path / "d.h5"), progress=False, preflight=False,
                             position="prompt-mean")  # every token: most overflow
    assert not (tmp_path / "d.h5").exists()


def test_steer_stops_on_a_non_finite_activation(tiny_model_dir, overflowing_sae, tmp_path, capsys):
    out = tmp_path / "out" / "steer.h5"
    code = main(["steer", "--model", str(tiny_model_dir), "--sae", str(overflowing_sae), "--features", "2",
                 "--n-prompts", "2", "--ppl-corpus", "", "--max-new-tokens", "2", "--output", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert_one_line(code, err, "feature 2 is inf on a residual at the SAE's layer")
    assert not out.exists()
