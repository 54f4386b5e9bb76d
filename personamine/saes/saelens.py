"""SAELens: ``cfg.json`` + ``sae_weights.safetensors`` (sae-lens 6.x ``SAE.save_model``; pre-6.0 configs too).

Tensors ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``, ``b_dec``; jumprelu adds ``threshold
[d_sae]``; gated has ``b_gate``, ``b_mag``, ``r_mag`` and no ``b_enc``. Encode (sae_lens/saes/*.py): ``s = norm(x)
- b_dec * apply_b_dec_to_input``; standard ``relu(s W_enc + b_enc)``; jumprelu ``relu(pre) * (pre > threshold)``;
gated ``[s W_enc + b_gate > 0] * relu(s (W_enc * exp(r_mag)) + b_mag)``; topk keeps each token's k largest
``pre`` (times ``|W_dec f|`` with ``rescale_acts_by_decoder_norm``), relu'd. ``normalize_activations``:
``constant_norm_rescale`` scales each token to norm sqrt(d_in), ``layer_norm`` standardises it; sae-lens applies
nothing at encode time for ``expected_average_only_in`` (its loaders fold the factor into the weights), and
neither does this loader. The hook is ``metadata.hook_name`` (pre-6.0: ``hook_name`` / ``hook_point``).
"""

from __future__ import annotations

from personamine.errors import PersonamineError
from personamine.saes.base import Matrix, Rule, Sae, SaeMeta, require_tensors
from personamine.saes.hooks import Hook, agreeing, parse_hook
from personamine.saes.locate import Folder
from personamine.saes.tensors import open_safetensors, tensor_shapes

NAME = "saelens"
CONFIG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "jumprelu", "gated", "topk")
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


def is_saelens_config(cfg: dict) -> bool:
    return "d_sae" in cfg and "num_latents" not in cfg


def detect(folder: Folder, fetch_weights: bool) -> bool:
    cfg = folder.json(CONFIG) if folder.on_hub or folder.path(CONFIG) else None
    return cfg is not None and is_saelens_config(cfg) and (folder.on_hub or folder.path(WEIGHTS) is not None)


def _architecture(cfg: dict) -> str:
    arch = cfg.get("architecture")
    if arch is None:  # pre-6.0: the activation function names it
        arch = "topk" if cfg.get("activation_fn_str") == "topk" else "standard"
    if arch not in ARCHITECTURES:
        raise PersonamineError(f"SAELens architecture {arch!r} is not one personamine encodes "
                               f"({', '.join(ARCHITECTURES)})")
    return arch


def _k(cfg: dict) -> int | None:
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    return int(k) if k is not None else None


def _normalization(cfg: dict) -> str:
    mode = cfg.get("normalize_activations", "none")
    if isinstance(mode, bool) or mode is None:  # pre-6.0 boolean
        mode = "expected_average_only_in" if mode else "none"
    if mode not in NORMALIZATIONS:
        raise PersonamineError(f"SAELens normalize_activations {mode!r} is not supported ({', '.join(NORMALIZATIONS)})")
    return mode


def read_meta(folder: Folder, repo: str | None) -> SaeMeta:
    cfg = folder.json(CONFIG)
    if cfg is None:
        raise PersonamineError(f"SAE {folder.label} has no {CONFIG}")
    metadata = cfg.get("metadata") or {}
    hook_name = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    hook = parse_hook(str(hook_name), f"{CONFIG} hook_name") if hook_name else None
    layer = metadata.get("hook_layer", cfg.get("hook_layer"))  # sae-lens < 6 writes it beside the hook name
    if hook is not None and isinstance(layer, int) and not isinstance(layer, bool):
        agreeing([hook, Hook(hook.kind, layer, str(layer), f"{CONFIG} hook_layer")], folder.label)
    notes = []
    if _normalization(cfg) == "expected_average_only_in":
        notes.append("normalize_activations is expected_average_only_in: encoded unscaled, as sae-lens does")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if not folder.on_hub:
        shapes = tensor_shapes(folder.require(WEIGHTS, "the SAELens weights"))
        if "W_enc" in shapes and len(shapes["W_enc"]) == 2:
            d_in, d_sae = shapes["W_enc"]
    arch = _architecture(cfg)
    return SaeMeta(format=NAME, architecture=arch, source=folder.label,
                   d_in=int(d_in) if d_in is not None else None, d_sae=int(d_sae) if d_sae is not None else None,
                   hook=hook, k=_k(cfg),
                   threshold_kind="per-feature" if arch == "jumprelu" else "none",
                   neuronpedia=metadata.get("neuronpedia_id") or cfg.get("neuronpedia_id"), notes=notes)


def load(folder: Folder, meta: SaeMeta) -> Sae:
    cfg = folder.json(CONFIG) or {}
    state = open_safetensors(folder.require(WEIGHTS, "the SAELens weights"))
    what = f"SAE {folder.label} ({WEIGHTS})"
    arch = meta.architecture
    names = {"standard": ("W_enc", "b_enc", "W_dec", "b_dec"), "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec",
             "threshold"), "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
             "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")}[arch]
    require_tensors(state, names, what)
    norm = _normalization(cfg)
    rule = Rule({"standard": "relu"}.get(arch, arch), subtract_b_dec=bool(cfg.get("apply_b_dec_to_input", True)),
                input_norm="none" if norm == "expected_average_only_in" else norm, k=meta.k,
                score_norm=arch == "topk" and bool(cfg.get("rescale_acts_by_decoder_norm", False)))
    if arch == "topk" and rule.k is None:
        raise PersonamineError(f"SAE {folder.label}: a topk SAE whose {CONFIG} has no k")
    return Sae(meta, rule, encoder=Matrix(state["W_enc"], False), b_enc=state.get("b_enc"),
               decoder=Matrix(state["W_dec"], True), b_dec=state["b_dec"],
               threshold=state["threshold"].float() if arch == "jumprelu" else None,
               b_gate=state.get("b_gate"), r_mag=state.get("r_mag"), b_mag=state.get("b_mag"))
