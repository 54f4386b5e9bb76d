"""Goodfire: one ``.pth`` state dict, e.g. ``Goodfire/Llama-3.1-8B-Instruct-SAE-l19`` (65,536 features x 4096).

Tensors ``encoder_linear.{weight [F, d], bias}``, ``decoder_linear.{weight [d, F], bias}``. Encode
``relu(encoder_linear(x))``: no decoder-bias subtraction, no threshold; elementwise. There is no config: the layer
is the ``-lN`` in the file (or repo) name, the output of ``model.layers[N]`` (SAELens maps it to
``blocks.19.hook_resid_post``). Reading the metadata of a hub ``.pth`` fetches it (there is nothing smaller).
"""

from __future__ import annotations

import re

from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import parse_hook
from personamine.saes.locate import Folder
from personamine.saes.neuronpedia import neuronpedia_id
from personamine.saes.tensors import open_torch

NAME = "goodfire"
_LAYER = re.compile(r"-l(\d+)(?:\.pth?)?$", re.IGNORECASE)
TENSORS = ("encoder_linear.weight", "encoder_linear.bias", "decoder_linear.weight", "decoder_linear.bias")


def weights_name(folder: Folder) -> str | None:
    if folder.file:
        return folder.file if folder.file.endswith((".pth", ".pt")) else None
    if folder.root is not None:
        found = sorted(p.name for p in folder.root.glob("*.pth"))
        return found[0] if len(found) == 1 else None
    return f"{folder.name}.pth"  # Goodfire's hub repos hold <repo name>.pth


def detect(folder: Folder, fetch_weights: bool) -> bool:
    name = weights_name(folder)
    if name is None or not name.endswith(".pth"):
        return False
    if folder.on_hub and not fetch_weights:
        return False
    path = folder.path(name)
    return path is not None and "encoder_linear.weight" in open_torch(path)


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    name = weights_name(folder) or ""
    state = open_torch(folder.require(name, "the Goodfire weights"))
    require_tensors(state, TENSORS, f"SAE {folder.label} ({name})")
    d_sae, d_in = (int(s) for s in state["encoder_linear.weight"].shape)
    match = _LAYER.search(name) or _LAYER.search(repo or "")
    hook = parse_hook(f"layers.{match.group(1)}", "the file name's -lN") if match else None
    return SaeMeta(format=NAME, architecture="standard", source=folder.label, d_in=d_in, d_sae=d_sae, hook=hook,
                   neuronpedia=neuronpedia_id(repo, hook.layer if hook else None),
                   notes=[] if hook else [f"{name!r} does not name its layer (-lN)"])


def load(folder: Folder, meta: SaeMeta) -> Sae:
    name = weights_name(folder) or ""
    state = open_torch(folder.require(name, "the Goodfire weights"))
    require_tensors(state, TENSORS, f"SAE {folder.label} ({name})")
    return Sae(meta, Rule("relu", subtract_b_dec=False), encoder=Matrix(state["encoder_linear.weight"], True),
               b_enc=state["encoder_linear.bias"], decoder=Matrix(state["decoder_linear.weight"], False),
               b_dec=state["decoder_linear.bias"])
