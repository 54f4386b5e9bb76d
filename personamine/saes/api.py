"""The SAE functions ``personamine.saes`` exports (see its docstring for the contract)."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from personamine.model.loading import check_layer
from personamine.saes import dictionary_learning, gemma_scope, goodfire, llama_scope, saelens, sparsify
from personamine.saes.base import Sae, SaeMeta, check_meta
from personamine.saes.hooks import check_hook, resolve_layer
from personamine.saes.locate import Folder, SaeSpec, folders_for, unknown_layout
from personamine.saes.neuronpedia import feature_url

LOADERS = {m.NAME: m for m in (dictionary_learning, saelens, sparsify, llama_scope, gemma_scope, goodfire)}
_EXPECTED = ("ae.pt (+ config.json) [dictionary_learning], cfg.json + sae_weights.safetensors [saelens], "
             "cfg.json + sae.safetensors [sparsify], hyperparams.json + checkpoints/final.safetensors [llama_scope], "
             "params.npz or params.safetensors (+ config.json) [gemma_scope], one .pth [goodfire]; a release root "
             "needs layer (resid_post_layer_L/trainer_T, layers.L) or sae_id")


def sae_spec(config: Any) -> SaeSpec:
    """The SAE a run config names (``MineConfig`` or ``DiscoverConfig`` fields)."""
    return SaeSpec(sae=config.sae, sae_id=getattr(config, "sae_id", None), trainer=config.sae_trainer,
                   layer=config.layer, format=getattr(config, "sae_format", "auto"))


def _as_spec(spec: SaeSpec | str, fields: dict) -> SaeSpec:
    return SaeSpec(sae=spec, **fields) if isinstance(spec, str) else spec


def locate(spec: SaeSpec) -> tuple[Folder, Any, str | None]:
    """(folder, loader module, Neuronpedia id from a SAELens release) of the first layout that matches."""
    folders, fmt, neuronpedia = folders_for(spec)
    loaders = [LOADERS[fmt]] if fmt != "auto" else list(LOADERS.values())
    # Config-bearing layouts first; then those whose only file is the weights (fetched from a hub to look).
    for fetch_weights in (False, True):
        for folder in folders:
            for loader in loaders:
                if loader.detect(folder, fetch_weights):
                    return folder, loader, neuronpedia
    expected = _EXPECTED if fmt == "auto" else f"the {fmt} layout"
    raise unknown_layout(folders[0], expected)


def read_sae_meta(spec: SaeSpec | str, **fields: Any) -> SaeMeta:
    """The SAE's metadata without loading its weights (see the module docstring for what each format reads)."""
    folder, loader, neuronpedia = locate(_as_spec(spec, fields))
    meta = loader.read_meta(folder, folder.repo)
    if neuronpedia:
        meta.neuronpedia = neuronpedia
    return meta


def load_sae(spec: SaeSpec | str, **fields: Any) -> Sae:
    """The SAE with its tensors memory-mapped."""
    folder, loader, neuronpedia = locate(_as_spec(spec, fields))
    meta = loader.read_meta(folder, folder.repo)
    if neuronpedia:
        meta.neuronpedia = neuronpedia
    return loader.load(folder, meta)


def prepare_sae(spec: SaeSpec, *, hidden_size: int, num_layers: int, model: str = "",
                allow_uncalibrated: bool = False, announce: bool = False) -> tuple[SaeMeta, int]:
    """The driver's checks, from metadata only: (meta, the decoder layer the run captures).

    The layer is ``spec.layer`` or, when that is None, the one the SAE declares; a declared hook that is not the
    output of that layer is an error naming both; an SAE that declares none is used with a warning.
    """
    if spec.layer is not None:
        check_layer(spec.layer, num_layers, model)
    meta = read_sae_meta(spec)
    layer = resolve_layer(spec.layer, meta.hook, meta.source)
    check_layer(layer, num_layers, model)
    check_meta(meta, hidden_size=hidden_size, allow_uncalibrated=allow_uncalibrated)
    layer_notes = [n for n in meta.notes if "layer" in n]
    check_hook(meta.hook, layer, meta.source, "; ".join(layer_notes))
    for note in meta.notes:
        if note not in layer_notes:
            warnings.warn(f"SAE {meta.source}: {note}", UserWarning, stacklevel=2)
    if announce:
        print(f"personamine: {meta.describe()}", file=sys.stderr)
    return meta, layer


def load_checked(spec: SaeSpec, *, hidden_size: int, layer: int, allow_uncalibrated: bool = False) -> Sae:
    """An actor's load: the SAE, with the checks the driver could not make without its weights."""
    sae = load_sae(spec)
    check_meta(sae.meta, hidden_size=hidden_size, allow_uncalibrated=allow_uncalibrated)
    if sae.hook is not None and sae.hook.layer is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the driver already warned about an undeclared layer
            check_hook(sae.hook, layer, sae.meta.source)
    return sae


def neuronpedia_url(meta: SaeMeta, feature: int) -> str | None:
    return feature_url(meta.neuronpedia, feature) if meta.neuronpedia else None

