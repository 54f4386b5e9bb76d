"""Load a causal LM truncated after the target layer, plus its tokenizer."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from personamine.errors import PersonamineError


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    layer: int
    layer_module: nn.Module
    hidden_size: int
    num_layers_total: int
    device: torch.device
    dtype: torch.dtype
    source: str


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise PersonamineError(f"unknown dtype {dtype!r}: use one of auto, {', '.join(table)}")
    return table[dtype]


def resolve_model_source(name: str) -> str:
    """Built-in names (``builtin:...``) map to a cached local copy; anything else is a hub id or a path."""
    if name.startswith("builtin:"):
        from personamine.model.smollm2 import resolve_builtin_model

        path = resolve_builtin_model(name)
        if path is None:
            raise PersonamineError(f"unknown built-in model {name!r}")
        return str(path)
    return name


def _hub_kwargs(gguf_file: str | None, revision: str | None) -> dict:
    kwargs: dict = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if revision:
        kwargs["revision"] = revision
    return kwargs


def looks_like_path(name: str) -> bool:
    """Hub ids are ``org/name``; anything else with a path shape is a local path that must exist."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def load_config(name: str, gguf_file: str | None = None, revision: str | None = None):
    from transformers import AutoConfig

    source = resolve_model_source(name)
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise PersonamineError(f"model path {source!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(source, **_hub_kwargs(gguf_file, revision))
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load model config for {name!r}: {str(exc).splitlines()[0]}") from exc
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def check_layer(layer: int, num_layers: int, name: str) -> None:
    if not 0 <= layer < num_layers:
        raise PersonamineError(
            f"layer {layer} is out of range: model {name!r} has {num_layers} layers (0..{num_layers - 1})"
        )


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    for path in ("layers", "model.layers", "h", "transformer.h", "gpt_neox.layers", "decoder.layers",
                 "model.decoder.layers", "language_model.layers", "model.language_model.layers"):
        module: object = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise PersonamineError(f"cannot find the decoder layers of {type(model).__name__}")


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str, gguf_file: str | None = None, revision: str | None = None):
    """The model's tokenizer, loaded once per process (discover, mine and the demo share it; never mutated)."""
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    try:
        return AutoTokenizer.from_pretrained(source, **_hub_kwargs(gguf_file, revision))
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load tokenizer for {name!r}: {str(exc).splitlines()[0]}") from exc


def load_model(
    name: str,
    layer: int,
    *,
    dtype: str = "auto",
    device: str = "auto",
    gguf_file: str | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load only layers 0..layer (``num_hidden_layers=layer+1``): later layers are never materialised."""
    from transformers import AutoModel

    config = load_config(name, gguf_file, revision)
    check_layer(layer, config.num_hidden_layers, name)
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    source = resolve_model_source(name)
    # AutoModel (no LM head) avoids materialising an untied lm_head we never use.
    try:
        model = AutoModel.from_pretrained(
            source, num_hidden_layers=layer + 1, use_cache=False, dtype=torch_dtype,
            **_hub_kwargs(gguf_file, revision),
        )
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    model.to(dev).eval()
    layers = find_decoder_layers(model)
    if len(layers) != layer + 1:
        raise PersonamineError(f"expected {layer + 1} loaded layers, found {len(layers)} in {name!r}")
    tokenizer = load_tokenizer(name, gguf_file, revision)
    return LoadedModel(
        model=model, tokenizer=tokenizer, layer=layer, layer_module=layers[layer],
        hidden_size=int(config.hidden_size), num_layers_total=int(config.num_hidden_layers), device=dev,
        dtype=torch_dtype, source=name,
    )


def load_causal_lm(
    name: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    gguf_file: str | None = None,
    revision: str | None = None,
) -> tuple[nn.Module, torch.device, torch.dtype]:
    """The whole model with its LM head (steering generates, so every layer runs), on the same device and dtype
    rules as :func:`load_model`."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_source(name), dtype=torch_dtype,
                                                     **_hub_kwargs(gguf_file, revision))
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    return model.to(dev).eval(), dev, torch_dtype
