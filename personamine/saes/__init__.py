"""SAEs in the layouts researchers use, behind one interface (:class:`Sae`), one small loader file per format.

Formats (``sae_format``; ``auto`` tells them apart by their files): ``dictionary_learning`` (BatchTopK,
Matryoshka BatchTopK, TopK), ``saelens`` (standard, jumprelu, gated, topk), ``sparsify`` (topk), ``goodfire``,
``gemma_scope`` (1 and 2), ``llama_scope``. Each is found in a local file or directory, a hub repo (optionally a
folder or file inside it: ``sae_id``), or, with sae-lens installed, a SAELens release + ``sae_id``, read from
sae-lens's own pretrained directory. Unknown layouts raise one line naming the files found.

The contract the mining engine relies on (keep it stable):

- ``read_sae_meta(spec) -> SaeMeta``: the CHEAP read for a driver process. Config files only (plus a safetensors
  header, or a memory-mapped ``torch.load`` of a local file, which reads no tensor data); for a hub
  dictionary_learning release only ``config.json`` is fetched, never ``ae.pt``. Formats with no config at all (a
  hub Gemma Scope 1 ``params.npz``, a Goodfire ``.pth``, a bare ``ae.pt``) must fetch their one file. Gives
  ``d_in``, ``d_sae``, ``hook`` (layer + kind), ``k``, ``format``, ``architecture``, threshold info, trainer, the
  Neuronpedia id. ``prepare_sae`` adds the checks a driver makes (width, hook vs captured layer, layer derivation).
- ``load_sae(spec) -> Sae``: tensors memory-mapped (safetensors, ``.npz`` members, ``torch.load(mmap=True)``);
  nothing is read until rows are indexed. ``load_checked`` adds the checks an actor makes before its first unit.
- ``sae.encoder(features, device=, chunk_size=, exact_topk=)``: an object with ``n_features``, ``chunks()``,
  ``iter_encode(x)`` yielding ``(start, end, acts)`` (float32 ``[N, end - start]``, nonnegative, one feature chunk
  in memory at a time) and ``encode(x)``. Only the chosen features' encoder rows are copied (to the device) for
  elementwise rules; a TopK SAE needs ``exact_topk`` for a subset of its features and raises otherwise.
- ``sae.decoder_directions(features)``: fp32 ``[n, d_in]``, one feature's unit contribution in the model's units
  (logit lens, steering); ``sae.decode(acts, features, x)`` reconstructs; ``sae.encode(x, features)`` encodes.
- ``preflight(sae, hidden, ...) -> PreflightResult`` (fraction of variance explained and L0 on captured scored
  tokens; ``.check(allow)`` raises the refusal).
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_MIN_FVE", "FORMATS", "Hook", "PreflightResult", "Sae", "SaeMeta", "SaeSpec", "check_features",
           "load_checked", "load_sae", "neuronpedia_url", "prepare_sae", "preflight", "read_sae_meta",
           "release_subpath", "sae_spec"]

_WHERE = {"DEFAULT_MIN_FVE": "quality", "PreflightResult": "quality", "preflight": "quality",
          "Hook": "hooks", "Sae": "base", "SaeMeta": "base", "check_features": "base", "FORMATS": "locate",
          "SaeSpec": "locate", "release_subpath": "locate"}


def __getattr__(name: str) -> Any:
    # Lazy, so that reading a results file (which needs only neuronpedia.py) does not import torch.
    if name not in __all__:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"personamine.saes.{_WHERE.get(name, 'api')}"), name)
