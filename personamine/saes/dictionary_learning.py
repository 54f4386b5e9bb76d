"""dictionary_learning: ``[resid_post_layer_L/trainer_T/]{ae.pt, config.json}`` (dictionary_learning 0.1.0).

- ``BatchTopKSAE`` (``encoder.weight [F, d]``, ``encoder.bias``, ``decoder.weight [d, F]``, ``b_dec``, ``k``, one
  scalar ``threshold``): inference encode ``r = relu(W (x - b_dec) + b); r * (r > threshold)``; elementwise.
- ``MatryoshkaBatchTopKSAE`` (``W_enc [d, F]``, ``b_enc``, ``W_dec [F, d]``, ``b_dec``, ``threshold``, ``k``,
  ``group_sizes``): the same rule (every group is active at inference).
- ``AutoEncoderTopK`` (BatchTopK's tensor names): per-token top-k of ``relu(W (x - b_dec) + b)``; not elementwise.

The layer is ``config.json``'s ``trainer.layer`` (and ``submodule_name``), else the release folder's name
``resid_post_layer_L``; an ``ae.pt`` with neither is used with a warning. The config names the class; without
one, the tensor names decide (``encoder.weight`` is taken for BatchTopK, with a warning).
"""

from __future__ import annotations

import re

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import RESID_POST, Hook, agreeing, parse_hook
from personamine.saes.locate import Folder
from personamine.saes.neuronpedia import neuronpedia_id
from personamine.saes.tensors import open_torch

NAME = "dictionary_learning"
WEIGHTS = "ae.pt"
CLASSES = {"BatchTopKSAE": "batchtopk", "MatryoshkaBatchTopKSAE": "matryoshka_batchtopk",
           "AutoEncoderTopK": "topk"}
_TRAINER = re.compile(r"^trainer_(\d+)$")
_LAYER_DIR = re.compile(r"resid_post_layer_(\d+)")


def weights_name(folder: Folder) -> str:
    return folder.file if folder.file and folder.file.endswith(".pt") else WEIGHTS


def detect(folder: Folder, fetch_weights: bool) -> bool:
    config = folder.json("config.json") if folder.on_hub or folder.path("config.json") else None
    if config is not None and isinstance(config.get("trainer"), dict):
        return True
    if folder.on_hub and not fetch_weights:
        return False
    return folder.path(weights_name(folder)) is not None


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    config = folder.json("config.json")
    trainer_cfg = (config or {}).get("trainer", {}) if isinstance((config or {}).get("trainer"), dict) else {}
    notes: list[str] = []
    state = None
    if not folder.on_hub or config is None:
        # Local files are memory-mapped (no data read); a hub ae.pt is fetched only when there is no config.
        state = open_torch(folder.require(weights_name(folder), "the dictionary_learning weights"))
    dict_class = trainer_cfg.get("dict_class")
    if dict_class is None:
        architecture = "matryoshka_batchtopk" if state is not None and "W_enc" in state else "batchtopk"
        notes.append(f"no config.json names its class: read as {architecture} from its tensor names")
    elif dict_class in CLASSES:
        architecture = CLASSES[dict_class]
    else:
        raise PersonamineError(f"SAE {folder.label} is a dictionary_learning {dict_class}; personamine reads "
                               f"{', '.join(CLASSES)}")
    # Up to three sources declare the layer; they must agree (hooks.agreeing), the first that names one is used.
    declared: list[Hook | None] = [None, None, None]
    if trainer_cfg.get("submodule_name"):
        declared[0] = parse_hook(str(trainer_cfg["submodule_name"]), "config.json trainer.submodule_name")
    if trainer_cfg.get("layer") is not None:
        try:
            value = int(trainer_cfg["layer"])
        except (TypeError, ValueError):
            raise PersonamineError(f"SAE {folder.label}: config.json trainer.layer is {trainer_cfg['layer']!r}, not "
                                   "a layer number") from None
        declared[1] = Hook(RESID_POST, value, f"resid_post_layer_{value}", "config.json trainer.layer", str(value))
    folders = _LAYER_DIR.findall(folder.path_text)
    if folders:  # the closest folder named for a layer
        declared[2] = parse_hook(f"resid_post_layer_{folders[-1]}", "the release folder's name")
    hook = agreeing(declared, folder.label)
    if hook is None:
        notes.append("no config.json beside it and no resid_post_layer_L folder: its layer is unknown")
    trainer_match = _TRAINER.match(folder.name)
    trainer = int(trainer_match.group(1)) if trainer_match else None
    d_in, d_sae, k, threshold = trainer_cfg.get("activation_dim"), trainer_cfg.get("dict_size"), \
        trainer_cfg.get("k"), None
    if state is not None:
        weight = state.get("encoder.weight")
        if weight is not None and weight.dim() == 2:
            d_sae, d_in = (int(s) for s in weight.shape)
        elif state.get("W_enc") is not None and state["W_enc"].dim() == 2:
            d_in, d_sae = (int(s) for s in state["W_enc"].shape)
        if "k" in state:
            k = int(state["k"])
        if "threshold" in state and state["threshold"].dim() == 0:
            threshold = float(state["threshold"].float())
    layer = hook.captured_layer if hook is not None else None
    return SaeMeta(format=NAME, architecture=architecture, source=folder.label,
                   d_in=int(d_in) if d_in is not None else None, d_sae=int(d_sae) if d_sae is not None else None,
                   hook=hook, k=int(k) if k is not None else None, threshold=threshold,
                   threshold_kind="scalar" if architecture != "topk" else "none", trainer=trainer,
                   neuronpedia=neuronpedia_id(repo, layer, trainer), notes=notes)


def load(folder: Folder, meta: SaeMeta) -> Sae:
    name = weights_name(folder)
    state = open_torch(folder.require(name, "the dictionary_learning weights"))
    what = f"SAE {folder.label} ({name})"
    if meta.architecture == "matryoshka_batchtopk":
        require_tensors(state, ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"), what)
        return Sae(meta, Rule("jumprelu", subtract_b_dec=True, k=meta.k), encoder=Matrix(state["W_enc"], False),
                   b_enc=state["b_enc"], decoder=Matrix(state["W_dec"], True), b_dec=state["b_dec"],
                   threshold=state["threshold"].float())
    topk = meta.architecture == "topk"
    require_tensors(state, ("encoder.weight", "encoder.bias", "decoder.weight", "b_dec")
                    + (("k",) if topk else ("threshold",)), what)
    k = int(state["k"]) if "k" in state else meta.k
    rule = Rule("topk" if topk else "jumprelu", subtract_b_dec=True, k=k)
    return Sae(meta, rule, encoder=Matrix(state["encoder.weight"], True), b_enc=state["encoder.bias"],
               decoder=Matrix(state["decoder.weight"], False), b_dec=state["b_dec"],
               threshold=None if topk else state["threshold"].float())
