"""Neuronpedia pages of SAEs it hosts: ``https://www.neuronpedia.org/{model}/{sae set}/{feature}``, and its names
for models and SAEs (an SAE id is ``{model}/{layer}-{source set}``, e.g. ``llama3.1-8b-it/15-resid-post-aa``).

The ids for the releases below are SAELens's pretrained directory's ``neuronpedia`` entries (sae-lens 6.54): the
andyrdt releases have dashboards for trainer 1 (k = 64) only. With sae-lens installed, a release's own entry is
used instead (see ``locate.saelens_release``).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

BASE_URL = "https://www.neuronpedia.org"

# repo -> (id pattern with {layer}, trainers that have pages (None: any))
_HOSTED = {
    "andyrdt/saes-llama-3.1-8b-instruct": ("llama3.1-8b-it/{layer}-resid-post-aa", {1}),
    "andyrdt/saes-qwen2.5-7b-instruct": ("qwen2.5-7b-it/{layer}-resid-post-aa", {1}),
    "Goodfire/Llama-3.1-8B-Instruct-SAE-l19": ("llama3.1-8b-it/19-resid-post-gf", None),
}

# Hub models whose Neuronpedia id is not simply their lowercased name (the models of the SAEs above).
_MODEL_IDS = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama3.1-8b-it",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama3.1-8b-it",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b-it",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # what a model id or source set may hold (ids are path parts)

# What ``personamine export neuronpedia`` writes by default (here, so that the CLI's help needs no heavy import).
# The creator SAEDashboard's export and Neuronpedia's bulk imports fall back to (its public data's account).
CREATOR_ID = "clkht01d40000jv08hvalcvly"
CREATOR_NAME = "personamine"
EXPORT_BATCH = 1024  # features per batch file, as in Neuronpedia's own exports
OWN_SOURCE_SET = "personamine"  # the source set of an SAE Neuronpedia does not host


def neuronpedia_id(repo: str | None, layer: int | None, trainer: int | None = None) -> str | None:
    """The Neuronpedia SAE id of a hub release's SAE, when Neuronpedia hosts it."""
    hosted = _HOSTED.get(repo or "")
    if hosted is None or layer is None:
        return None
    pattern, trainers = hosted
    if trainers is not None and trainer not in trainers:
        return None
    return pattern.format(layer=layer)


def feature_url(sae_id: str, feature: int) -> str:
    return f"{BASE_URL}/{sae_id}/{int(feature)}"


def model_id(model: str) -> str:
    """Neuronpedia's id of a model given as a hub id, a ``builtin:`` name or a local path: its own id where
    Neuronpedia hosts it under another name, else the last part of the name, lowercased, with any character an id
    cannot hold replaced by ``-``."""
    if model in _MODEL_IDS:
        return _MODEL_IDS[model]
    last = PurePosixPath(model.rstrip("/").split(":")[-1]).name.lower()
    return re.sub(r"[^a-z0-9._-]+", "-", last).strip("-._") or "model"


def split_sae_id(sae_id: str) -> tuple[str, str, str]:
    """(model, layer, source set) of a Neuronpedia SAE id ``{model}/{layer}-{source set}``."""
    model, _, source = sae_id.partition("/")
    layer, _, source_set = source.partition("-")
    if not (model and layer.isdigit() and source_set):
        raise ValueError(f"not a Neuronpedia SAE id: {sae_id!r}")
    return model, layer, source_set
