"""What the browser serves from a path: a mining file as it is; the index of a run with several readouts as its SAE
readouts' files (directions are read in the report and show); bad paths get one line before the server starts."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import SAE_LAYER, TINY_HIDDEN_SIZE

import personamine
from personamine.errors import PersonamineError
from personamine.files.mine import readouts_of
from personamine.serve.sources import open_sources


def test_an_index_serves_its_sae_readouts(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).standard_normal((2, TINY_HIDDEN_SIZE)).astype(np.float32))
    common = dict(model=str(tiny_model_dir), corpus=str(tiny_corpus_jsonl), ctx_len=16, progress=False,
                  max_documents=10)
    index = personamine.mine(**common, layer=SAE_LAYER, sae=str(tiny_sae_dir), features=[1, 2, 3],
                             directions=str(tmp_path / "v.npy"), output=str(tmp_path / "both.h5"))
    files = readouts_of(index)
    sources = open_sources([index])
    assert [f.path for f in sources.files] == [files[f"L{SAE_LAYER}"]]
    assert sources.files[0].feature_ids.tolist() == [1, 2, 3]
    alone = personamine.mine(**common, directions=str(tmp_path / "v.npy"), direction_layer=SAE_LAYER,
                             output=str(tmp_path / "dirs.h5"))
    with pytest.raises(PersonamineError, match="directions readouts only"):
        # a directions-only run writes a single file, which is served as it is: refused as holding no SAE features
        open_sources([write_index_of(alone, tmp_path)])
    with pytest.raises(PersonamineError, match="no mining file"):
        open_sources([tmp_path / "missing.h5"])


def write_index_of(path, tmp_path):
    """An index naming one directions file (what a run of several directions readouts writes)."""
    from personamine.files.mine import write_index

    return write_index(tmp_path / "dirs-index.h5", {"directions-L2": path.name}, {})
