"""Gemma Scope 1 and 2 (JumpReLU; read as SAELens's ``gemma_2`` / ``gemma_3`` loaders read them).

- Gemma Scope 1: ``layer_L/width_W/average_l0_N/params.npz``: ``W_enc [d, F]``, ``b_enc``, ``W_dec [F, d]``,
  ``b_dec``, ``threshold [F]``; no config (the repo name says ``-res`` / ``-mlp`` / ``-att``).
- Gemma Scope 2: ``params.safetensors`` (lower-case ``w_enc``, ``w_dec``) + ``config.json``
  (``architecture: jump_relu``, ``hf_hook_point_in`` such as ``model.layers.L.output``), folders named
  ``..._resid_post_...``.

Encode ``pre = x W_enc + b_enc`` (no decoder-bias subtraction), ``relu(pre) * (pre > threshold_f)``: elementwise.
The layer is ``hf_hook_point_in`` or the path's ``layer_L``; residual-stream SAEs are told by ``res`` /
``resid_post`` in the path.
"""

from __future__ import annotations

import re

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import Hook, parse_hook
from personamine.saes.locate import Folder
from personamine.saes.tensors import open_tensors, tensor_shapes

NAME = "gemma_scope"
FILES = ("params.safetensors", "params.npz")
_LAYER = re.compile(r"layer_(\d+)")
_NOT_RESIDUAL = re.compile(r"mlp|att|transcoder|clt|embedding")
_RESIDUAL = re.compile(r"-res\b|-res-|resid_post|/res/")


def weights_name(folder: Folder) -> str | None:
    if folder.file in FILES:
        return folder.file
    if folder.root is not None:
        return next((name for name in FILES if folder.path(name) is not None), None)
    return None


def detect(folder: Folder, fetch_weights: bool) -> bool:
    if folder.root is not None:
        return weights_name(folder) is not None
    config = folder.json("config.json")
    if config is not None and str(config.get("architecture", "")).replace("_", "") == "jumprelu":
        return True
    return fetch_weights and folder.path("params.npz") is not None


def _hub_weights(folder: Folder) -> str:
    return "params.safetensors" if folder.json("config.json") is not None else "params.npz"


def _hook(folder: Folder, config: dict | None) -> Hook | None:
    point = (config or {}).get("hf_hook_point_in")
    if point:
        return parse_hook(str(point), "config.json hf_hook_point_in")
    text = folder.path_text
    match = _LAYER.search(text)
    if match is None:
        return None
    if _NOT_RESIDUAL.search(text):
        return Hook(kind="not the residual stream", layer=int(match.group(1)), name=text, source="the path")
    if _RESIDUAL.search(text):
        return parse_hook(f"layers.{match.group(1)}", "the path's layer_L (a residual-stream release)")
    return None


def _hub_header(folder: Folder, name: str) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes of a hub safetensors file from its header alone (HTTP range requests); None offline."""
    try:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            return None
        filename = f"{folder.sub}/{name}" if folder.sub else name
        info = HfApi().parse_safetensors_file_metadata(folder.repo, filename, revision=folder.revision)
        return {k: tuple(v.shape) for k, v in info.tensors.items()}
    except Exception:  # offline, or the hub refused: the caller fetches the file
        return None


def _tensor(state: dict, name: str):
    return state.get(name, state.get(name.lower()))


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    config = folder.json("config.json")
    name = weights_name(folder) or _hub_weights(folder)
    d_in = d_sae = None
    shapes = _hub_header(folder, name) if folder.on_hub and name == "params.safetensors" else None
    if shapes is None:  # local files, a hub npz (the only file there is), or a header the hub would not serve
        shapes = tensor_shapes(folder.require(name, "the Gemma Scope weights"))
    w_enc = shapes.get("W_enc", shapes.get("w_enc"))
    if w_enc is not None and len(w_enc) == 2:
        d_in, d_sae = w_enc
    hook = _hook(folder, config)
    notes = [] if hook is not None else [f"cannot tell the layer and hook point of {folder.path_text}"]
    return SaeMeta(format=NAME, architecture="jumprelu", source=folder.label, d_in=d_in, d_sae=d_sae, hook=hook,
                   threshold_kind="per-feature", notes=notes)


def load(folder: Folder, meta: SaeMeta) -> Sae:
    name = weights_name(folder) or _hub_weights(folder)
    state = open_tensors(folder.require(name, "the Gemma Scope weights"))
    wanted = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
    missing = [n for n in wanted if _tensor(state, n) is None]
    if missing:
        require_tensors(state, tuple(missing), f"SAE {folder.label} ({name})")
    scaling = state.get("scaling_factor")
    if scaling is not None and not bool((scaling.float() == 1).all()):
        raise PersonamineError(f"SAE {folder.label} has a fine-tuning scaling_factor, which personamine does not "
                               "apply")
    return Sae(meta, Rule("jumprelu", subtract_b_dec=False), encoder=Matrix(_tensor(state, "W_enc"), False),
               b_enc=_tensor(state, "b_enc"), decoder=Matrix(_tensor(state, "W_dec"), True),
               b_dec=_tensor(state, "b_dec"), threshold=_tensor(state, "threshold").float())
