"""One discovery run, called directly: the layer taken from the SAE and saved in the config, the provenance the file
records, controls never read when switched off, and the refusals that leave nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import SAE_LAYER

from personamine.config import DiscoverConfig
from personamine.discovery.run import run_discovery
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery
from personamine.version import __version__

PERSONA = ["Who are you?", "How do you feel today?", "What do you think about yourself?"]
CONTROL = ["Who was Ada Lovelace?", "How does a cat feel today?", "What does a bat think about the sea?"]


def lines(path, texts):
    path.write_text("\n".join(texts) + "\n")
    return str(path)


def test_a_run_records_what_it_ran(tiny_model_dir, tiny_sae_dir, tmp_path):
    cfg = DiscoverConfig(model=str(tiny_model_dir), sae=str(tiny_sae_dir), prompts=lines(tmp_path / "p.txt", PERSONA),
                         controls=lines(tmp_path / "c.txt", CONTROL), top=4, preflight=False, progress=False,
                         output=str(tmp_path / "out" / "d.h5"))
    assert cfg.layer is None  # the SAE says which layer it reads
    path = run_discovery(cfg)
    found = read_discovery(path)
    assert path == tmp_path / "out" / "d.h5" and found.attrs["layer"] == SAE_LAYER
    assert found.config == {**cfg.to_dict(), "layer": SAE_LAYER}
    assert found.attrs["personamine_version"] == __version__ and found.attrs["controls"]
    assert found.attrs["position"] == "last" and found.attrs["sae_format"] == "dictionary_learning"
    assert "preflight_fve" not in found.attrs  # switched off
    assert found.persona_text == PERSONA and found.control_text == CONTROL
    assert found.persona_acts.shape == (3, 4) and found.control_acts.shape == (3, 4)
    np.testing.assert_allclose(found.persona_acts.mean(0) - found.control_acts.mean(0), found.score[:4], rtol=1e-5,
                               atol=1e-6)


def test_without_controls_the_controls_are_never_read(tiny_model_dir, tiny_sae_dir, tmp_path):
    cfg = DiscoverConfig(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                         prompts=lines(tmp_path / "p.txt", PERSONA), controls=str(tmp_path / "absent.txt"),
                         control=False, top=2, preflight=False, progress=False, output=str(tmp_path / "d.h5"))
    found = read_discovery(run_discovery(cfg))
    assert found.control_text == [] and found.control_acts.shape == (0, 2) and not found.attrs["controls"]
    np.testing.assert_allclose(found.score, found.persona_mean)


def test_prompts_that_equal_their_controls_discover_nothing(tiny_model_dir, tiny_sae_dir, tmp_path):
    same = lines(tmp_path / "same.txt", PERSONA)
    cfg = DiscoverConfig(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), prompts=same,
                         controls=same, preflight=False, progress=False, output=str(tmp_path / "d.h5"), n_boot=100)
    found = read_discovery(run_discovery(cfg))
    assert (found.score == 0).all() and not found.discoveries().any() and (found.ranking.support == 0).all()
    assert found.directions[(SAE_LAYER, "last")].norm == 0


def test_an_output_that_cannot_be_written_fails_before_the_model_loads(tmp_path):
    (tmp_path / "taken").mkdir()
    # The model and SAE do not exist: the output is checked first, so the error is about it.
    cfg = DiscoverConfig(model=str(tmp_path / "no-model"), sae=str(tmp_path / "no-sae"), output=str(tmp_path / "taken"),
                         progress=False)
    with pytest.raises(PersonamineError) as info:
        run_discovery(cfg)
    assert str(info.value) == f"output {str(tmp_path / 'taken')!r} is a directory: give a file path"
    json.dumps(cfg.to_dict())  # the config is plain data, as the file stores it
