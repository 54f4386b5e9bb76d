"""The CLI is a thin layer: a TOML job plus flag overrides, and `show` on the written file."""

from __future__ import annotations

from fixtures import SAE_LAYER

import personamine
from personamine.jobs.cli import main


def test_toml_job_with_flag_override_and_show(tiny_model_dir, tiny_sae_repo, tiny_corpus_jsonl, tmp_path, capsys):
    job = tmp_path / "job.toml"
    out = tmp_path / "mine.h5"
    job.write_text(
        f'model = "{tiny_model_dir}"\nlayer = {SAE_LAYER}\nsae = "{tiny_sae_repo}"\ncorpus = "{tiny_corpus_jsonl}"\n'
        f'features = [3, 9, 27]\nctx_len = 16\ntop_k = 4\noutput = "{tmp_path / "ignored.h5"}"\nprogress = false\n'
    )
    assert main(["mine", str(job), "--output", str(out), "--top-k", "2"]) == 0
    res = personamine.read_results(out)
    assert res.feature_ids.tolist() == [3, 9, 27] and res.score.shape == (3, 2)
    assert res.config["top_k"] == 2
    capsys.readouterr()
    assert main(["show", str(out), "--features", "9", "--examples", "2"]) == 0
    text = capsys.readouterr().out
    assert "feature 9:" in text and "#1 score" in text and "«" in text
    assert "feature 3:" not in text and "1 features shown" in text
    assert main(["show", str(out), "--features", "4"]) == 2  # not in the file: a clear error, not a traceback
    assert "feature 4 is not in" in capsys.readouterr().err


def test_features_flag_accepts_ranges_and_all(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    base = ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--corpus", str(tiny_corpus_jsonl), "--ctx-len", "16", "--max-documents", "4", "--no-progress"]
    assert main(base + ["--features", "4-7,9", "--output", str(tmp_path / "a.h5")]) == 0
    assert personamine.read_results(tmp_path / "a.h5").feature_ids.tolist() == [4, 5, 6, 7, 9]
    assert main(base + ["--features", "all", "--output", str(tmp_path / "b.h5")]) == 0
    assert personamine.read_results(tmp_path / "b.h5").feature_ids.size == 256
