"""`personamine.jobs.train_sae.train_sae(...)`: train a BatchTopK SAE on one layer's residual stream.

Activations come from the same early-stopped capture and the same windows as mining (sink prefix, special tokens
and norm outliers never used), so the SAE is trained on exactly the token population it will later be asked to
encode. Training is dictionary_learning's ``BatchTopKTrainer``, driven step by step here (its ``trainSAE`` wants an
nnsight buffer), with activations scaled to unit mean squared norm as ``trainSAE(normalize_activations=True)``
does; the biases and threshold are scaled back before saving, so the saved SAE takes raw activations. The output
is dictionary_learning's release layout, ``<output>/resid_post_layer_{L}/trainer_{T}/{ae.pt,config.json}``, which
``personamine.saes.load_sae`` and ``BatchTopKSAE.from_pretrained`` load like any published SAE.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from personamine.atomic import check_writable
from personamine.config import TrainSaeConfig, resolve_config
from personamine.corpus import CorpusSpec, iter_rows, open_manifest
from personamine.errors import PersonamineError
from personamine.model.loading import check_layer, load_config, load_model
from personamine.model.prompts import sink_prefix_ids, special_token_ids, tokenize
from personamine.saes.locate import release_subpath
from personamine.shards.windows import Document, build_batch, capture_windows, cut_windows, pack_batches, scored_tokens

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------- activations


@dataclass
class Activations:
    x: torch.Tensor  # [N, D] float32, on the CPU
    document: np.ndarray  # [N] document index of each row
    counters: dict[str, int]


def _documents(manifest, cfg: TrainSaeConfig, counters: dict[str, int]) -> Iterator[tuple[int, str]]:
    end = cfg.skip_documents + cfg.max_documents if cfg.max_documents is not None else None
    for index, text in iter_rows(manifest, cfg.skip_documents, end):
        counters["n_documents"] += 1
        if isinstance(text, str) and text:
            yield index, text
        else:
            counters["rows_skipped"] += 1


def capture_activations(cfg: TrainSaeConfig, loaded=None, on_tokens=None) -> Activations:
    """Residual-stream activations of every scored token of the configured documents, up to ``max_tokens``."""
    import torch

    # no_grad, not inference_mode: the rows become training data, which autograd must accept.
    with torch.no_grad():
        return _capture(cfg, loaded, on_tokens)


def _capture(cfg: TrainSaeConfig, loaded, on_tokens) -> Activations:
    import torch

    loaded = loaded or load_model(cfg.model, cfg.layer, dtype=cfg.dtype, device=cfg.device,
                                  gguf_file=cfg.gguf_file, revision=cfg.revision)
    tokenizer = loaded.tokenizer
    prefix = sink_prefix_ids(tokenizer, cfg.sink_prefix)
    special_ids = special_token_ids(tokenizer, prefix)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad_id = int(pad if pad is not None else prefix[0])
    batch_tokens = cfg.batch_tokens or (32768 if loaded.device.type == "cuda" else 2048)
    manifest = open_manifest(CorpusSpec(cfg.corpus, cfg.corpus_config, cfg.split, cfg.text_column,
                                        cfg.corpus_revision))
    counters = {"n_documents": 0, "rows_skipped": 0, "n_windows": 0, "tokens_fed": 0, "tokens_scored": 0,
                "tokens_norm_filtered": 0, "tokens_special": 0}

    def cut(docs: list[tuple[int, str]]) -> Iterator:
        for (index, _), ids in zip(docs, tokenize(tokenizer, [t for _, t in docs]), strict=True):
            yield from cut_windows(Document(index, ids), prefix, cfg.ctx_len)

    def windows() -> Iterator:
        docs: list[tuple[int, str]] = []
        for item in _documents(manifest, cfg, counters):
            docs.append(item)
            if len(docs) == 64:  # tokenizing in groups is much faster than one by one
                yield from cut(docs)
                docs = []
        yield from cut(docs)

    rows: list[torch.Tensor] = []
    docs: list[np.ndarray] = []
    for group in pack_batches(windows(), batch_tokens):
        batch = build_batch(group, ctx_len=cfg.ctx_len, pad_id=pad_id,
                            special_ids=special_ids, device=loaded.device)
        hidden = capture_windows(loaded.model, loaded.layer_module, batch)
        scored, outlier = scored_tokens(hidden, batch, cfg.norm_filter)
        counters["n_windows"] += len(batch.windows)
        counters["tokens_fed"] += int(batch.real.sum())
        counters["tokens_special"] += int(batch.special.sum())
        counters["tokens_norm_filtered"] += int(outlier.sum())
        before = counters["tokens_scored"]
        counters["tokens_scored"] += int(scored.sum())
        rows.append(hidden[scored].float().cpu())
        docs.append(np.repeat(batch.windows.document, scored.sum(1).cpu().numpy()))
        if on_tokens is not None:
            on_tokens(min(counters["tokens_scored"], cfg.max_tokens) - min(before, cfg.max_tokens))
        if counters["tokens_scored"] >= cfg.max_tokens:
            break
    if not rows or counters["tokens_scored"] == 0:
        raise PersonamineError(f"corpus {cfg.corpus!r} gave no tokens to train on (check skip_documents)")
    x = torch.cat(rows)[: cfg.max_tokens]
    return Activations(x=x, document=np.concatenate(docs)[: cfg.max_tokens], counters=counters)


def split_held_out(acts: Activations, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) rows, split by whole documents so held-out text was never seen in training."""
    documents = np.unique(acts.document)
    if documents.size < 2:
        raise PersonamineError("training needs at least 2 documents (one is held out to measure the SAE)")
    rng = np.random.default_rng(seed)
    n_out = max(1, round(fraction * documents.size))
    held = np.isin(acts.document, rng.permutation(documents)[:n_out])
    return acts.x[~held], acts.x[held]


# ---------------------------------------------------------------- training


SAE_INSTALL = "pip install einops && pip install --no-deps dictionary-learning==0.1.0"


def dictionary_learning_trainers() -> types.ModuleType:
    """``dictionary_learning.trainers``, importable with only the trainers' own dependency (einops) installed.

    The package's ``__init__`` imports nnsight for an activation buffer the trainers never use, and nnsight pulls
    accelerate, diffusers, torchvision (and with it a CUDA torch). Installed with ``--no-deps`` (README
    "Install"), that ``__init__`` fails; the package is then registered without running it, and its trainers
    import as usual.
    """
    try:
        return importlib.import_module("dictionary_learning.trainers")
    except ModuleNotFoundError as exc:
        if exc.name == "dictionary_learning":
            raise PersonamineError(f"train-sae needs dictionary-learning: {SAE_INSTALL}") from exc
    for name in [m for m in sys.modules if m.split(".")[0] == "dictionary_learning"]:
        del sys.modules[name]  # the half-run import
    spec = importlib.util.find_spec("dictionary_learning")
    sys.modules["dictionary_learning"] = importlib.util.module_from_spec(spec)  # its __init__ is never run
    try:
        return importlib.import_module("dictionary_learning.trainers")
    except ModuleNotFoundError as exc:
        del sys.modules["dictionary_learning"]
        raise PersonamineError(f"train-sae: dictionary-learning cannot be imported, {exc.name} is missing: "
                               f"{SAE_INSTALL}") from exc


def _trainer_class():
    import torch

    dictionary_learning_trainers()  # registers the package even where its __init__ cannot run
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.trainer import set_decoder_norm_to_unit_norm

    class Trainer(BatchTopKTrainer):
        """``BatchTopKTrainer`` with its gradient projection computed as an elementwise product.

        The library projects the decoder gradient with ``einsum("d f, d f -> f")``, which torch runs on the CPU as
        4,096 tiny batched matmuls: ~4 s per step at 576 x 4096, 70% of a step. ``(g * w).sum(0)`` is the same
        sum in 25 ms. Everything else is the library's ``update``, line for line.
        """

        def update(self, step: int, x: torch.Tensor) -> float:
            if step == 0:
                self.ae.b_dec.data = self.geometric_median(x).to(self.ae.b_dec.dtype)
            x = x.to(self.device)
            loss = self.loss(x, step=step)
            loss.backward()
            weight = self.ae.decoder.weight
            with torch.no_grad():
                normed = weight / (weight.norm(dim=0, keepdim=True) + 1e-6)
                weight.grad -= (weight.grad * normed).sum(0, keepdim=True) * normed
            torch.nn.utils.clip_grad_norm_(self.ae.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.scheduler.step()
            self.ae.decoder.weight.data = set_decoder_norm_to_unit_norm(weight, self.ae.activation_dim,
                                                                        self.ae.dict_size)
            return loss.item()

    return Trainer


def norm_factor(x: torch.Tensor) -> float:
    """sqrt(mean squared norm): dividing by it gives unit mean squared norm (dictionary_learning's definition)."""
    return float(x.double().pow(2).sum(-1).mean().sqrt())


def fit_sae(train: torch.Tensor, cfg: TrainSaeConfig, device: torch.device, progress: bool = False):
    """Train on ``train`` (raw activations); return (trainer, norm factor). The trainer's SAE is raw-scale."""
    import torch

    trainer_cls = _trainer_class()
    scale = norm_factor(train)
    trainer = trainer_cls(
        steps=cfg.steps, activation_dim=int(train.shape[1]), dict_size=cfg.dict_size, k=cfg.k, layer=cfg.layer,
        lm_name=cfg.model, lr=cfg.lr, warmup_steps=cfg.resolved_warmup(),
        threshold_start_step=cfg.resolved_threshold_start(), seed=cfg.seed, device=str(device),
        wandb_name=f"personamine-{cfg.model}-resid_post_layer_{cfg.layer}",
        submodule_name=f"resid_post_layer_{cfg.layer}",
    )
    # The library's 10M-token default would never trigger on a small run; count "dead" on our own scale.
    trainer.dead_feature_threshold = cfg.dead_after_tokens or 2 * int(train.shape[0])
    generator = torch.Generator().manual_seed(cfg.seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, unit="step", desc="training SAE", dynamic_ncols=True)
    order = torch.empty(0, dtype=torch.long)
    cursor = 0
    try:
        for step in range(cfg.steps):
            if cursor + cfg.batch_size > order.numel():  # a fresh shuffle each epoch
                order = torch.randperm(train.shape[0], generator=generator)
                cursor = 0
            rows = order[cursor: cursor + cfg.batch_size]
            cursor += cfg.batch_size
            loss = trainer.update(step, (train[rows] / scale).to(device))
            if bar is not None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix_str(f"loss {loss:.3g}")
    finally:
        if bar is not None:
            bar.close()
    trainer.ae.scale_biases(scale)  # biases and threshold back to raw activation units, as trainSAE saves them
    return trainer, scale


@dataclass
class SaeQuality:
    variance_explained: float  # 1 - sum |x - x_hat|^2 / sum |x - mean x|^2
    l0: float  # mean number of active features per token
    dead_fraction: float  # features that never fire on these tokens
    n_tokens: int


def evaluate_sae(sae, x: torch.Tensor, batch: int = 4096) -> SaeQuality:
    """Reconstruction quality of ``sae`` (a ``BatchTopKSAE`` in inference mode: thresholded) on raw ``x``."""
    import torch

    with torch.no_grad():
        return _evaluate(sae, x, batch)


def _evaluate(sae, x: torch.Tensor, batch: int) -> SaeQuality:
    import torch

    device = sae.b_dec.device
    mean = x.double().mean(0)
    err = total = 0.0
    l0 = 0
    fired = torch.zeros(sae.dict_size, dtype=torch.bool, device=device)
    for lo in range(0, x.shape[0], batch):
        chunk = x[lo: lo + batch].to(device)
        codes = sae.encode(chunk)
        err += float((chunk - sae.decode(codes)).double().pow(2).sum())
        total += float((chunk.double() - mean.to(device)).pow(2).sum())
        active = codes > 0
        l0 += int(active.sum())
        fired |= active.any(0)
    n = int(x.shape[0])
    return SaeQuality(variance_explained=1.0 - err / total if total > 0 else float("nan"), l0=l0 / max(n, 1),
                      dead_fraction=float(1.0 - fired.float().mean()), n_tokens=n)


@dataclass
class TrainSaeResult:
    path: Path  # the release root (pass it as ``sae=`` with the same layer)
    ae_path: Path
    quality: SaeQuality
    threshold: float
    n_train_tokens: int
    seconds: float

    def summary(self) -> str:
        q = self.quality
        return (f"SAE {self.ae_path}: variance explained {q.variance_explained:.1%}, L0 {q.l0:.1f}, "
                f"dead {q.dead_fraction:.1%} (on {q.n_tokens:,} held-out tokens; trained on "
                f"{self.n_train_tokens:,} tokens in {self.seconds:.0f} s), threshold {self.threshold:.4g}")


def train_sae(config: TrainSaeConfig | None = None, /, **overrides: Any) -> TrainSaeResult:
    """Capture activations over a corpus, train a BatchTopK SAE on them, save it, and measure it on held-out text.

    ``config`` is a :class:`TrainSaeConfig` or None (then keyword arguments are its fields); keyword arguments
    override a given config.
    """
    cfg = resolve_config(TrainSaeConfig, config, overrides, "train-sae")
    began = time.perf_counter()
    dictionary_learning_trainers()  # fail before any work when it is missing
    check_writable(cfg.output, "output", directory=True)
    model_config = load_config(cfg.model, cfg.gguf_file, cfg.revision)
    check_layer(cfg.layer, model_config.num_hidden_layers, cfg.model)
    loaded = load_model(cfg.model, cfg.layer, dtype=cfg.dtype, device=cfg.device, gguf_file=cfg.gguf_file,
                        revision=cfg.revision)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_tokens, unit="tok", unit_scale=True, desc="capturing activations",
                   dynamic_ncols=True)
    try:
        acts = capture_activations(cfg, loaded, on_tokens=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    train, held = split_held_out(acts, cfg.held_out, cfg.seed)
    trainer, scale = fit_sae(train, cfg, loaded.device, progress=cfg.progress)
    sae = trainer.ae.eval()
    threshold = float(sae.threshold)
    if not threshold > 0:
        raise PersonamineError(f"training ended with threshold {threshold}: raise steps or lower "
                               "threshold_start_step so the threshold is calibrated")
    quality = evaluate_sae(sae, held)
    extra = {"capture": {**{k: getattr(cfg, k) for k in (
        "corpus", "corpus_config", "split", "text_column", "skip_documents", "max_documents", "max_tokens",
        "ctx_len", "sink_prefix", "norm_filter", "batch_size", "held_out")}, **acts.counters},
        "norm_factor": scale, "n_train_tokens": int(train.shape[0]),
        "held_out_quality": dataclasses.asdict(quality), "config": cfg.to_dict()}
    ae_path = save_release(sae, trainer.config, extra, Path(cfg.output), cfg.layer, cfg.trainer)
    return TrainSaeResult(path=Path(cfg.output), ae_path=ae_path, quality=quality, threshold=threshold,
                          n_train_tokens=int(train.shape[0]), seconds=time.perf_counter() - began)


def save_release(sae, trainer_config: dict, extra: dict, root: Path, layer: int, trainer: int) -> Path:
    """Write ``ae.pt`` + ``config.json`` into ``root/resid_post_layer_{layer}/trainer_{trainer}`` atomically."""
    import torch

    target = root / release_subpath(layer, trainer)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        torch.save({k: v.detach().cpu() for k, v in sae.state_dict().items()}, tmp / "ae.pt")
        config = {"trainer": trainer_config, "personamine": extra}
        (tmp / "config.json").write_text(json.dumps(config, indent=4, default=_json_default) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / "ae.pt"


def _json_default(value: object) -> object:
    import torch

    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
