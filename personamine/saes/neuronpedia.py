"""Neuronpedia pages of SAEs it hosts: ``https://www.neuronpedia.org/{model}/{sae set}/{feature}``.

The ids for the releases below are SAELens's pretrained directory's ``neuronpedia`` entries (sae-lens 6.54): the
andyrdt releases have dashboards for trainer 1 (k = 64) only. With sae-lens installed, a release's own entry is
used instead (see ``locate.saelens_release``).
"""

from __future__ import annotations

BASE_URL = "https://www.neuronpedia.org"

# repo -> (id pattern with {layer}, trainers that have pages (None: any))
_HOSTED = {
    "andyrdt/saes-llama-3.1-8b-instruct": ("llama3.1-8b-it/{layer}-resid-post-aa", {1}),
    "andyrdt/saes-qwen2.5-7b-instruct": ("qwen2.5-7b-it/{layer}-resid-post-aa", {1}),
    "Goodfire/Llama-3.1-8B-Instruct-SAE-l19": ("llama3.1-8b-it/19-resid-post-gf", None),
}


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
