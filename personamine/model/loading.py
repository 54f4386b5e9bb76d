"""Load a causal LM truncated after the target layer, plus its tokenizer."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from personamine.errors import PersonamineError
from personamine.model.smollm2 import resolve_builtin_model
from personamine.verbosity import verbose


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
    try:
        picked = torch.device(device)
    except RuntimeError as exc:
        raise PersonamineError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if picked.type == "cuda":
        if not torch.cuda.is_available():
            raise PersonamineError(f"device {device!r} asked for, but torch sees no CUDA GPU (a CPU-only torch "
                                   "build, or no driver): use --device cpu or auto")
        if picked.index is not None and picked.index >= torch.cuda.device_count():
            raise PersonamineError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return picked


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
        tokenizer = AutoTokenizer.from_pretrained(source, **_hub_kwargs(gguf_file, revision))
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load tokenizer for {name!r}: {str(exc).splitlines()[0]}") from exc
    # Documents are tokenized whole and then cut into windows on purpose, so transformers' warning that a text is
    # longer than the model's maximum length never applies: mark it as already given.
    if isinstance(getattr(tokenizer, "deprecation_warnings", None), dict):
        tokenizer.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tokenizer


# transformers logs a LOAD REPORT listing every checkpoint weight the model did not take. A truncated load skips
# the layers past `layer` and the LM head on purpose, so that report is all noise; it is held back, and
# `_check_loading_info` names what was missing or unexpected beyond those. With --verbose it shows as usual.
_REPORT_LOGGER = "transformers.modeling_utils"
_LAYER_KEY = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


class _HoldLoadReport(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


@contextmanager
def quiet_load() -> Iterator[None]:
    """Around a ``from_pretrained``: no "Loading weights" bar and no LOAD REPORT unless verbose. If the load fails,
    the held report is logged after all: it explains the failure."""
    if verbose():
        yield
        return
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger(_REPORT_LOGGER)
    hold = _HoldLoadReport()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    logger.addFilter(hold)
    try:
        yield
    except BaseException:
        logger.removeFilter(hold)
        for record in hold.held:
            logger.handle(record)
        raise
    finally:
        logger.removeFilter(hold)
        if bars:
            hf_logging.enable_progress_bar()


def skipped_on_purpose(key: str, layer: int) -> bool:
    """A checkpoint weight a load truncated after ``layer`` leaves out by design: a later layer or the LM head."""
    match = _LAYER_KEY.search(key)
    return key.startswith("lm_head.") or (match is not None and int(match.group(1)) > layer)


def _check_loading_info(name: str, layer: int, info: dict) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if not skipped_on_purpose(k, layer))
    if missing:
        warnings.warn(f"model {name!r}: {len(missing)} weight(s) are not in the checkpoint and were randomly "
                      f"initialised ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): activations "
                      "will not be the model's", stacklevel=3)
    if unexpected:
        warnings.warn(f"model {name!r}: {len(unexpected)} checkpoint weight(s) were not used "
                      f"({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''}): is the architecture "
                      "the one you expect?", stacklevel=3)


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
        with quiet_load():
            model, info = AutoModel.from_pretrained(
                source, num_hidden_layers=layer + 1, use_cache=False, dtype=torch_dtype, output_loading_info=True,
                **_hub_kwargs(gguf_file, revision),
            )
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    _check_loading_info(name, layer, info)
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
        with quiet_load():
            model = AutoModelForCausalLM.from_pretrained(resolve_model_source(name), dtype=torch_dtype,
                                                         **_hub_kwargs(gguf_file, revision))
    except (OSError, ValueError) as exc:
        raise PersonamineError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    return model.to(dev).eval(), dev, torch_dtype


def neighbour_model(config) -> LoadedModel:
    """The model truncated one layer later than mining needs (so the pre-flight sees layer + 1), presented as
    truncated at ``config.layer``: capture hooks stop there, so the extra layer never runs while mining."""
    n_layers = int(load_config(config.model, config.gguf_file, config.revision).num_hidden_layers)
    loaded = load_model(config.model, min(config.layer + 1, n_layers - 1), dtype=config.dtype, device=config.device,
                        gguf_file=config.gguf_file, revision=config.revision)
    return dataclasses.replace(loaded, layer=config.layer,
                               layer_module=find_decoder_layers(loaded.model)[config.layer])
