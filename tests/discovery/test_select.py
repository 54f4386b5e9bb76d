"""Which features a run mines: the top N of a discovery file takes only positively scored ones by default."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import SAE_LAYER

import personamine
from personamine.discovery.select import positive_only_note, top_discovered
from personamine.errors import PersonamineError
from personamine.jobs.cli import main


def test_top_discovered_takes_positive_scores_unless_asked():
    ids, scores = np.array([7, 3, 9, 4, 1]), np.array([2.0, 0.5, -0.1, -0.3, -2.0])
    assert top_discovered(ids, scores, 4).tolist() == [7, 3]
    assert top_discovered(ids, scores, 4, positive_only=False).tolist() == [7, 3, 9, 4]
    assert top_discovered(ids, scores, 1).tolist() == [7]
    assert positive_only_note(2, 4, 5) == ("only 2 of the top 4 discovered features score above zero: taking those 2 "
                                           "(--no-positive-only, positive_only=False, takes the top 4 whatever their "
                                           "score)")
    assert positive_only_note(1, 1, 5) is None and positive_only_note(2, 9, 2) is None  # all there were
    with pytest.raises(PersonamineError, match="no feature of the discovery file scores above zero"):
        top_discovered(ids[2:], scores[2:], 3)


def test_mine_features_from_a_discovery_file(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, capsys):
    disc = personamine.discover(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                                output=str(tmp_path / "disc.h5"), progress=False)
    found = personamine.read_discovery(disc)
    top = int((found.score > 0).sum()) + 5
    assert found.feature_ids.size > top  # the tiny SAE ranks features below zero too
    taken = found.feature_ids[:top][found.score[:top] > 0]  # in rank order (the CI's lower bound)
    positive = taken.size
    base = ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--corpus", str(tiny_corpus_jsonl), "--ctx-len", "16", "--max-documents", "4", "--no-progress",
            "--features-from", str(disc), "--top", str(top)]
    assert main(base + ["--output", str(tmp_path / "pos.h5")]) == 0
    err = capsys.readouterr().err
    assert err == (f"personamine: warning: only {positive} of the top {top} discovered features score above zero: "
                   f"taking those {positive} (--no-positive-only, positive_only=False, takes the top {top} whatever "
                   "their score)\n")
    assert personamine.read_results(tmp_path / "pos.h5").feature_ids.tolist() == taken.tolist()
    assert main(base + ["--no-positive-only", "--output", str(tmp_path / "all.h5")]) == 0
    assert capsys.readouterr().err == ""
    assert personamine.read_results(tmp_path / "all.h5").feature_ids.tolist() == found.feature_ids[:top].tolist()
