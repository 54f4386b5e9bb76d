"""EleutherAI sparsify: ``layers.N/{cfg.json, sae.safetensors}`` (eai-sparsify 1.3 ``SparseCoder``).

cfg: ``activation`` (topk | groupmax), ``num_latents`` (0: ``d_in * expansion_factor``), ``k``, ``d_in``,
``transcode``, ``skip_connection``. Tensors ``encoder.weight [M, d]``, ``encoder.bias``, ``W_dec [M, d]``,
``b_dec``. Encode (``SparseCoder.encode`` / ``fused_encoder``): ``topk(relu(linear(x - b_dec)), k)`` per token,
so a subset of features needs the exact top-k mode. The hookpoint is the folder name: ``layers.N`` is the output
of ``model.layers[N]``. Transcoders, skip connections and groupmax are refused.
"""

from __future__ import annotations

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import parse_hook
from personamine.saes.locate import Folder
from personamine.saes.tensors import open_safetensors, tensor_shapes

NAME = "sparsify"
CONFIG = "cfg.json"
WEIGHTS = "sae.safetensors"


def is_sparsify_config(cfg: dict) -> bool:
    return "num_latents" in cfg or "expansion_factor" in cfg


def detect(folder: Folder, fetch_weights: bool) -> bool:
    cfg = folder.json(CONFIG) if folder.on_hub or folder.path(CONFIG) else None
    return cfg is not None and is_sparsify_config(cfg) and (folder.on_hub or folder.path(WEIGHTS) is not None)


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    cfg = folder.json(CONFIG) or {}
    if cfg.get("transcode"):
        raise PersonamineError(f"SAE {folder.label} is a sparsify transcoder (it predicts a module's output from its "
                               "input), not an SAE of the residual stream")
    if cfg.get("skip_connection"):
        raise PersonamineError(f"SAE {folder.label} has a skip connection, which personamine does not decode")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise PersonamineError(f"SAE {folder.label} uses sparsify's {activation!r} activation; personamine encodes "
                               "topk")
    d_in = cfg.get("d_in")
    d_sae = cfg.get("num_latents") or (d_in * cfg["expansion_factor"] if d_in and cfg.get("expansion_factor")
                                       else None)
    if not folder.on_hub:
        shapes = tensor_shapes(folder.require(WEIGHTS, "the sparsify weights"))
        if len(shapes.get("encoder.weight", ())) == 2:
            d_sae, d_in = shapes["encoder.weight"]
    hook = parse_hook(folder.name, "the hookpoint folder's name")
    notes = [] if hook.layer is not None else [f"folder {folder.name!r} is not a layers.N hookpoint"]
    return SaeMeta(format=NAME, architecture="topk", source=folder.label, d_in=int(d_in) if d_in else None,
                   d_sae=int(d_sae) if d_sae else None, hook=hook if hook.layer is not None else None,
                   k=int(cfg["k"]) if cfg.get("k") else None, notes=notes)


def load(folder: Folder, meta: SaeMeta) -> Sae:
    state = open_safetensors(folder.require(WEIGHTS, "the sparsify weights"))
    require_tensors(state, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), f"SAE {folder.label} ({WEIGHTS})")
    if meta.k is None:
        raise PersonamineError(f"SAE {folder.label}: its {CONFIG} has no k")
    return Sae(meta, Rule("topk", subtract_b_dec=True, k=meta.k), encoder=Matrix(state["encoder.weight"], True),
               b_enc=state["encoder.bias"], decoder=Matrix(state["W_dec"], True), b_dec=state["b_dec"])
