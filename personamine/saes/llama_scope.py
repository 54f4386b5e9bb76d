"""Llama Scope (``fnlp/Llama3_1-8B-Base-L{L}R-8x``...): ``hyperparams.json`` + ``checkpoints/final.safetensors``.

Tensors ``encoder.{weight [F, d], bias}``, ``decoder.{weight [d, F], bias}``. The encode rule is the training
library's own (OpenMOSS Language-Model-SAEs, ``SparseAutoEncoder.encode`` and ``compute_norm_factor``):
``x' = x * sqrt(d_model) / dataset_average_activation_norm.in`` (``norm_activation: dataset-wise``), minus
``decoder.bias`` only if ``apply_decoder_bias_to_pre_encoder``; ``pre = encoder(x')``; jumprelu keeps ``pre`` where
``pre * |W_dec f| > jump_relu_threshold`` (the decoder norm only with ``sparsity_include_decoder_norm``), one
scalar threshold in that scaled space; elementwise. The reconstruction ``decoder(acts)`` is in the output's scaled
space: divided by ``sqrt(d_model) / dataset_average_activation_norm.out`` it is in the model's units.

Note: sae-lens 6.54's ``llama_scope`` conversion instead multiplies the threshold by the input factor and drops the
decoder norm; this loader follows the library that trained and published the SAEs.
"""

from __future__ import annotations

import math

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import parse_hook
from personamine.saes.locate import Folder
from personamine.saes.tensors import open_safetensors, tensor_shapes

NAME = "llama_scope"
CONFIG = "hyperparams.json"
WEIGHTS = "checkpoints/final.safetensors"
TENSORS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")


def detect(folder: Folder, fetch_weights: bool) -> bool:
    return folder.json(CONFIG) is not None if folder.on_hub or folder.path(CONFIG) else False


def _config(folder: Folder) -> dict:
    cfg = folder.json(CONFIG)
    if cfg is None:
        raise PersonamineError(f"SAE {folder.label} has no {CONFIG}")
    if cfg.get("hook_point_out", cfg.get("hook_point_in")) != cfg.get("hook_point_in"):
        raise PersonamineError(f"SAE {folder.label} reads {cfg.get('hook_point_in')} and writes "
                               f"{cfg.get('hook_point_out')}: a transcoder, not an SAE of one hook point")
    act = cfg.get("act_fn", "relu")
    if act not in ("jumprelu", "relu"):  # lm-saes topk emits unscaled values at rescaled ranks: not supported
        raise PersonamineError(f"SAE {folder.label}: act_fn {act!r} is not one personamine encodes (jumprelu, relu)")
    mode = cfg.get("norm_activation", "dataset-wise")
    if mode not in ("dataset-wise", "inference", "token-wise"):
        raise PersonamineError(f"SAE {folder.label}: norm_activation {mode!r} is not supported")
    if act == "jumprelu" and float(cfg.get("jump_relu_threshold", 0.0)) < 0:
        raise PersonamineError(f"SAE {folder.label}: a negative jump_relu_threshold is not supported")
    return cfg


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    cfg = _config(folder)
    d_in = cfg.get("d_model")
    d_sae = cfg.get("d_sae") or (d_in * cfg["expansion_factor"] if d_in and cfg.get("expansion_factor") else None)
    if not folder.on_hub:
        shapes = tensor_shapes(folder.require(WEIGHTS, "the Llama Scope weights"))
        if len(shapes.get("encoder.weight", ())) == 2:
            d_sae, d_in = shapes["encoder.weight"]
    act = cfg.get("act_fn", "relu")
    arch = {"relu": "standard"}.get(act, act)
    hook = parse_hook(str(cfg["hook_point_in"]), f"{CONFIG} hook_point_in") if cfg.get("hook_point_in") else None
    return SaeMeta(format=NAME, architecture=arch, source=folder.label, d_in=int(d_in) if d_in else None,
                   d_sae=int(d_sae) if d_sae else None, hook=hook,
                   threshold=float(cfg["jump_relu_threshold"]) if act == "jumprelu" else None,
                   threshold_kind="scalar" if act == "jumprelu" else "none")


def _factor(cfg: dict, d_in: int, which: str) -> float | None:
    if cfg.get("norm_activation", "dataset-wise") != "dataset-wise":
        return None
    norms = cfg.get("dataset_average_activation_norm") or {}
    norm = norms.get(which) if isinstance(norms, dict) else None
    if not norm:
        raise PersonamineError(f"Llama Scope SAE is dataset-wise normalised but its {CONFIG} has no "
                               f"dataset_average_activation_norm.{which}")
    return math.sqrt(d_in) / float(norm)


def load(folder: Folder, meta: SaeMeta) -> Sae:
    cfg = _config(folder)
    state = open_safetensors(folder.require(WEIGHTS, "the Llama Scope weights"))
    require_tensors(state, TENSORS, f"SAE {folder.label} ({WEIGHTS})")
    d_in = int(state["encoder.weight"].shape[1])
    act = cfg.get("act_fn", "relu")
    rule = Rule(act, subtract_b_dec=bool(cfg.get("apply_decoder_bias_to_pre_encoder", True)),
                input_scale=_factor(cfg, d_in, "in"), output_scale=_factor(cfg, d_in, "out"),
                input_norm="constant_norm_rescale" if cfg.get("norm_activation") == "token-wise" else "none",
                score_norm=bool(cfg.get("sparsity_include_decoder_norm", True)) and act != "relu")
    import torch

    threshold = torch.tensor(float(cfg.get("jump_relu_threshold", 0.0)), dtype=torch.float32) \
        if act == "jumprelu" else None
    return Sae(meta, rule, encoder=Matrix(state["encoder.weight"], True), b_enc=state["encoder.bias"],
               decoder=Matrix(state["decoder.weight"], False), b_dec=state["decoder.bias"], threshold=threshold)
