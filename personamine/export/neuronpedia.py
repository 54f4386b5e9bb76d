"""``personamine.export_neuronpedia(...)``: a mining file as the bundle Neuronpedia imports.

The layout is that of Neuronpedia's public exports (``v1/{model}/{source}/``), which its import route reads::

    DIR/{model}/{layer}-{source set}/
        release.jsonl  model.jsonl  sourceset.jsonl  source.jsonl   one row each
        features/batch-N.jsonl.gz            a Neuron row per feature
        activations/batch-N.jsonl.gz         Activation rows: each feature's top windows, then its interval samples
        explanations/batch-N.jsonl.gz        Explanation rows (with an explanations file)
        explanation_scores/batch-N.jsonl.gz  ExplanationScore rows, and config/ the types and models they name
        lists/                               a List of the discovered features (with a discovery file)
        skipped_indexes.json                 features with no activation record (never active in the corpus)
        personamine_export.json              where it all came from, and the counts

Field names and types are those of Neuronpedia's Prisma schema (``apps/webapp/prisma/schema.prisma``; the rows of
``SAEDashboard``'s ``neuronpedia_export.py`` are the same). Neuronpedia's importer inserts a batch file with
``jsonb_to_recordset`` over the columns named by its FIRST line that the table has: every line of a file therefore
carries the same keys, a key the table lacks is ignored (the token roles of a conversation ride on that), and no
file is ever empty. docs/export.md lists which fields are filled and why the others are not.

Batch N holds the file's features N*B to (N+1)*B-1 (B = ``batch_size``, 1024 like Neuronpedia's exports): each batch
is read with ``read_results(features=...)`` and written before the next is read, so memory follows one batch, not
the file. Everything is written into a temp directory beside the target and renamed into place at the end: bad input
or a failure leaves nothing.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personamine.atomic import check_writable, ensure_dir
from personamine.cache import cache_dir
from personamine.errors import PersonamineError
from personamine.files.discover import read_discovery
from personamine.files.explain import ExplanationResults, read_explanations
from personamine.files.h5 import open_h5, plain_attrs
from personamine.files.mine import FORMAT, FORMAT_VERSION, MineResults, read_results
from personamine.merge.samples import INTERVAL_STEP
from personamine.model.smollm2 import MODEL_DIRNAME, SMOLLM2_ID
from personamine.roles import ROLES
from personamine.saes import neuronpedia as np_names
from personamine.version import __version__

CREATOR_ID, CREATOR_NAME = np_names.CREATOR_ID, np_names.CREATOR_NAME
BATCH_FEATURES = np_names.EXPORT_BATCH
DEFAULT_SOURCE_SET = np_names.OWN_SOURCE_SET
ROLES_FIELD = "personamineRoles"  # per token, its role: Activation has no column for it, so the importer drops it
EXPLANATION_TYPE = "personamine"
PROVENANCE = "personamine_export.json"
PRECHECK_FEATURES = 64  # explained features whose scored windows are checked before anything is written
UNPARSED_NOTE = ("personamine: the explainer did not answer in the [EXPLANATION]: format; this is the first line of "
                 "its answer, and the scores are of this text")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_ROLE_JSON = [json.dumps(name) for name in ROLES]


@dataclass(frozen=True)
class Names:
    """The Neuronpedia identity of the export: model id, layer and source set (the source id is LAYER-SET)."""

    model: str
    layer: str
    source_set: str
    creator_id: str
    creator_name: str

    @property
    def source(self) -> str:
        return f"{self.layer}-{self.source_set}"

    @property
    def release(self) -> str:
        return f"personamine-{self.model}-{self.source_set}"

    def neuron(self, feature_id: int) -> dict[str, str]:
        """The three fields that name a feature in every table (as JSON text: they are in every row)."""
        return {"modelId": _Raw(json.dumps(self.model)), "layer": _Raw(json.dumps(self.source)),
                "index": _Raw(f'"{int(feature_id)}"')}


def neuronpedia_names(attrs: dict, *, model_id: str | None = None, source_set: str | None = None,
                      creator_id: str = CREATOR_ID, creator_name: str = CREATOR_NAME) -> Names:
    """The mining file's model, layer and SAE in Neuronpedia's naming: an SAE Neuronpedia hosts keeps its ids
    (``llama3.1-8b-it`` / ``15-resid-post-aa``); any other gets ``np_names.model_id`` of its model, the mined layer
    and the source set ``personamine``. ``model_id`` and ``source_set`` override."""
    try:
        model, layer, hosted_set = np_names.split_sae_id(str(attrs.get("sae_neuronpedia") or ""))
    except ValueError:  # not hosted (or an id of another shape, which the names below replace)
        model, layer, hosted_set = np_names.model_id(str(attrs.get("model", ""))), str(attrs.get("layer", "")), None
    model = model_id or model
    chosen = source_set or hosted_set or DEFAULT_SOURCE_SET
    for what, value in (("model id", model), ("source set", chosen)):
        if not np_names.NAME.match(value):
            raise PersonamineError(f"Neuronpedia {what} {value!r} may hold only letters, digits, '.', '_' and '-' "
                                   "(it names a directory and a database key)")
    if not layer.isdigit():
        raise PersonamineError(f"the mining file names no layer ({layer!r}): Neuronpedia's source id is LAYER-SET")
    if not creator_id or not creator_name:
        raise PersonamineError("the creator id and name must not be empty (Neuronpedia requires both)")
    return Names(model, layer, chosen, creator_id, creator_name)


# ------------------------------------------------------------------------------------------------ JSON lines


class _Raw(str):
    """Text that is already JSON (float arrays, formatted once, and cached token strings)."""


def _json(value: Any) -> str:
    if isinstance(value, _Raw):
        return value
    if type(value) is int:  # the most common case after _Raw, and json.dumps is slow for it
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _record(fields: dict[str, Any]) -> str:
    return "{" + ",".join(f'"{key}":{_json(value)}' for key, value in fields.items()) + "}"


def _floats(values: np.ndarray) -> _Raw:
    """float32 values as a JSON array, each in the shortest decimal that reads back as the same float32 (zeros as
    0): exact, and a third of the size of their float64 forms."""
    v = np.asarray(values, np.float32).ravel()
    if not np.isfinite(v).all():  # a mining file holds none (a run stops, or reads them as 0): JSON has no NaN
        raise PersonamineError("the mining file holds a value that is not finite; it cannot be exported")
    text = np.full(v.size, "0", dtype=object)
    nonzero = np.flatnonzero(v)
    if nonzero.size:
        text[nonzero] = v[nonzero].astype(str)
    return _Raw("[" + ",".join(text.tolist()) + "]")


def _float32(value: float) -> _Raw:
    v = np.float32(value)
    if not np.isfinite(v):
        raise PersonamineError("the mining file holds a value that is not finite; it cannot be exported")
    return _Raw(str(v) if v != 0 else "0")


def cuid(*parts: object) -> str:
    """A cuid-shaped id (``c`` and 24 base-36 characters) hashed from ``parts``: an export written twice has the
    same ids, so importing it again adds nothing (the importer skips rows whose id exists)."""
    n = int.from_bytes(hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).digest(), "big")
    out = []
    for _ in range(24):
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "c" + "".join(out)


class _Tokens:
    """Token ids as JSON arrays of their text (``MineResults.token_text``), each token's JSON made once per run."""

    def __init__(self) -> None:
        self.json: dict[int, str] = {}

    def __call__(self, res: MineResults, ids: np.ndarray) -> _Raw:
        cache = self.json
        parts = []
        for t in ids.tolist():
            text = cache.get(t)
            if text is None:
                text = cache[t] = json.dumps(res.token_text(t))
            parts.append(text)
        return _Raw("[" + ",".join(parts) + "]")


class _BatchFile:
    """A ``batch-N.jsonl.gz`` opened on its first line, so a batch with nothing to say leaves no file (the importer
    cannot read an empty one). gzip with mtime 0: the same export gives the same bytes."""

    def __init__(self, path: Path) -> None:
        self.path, self.lines = path, 0
        self._raw = self._gz = None

    def write(self, line: str) -> None:
        if self._gz is None:
            self.path.parent.mkdir(exist_ok=True)
            self._raw = open(self.path, "wb")
            self._gz = gzip.GzipFile(filename="", mode="wb", compresslevel=5, fileobj=self._raw, mtime=0)
        self._gz.write(line.encode("utf-8") + b"\n")
        self.lines += 1

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
            self._raw.close()


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(_record(row) + "\n" for row in rows), encoding="utf-8")


# ------------------------------------------------------------------------------------------------ inputs


def _read_header(path: Path) -> tuple[dict, np.ndarray]:
    """The mining file's attributes and feature ids, without its arrays (an all-features file holds GBs)."""
    try:
        with open_h5(path, FORMAT, FORMAT_VERSION, "mining", opened_as="results") as f:
            return plain_attrs(f), np.asarray(f["feature_ids"][()], np.int64)
    except (KeyError, OSError) as exc:
        raise PersonamineError(f"{str(path)!r} is damaged or incomplete: {exc}") from exc


@dataclass
class _Explained:
    """An explanations file checked against the mining file: its explained features and their scored windows."""

    results: ExplanationResults
    rows: dict[int, int]  # feature -> row, for every feature with an explanation (the explainer may have failed)
    windows: dict[int, set[tuple[str, int, int]]] = field(default_factory=dict)  # (source, document, window_start)


def _explained(path: str | Path, results_path: Path, feature_ids: np.ndarray) -> _Explained:
    ex = read_explanations(path, calls=False)  # the calls (every prompt) are the bulk of the file; none is exported
    held = set(feature_ids.tolist())
    stray = [int(f) for f in ex.feature_ids.tolist() if int(f) not in held]
    if stray:
        raise PersonamineError(f"{str(ex.path)!r} explains feature {stray[0]}, which {str(results_path)!r} does not "
                               f"hold ({len(stray)} such): it was made from another mining file"
                               f"{_made_from(ex)}")
    out = _Explained(ex, {int(f): r for r, f in enumerate(ex.feature_ids.tolist()) if ex.explanations[r]})
    for a in ex.answers:
        out.windows.setdefault(a.feature_id, set()).add((a.source, a.document, a.window_start))
    return out


def _made_from(ex: ExplanationResults) -> str:
    named = ex.attrs.get("results_file")
    return f" ({named!r}, it says)" if named else ""


def _check_windows(res: MineResults, explained: _Explained, feature_ids: list[int]) -> None:
    """Every window the explanations were scored on is one of the mining file's windows of that feature."""
    for fid in feature_ids:
        wanted = explained.windows.get(fid)
        if not wanted:
            continue
        held = {("top", e["document"], e["window_start"]) for e in res.examples(fid)}
        held |= {("interval", e["document"], e["window_start"])
                 for windows in res.interval_samples(fid).values() for e in windows}
        held |= {("negative", e["document"], e["window_start"]) for e in res.non_activating(fid)}
        missing = sorted(wanted - held)
        if missing:
            source, document, start = missing[0]
            raise PersonamineError(
                f"{str(explained.results.path)!r} was not made from {str(res.path)!r}: feature {fid} was scored on "
                f"a {source} window (document {document}, start {start}) that the mining file does not hold "
                f"({len(missing)} such){_made_from(explained.results)}")


def _check_discovery(disc: Any, attrs: dict, results_path: Path) -> None:
    for key in ("model", "layer", "sae"):
        if key in disc.attrs and key in attrs and str(disc.attrs[key]) != str(attrs[key]):
            raise PersonamineError(f"{str(disc.path)!r} ranks the features of {key} {disc.attrs[key]!r}, but "
                                   f"{str(results_path)!r} was mined with {attrs[key]!r}: it is for another run")


# ------------------------------------------------------------------------------------------------ rows


def _feature_row(res: MineResults, i: int, fid: int, names: Names, tokens: _Tokens) -> dict[str, Any]:
    counts = res.histogram[i]
    nonzero = np.flatnonzero(counts)
    lo, hi = (int(nonzero[0]), int(nonzero[-1]) + 1) if nonzero.size else (0, 0)
    edges = res.histogram_edges
    row: dict[str, Any] = {
        **names.neuron(fid), "sourceSetName": names.source_set, "creatorId": names.creator_id,
        "maxActApprox": _float32(res.max[i]), "frac_nonzero": float(res.density[i]),
        # The histogram's log bins over their non-empty range, each bar at its bin's geometric centre.
        "freq_hist_data_bar_heights": counts[lo:hi].tolist(),
        "freq_hist_data_bar_values": _floats(np.sqrt(edges[lo:hi] * edges[lo + 1:hi + 1])),
    }
    lens = res.logit_lens
    if lens is not None:
        row["pos_str"] = tokens(res, lens.promoted_ids[i].astype(np.int64))
        row["pos_values"] = _floats(lens.promoted_values[i])
        row["neg_str"] = tokens(res, lens.suppressed_ids[i].astype(np.int64))
        row["neg_values"] = _floats(lens.suppressed_values[i])
    return row


def _activation_row(res: MineResults, example: dict, key: tuple, head: dict[str, _Raw], tokens: _Tokens,
                    turns: bool, bin_: tuple[_Raw, _Raw, Any], data_source: _Raw) -> str | None:
    keep = res.shown(example)  # all but the sink prefix: a conversation keeps its template's tokens
    values = example["activations"][keep]
    if not values.size:
        return None
    peak = int(np.argmax(values))  # unscored tokens hold 0, so the peak is the window's score
    row: dict[str, Any] = {
        "id": _Raw(f'"{cuid(*key)}"'), **head,
        "tokens": tokens(res, example["token_ids"][keep].astype(np.int64)), "values": _floats(values),
        "maxValue": _float32(values[peak]), "maxValueTokenIndex": peak, "minValue": _float32(values.min()),
        "binMin": bin_[0], "binMax": bin_[1], "binContains": bin_[2], "qualifyingTokenIndex": peak,
        "dataSource": data_source, "dataIndex": _Raw(f'"{int(example["document"])}"'),
    }
    if turns:
        row[ROLES_FIELD] = _Raw("[" + ",".join(_ROLE_JSON[r] for r in example["roles"][keep].tolist()) + "]")
    return _record(row)


def _activation_rows(res: MineResults, i: int, fid: int, names: Names, tokens: _Tokens, turns: bool) -> Iterator[str]:
    """The feature's top windows (binMin and binContains -1, binMax its maximum, as SAEDashboard writes its top
    group), then its interval samples, highest interval first, each with the interval's bounds and the share of
    the feature's activations in it."""
    head = {**names.neuron(fid), "creatorId": _Raw(json.dumps(names.creator_id))}
    data_source = _Raw(json.dumps(str(res.attrs.get("corpus", ""))))
    where = (names.model, names.source, fid)
    top = (_Raw("-1"), _float32(res.max[i]), -1)
    for rank, example in enumerate(res.examples(fid)):
        line = _activation_row(res, example, (*where, "top", rank), head, tokens, turns, top, data_source)
        if line is not None:
            yield line
    active = int(res.active_tokens[i])
    for interval, windows in sorted(res.interval_samples(fid).items(), reverse=True):
        low, high = res.interval_bounds(interval)
        # An interval is INTERVAL_STEP histogram bins (personamine.merge.samples), so its share is exact.
        inside = int(res.histogram[i, interval * INTERVAL_STEP:(interval + 1) * INTERVAL_STEP].sum())
        bin_ = (_float32(low), _float32(high), inside / active if active else 0.0)
        for j, example in enumerate(windows):
            line = _activation_row(res, example, (*where, "interval", interval, j), head, tokens, turns, bin_,
                                   data_source)
            if line is not None:
                yield line


def _explanation_rows(explained: _Explained, fid: int, names: Names) -> tuple[dict, list[dict]]:
    ex, row = explained.results, explained.rows[fid]
    model = str(ex.attrs.get("model") or "unknown")
    explanation_id = cuid(names.model, names.source, fid, "explanation", model)
    explanation = {"id": explanation_id, **names.neuron(fid), "authorId": names.creator_id,
                   "description": ex.explanations[row], "typeName": EXPLANATION_TYPE, "explanationModelName": model,
                   "notes": None if ex.parsed[row] else UNPARSED_NOTE}
    scores = []
    for scorer, metrics in ex.scores.items():
        value = float(metrics["balanced_accuracy"][row])
        if math.isnan(value):  # nothing answered: Neuronpedia's value is required
            continue
        details = {m: float(v[row]) for m, v in metrics.items() if not math.isnan(float(v[row]))}
        scores.append({"id": cuid(explanation_id, scorer), "initiatedByUserId": names.creator_id, "value": value,
                       "explanationId": explanation_id, "explanationScoreTypeName": f"personamine_{scorer}",
                       "explanationScoreModelName": model, "jsonDetails": json.dumps(details, sort_keys=True)})
    return explanation, scores


def _config_rows(explained: _Explained, names: Names) -> dict[str, list[dict]]:
    """The rows the explanation and score rows name (foreign keys: without them the insert fails), in the files of
    the ``config/`` directory of Neuronpedia's exports."""
    ex = explained.results
    model, backend = str(ex.attrs.get("model") or "unknown"), str(ex.attrs.get("backend", ""))
    creator = {"creatorName": names.creator_name}
    model_row = {"name": model, "displayName": model, "description": f"{model} ({backend} backend of personamine "
                                                                     "explain)", "featured": False, **creator}
    scorers = {"detection": "detection: the judge says which texts the feature fires on, given the explanation",
               "fuzzing": "fuzzing: the judge says whether the marked tokens are the ones the feature fires on"}
    return {
        "explanation_type.jsonl": [{
            "name": EXPLANATION_TYPE, "displayName": "personamine explain",
            "description": "An LLM reads a feature's top windows, activating tokens marked, and writes one line; "
                           "scored on held-out and non-activating windows (personamine explain).",
            "featured": False, "isAttention": False, "settings": json.dumps(ex.config, sort_keys=True), **creator,
            "creatorId": names.creator_id}],
        "explanation_model_type.jsonl": [model_row],
        "explanation_score_type.jsonl": [{
            "name": f"personamine_{s}", "displayName": f"personamine {s}",
            "description": scorers.get(s, s), "featured": False, "isAttention": False,
            "scoreDescription": "balanced accuracy over held-out activating and non-activating texts; jsonDetails "
                                "holds every metric", **creator, "creatorId": names.creator_id} for s in ex.scorers],
        "explanation_score_model.jsonl": [model_row],
    }


def _model_config(model: str) -> dict:
    """The model's ``config.json`` where it is on this machine (a local directory, the converted built-in model, the
    Hugging Face cache); never fetched: an export needs no network. {} when not found."""
    candidates: list[Path] = []
    if model.startswith("builtin:"):
        if model.strip().lower() == SMOLLM2_ID:
            candidates.append(cache_dir() / "models" / MODEL_DIRNAME / "config.json")
    else:
        candidates.append(Path(model).expanduser() / "config.json")
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            if isinstance(cached, str):
                candidates.append(Path(cached))
        except Exception:  # not a hub id (the hub's validators raise several types): nothing cached
            pass
    for path in candidates:
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        text = config.get("text_config")
        return text if isinstance(text, dict) else config
    return {}


def _meta_rows(attrs: dict, names: Names, conversations: bool) -> dict[str, dict]:
    model = str(attrs.get("model", ""))
    config = _model_config(model)
    hub = bool(re.fullmatch(r"[\w.-]+/[\w.-]+", model)) and not Path(model).expanduser().exists()
    sae = str(attrs.get("sae", ""))
    mine_config = json.loads(attrs.get("config", "{}") or "{}")
    sae_source = str(mine_config.get("sae", ""))
    corpus = str(attrs.get("corpus", ""))
    creator = {"creatorId": names.creator_id}
    description = f"SAE {sae}, mined by personamine over {corpus}"
    source = {
        "id": names.source, "modelId": names.model, "setName": names.source_set, **creator, "hasDashboards": True,
        "visibility": "PUBLIC", "dataset": corpus, "num_prompts": int(attrs.get("n_windows", 0)),
        "num_tokens_in_prompt": int(attrs.get("ctx_len", 0)),
        "notes": (f"mined by personamine {attrs.get('personamine_version', '?')}: "
                  f"{int(attrs.get('n_documents', 0)):,} documents, {int(attrs.get('n_tokens_scored', 0)):,} tokens "
                  f"scored; SAE {sae}"),
    }
    sae_id, local = mine_config.get("sae_id"), Path(sae_source).expanduser().exists()
    if re.fullmatch(r"[\w.-]+/[\w.-]+", sae_source) and not local:  # a hub repo, and the SAE's folder in it
        source["hfRepoId"] = sae_source
        if sae_id:
            source["hfFolderId"] = str(sae_id)
    elif sae_id and not local:  # a SAELens release and its sae_id
        source["saelensRelease"], source["saelensSaeId"] = sae_source, str(sae_id)
    return {
        "release.jsonl": {"name": names.release, "description": description, "descriptionShort": description,
                          "creatorName": names.creator_name, "creatorNameShort": names.creator_name, **creator,
                          "visibility": "PUBLIC", "urls": []},
        "model.jsonl": {
            "id": names.model, "displayName": model, "displayNameShort": names.model, **creator,
            "instruct": conversations or bool(re.search(r"instruct|chat|(^|[-_/])it($|[-_])", model, re.I)),
            # Where the model's config is not on this machine: the mined layer is its last known one.
            "layers": int(config.get("num_hidden_layers") or int(names.layer) + 1),
            "neuronsPerLayer": int(config.get("intermediate_size") or 0),
            "dimension": int(config["hidden_size"]) if config.get("hidden_size") else None,
            "owner": model.split("/")[0] if hub else "local", "visibility": "PUBLIC",
            "website": f"https://huggingface.co/{model}" if hub else None},
        "sourceset.jsonl": {"modelId": names.model, "name": names.source_set, **creator,
                            "creatorName": names.creator_name, "description": description, "visibility": "PUBLIC",
                            "hasDashboards": True, "releaseName": names.release, "urls": []},
        "source.jsonl": source,
    }


def _list_rows(disc: Any, names: Names, feature_ids: set[int]) -> tuple[dict, list[dict]]:
    """A Neuronpedia List of the discovered features the mining file holds, best first, each with its ranking."""
    list_id = cuid(names.model, names.source, "list", disc.path.name)
    n_persona, n_control = len(disc.persona_text), len(disc.control_text)
    against = f" vs {n_control} controls" if disc.has_controls else ""
    head = {"id": list_id, "name": f"persona features ({disc.path.name})",
            "description": f"personamine discover: {n_persona} self-referential prompts{against}, features ranked "
                           "by mean activation on the prompts minus the controls", "userId": names.creator_id}
    if disc.persona_text:
        head["defaultTestText"] = disc.persona_text[0]
    entries = []
    for rank, fid in enumerate(disc.feature_ids.tolist(), 1):
        if int(fid) not in feature_ids:
            continue
        r = rank - 1
        fires = f"fires on {disc.persona_firing[r]:.0%} of prompts"
        if disc.has_controls:
            fires += f", {disc.control_firing[r]:.0%} of controls"
        entries.append({**names.neuron(fid), "listId": list_id, "userId": names.creator_id,
                        "description": f"rank {rank} of {disc.feature_ids.size}: score {disc.score[r]:.4g} "
                                       f"(mean {disc.persona_mean[r]:.4g} on prompts, {disc.control_mean[r]:.4g} on "
                                       f"controls; {fires})"})
    return head, entries


# ------------------------------------------------------------------------------------------------ the export


def _remove_abandoned(target: Path) -> None:
    """The temp directories of exports to ``target`` whose process is gone (killed: an interrupt cleans up)."""
    for path in target.parent.glob(f".{glob.escape(target.name)}.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not (kind.endswith((".tmp", ".old")) and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
            if int(pid) != os.getpid():
                continue  # another export of the same source is running
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temp directory beside ``target``, renamed into place on a clean exit (replacing an earlier export there);
    on any error or interrupt it goes, with the directories made for it, and the error is one line."""
    made = [p for p in (target.parent, *target.parent.parents) if not p.exists()]  # deepest first
    ensure_dir(target.parent, "export directory")
    _remove_abandoned(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        try:
            tmp.mkdir()
            yield tmp
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            raise PersonamineError(f"cannot write the export {str(target)!r}: {exc.strerror or exc}; the partial "
                                   "export was removed") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in made:
            try:
                directory.rmdir()
            except OSError:
                break
        raise


def export_neuronpedia(results: str | Path, output: str | Path, *, explanations: str | Path | None = None,
                       discovery: str | Path | None = None, source_set: str | None = None,
                       model_id: str | None = None, creator_id: str = CREATOR_ID, creator_name: str = CREATOR_NAME,
                       batch_size: int = BATCH_FEATURES) -> Path:
    """Write a mining file as Neuronpedia's import bundle under ``output``; return the source's directory,
    ``output/{model}/{layer}-{source set}``.

    ``explanations``: a ``personamine explain`` file of this mining file: its explanations become Explanation rows
    (one not in the ``[EXPLANATION]:`` format says so in ``notes``) and their scores ExplanationScore rows.
    ``discovery``: a discovery file of the same model, layer and SAE: a Neuronpedia List of the discovered features.
    ``source_set`` and ``model_id`` override the Neuronpedia names (default: those of an SAE Neuronpedia hosts, else
    the model's name and ``personamine``); ``creator_id`` and ``creator_name`` fill the creator and author fields.
    ``batch_size``: features per batch file, and per read of the mining file. Nothing is written if an input is
    refused."""
    if batch_size < 1:
        raise PersonamineError(f"batch_size must be at least 1 (got {batch_size})")
    results = Path(results)
    out = check_writable(output, "export directory", directory=True)
    attrs, feature_ids = _read_header(results)
    names = neuronpedia_names(attrs, model_id=model_id, source_set=source_set, creator_id=creator_id,
                              creator_name=creator_name)
    target = out / names.model / names.source
    if target.exists() and not (target / PROVENANCE).is_file():
        raise PersonamineError(f"{str(target)!r} exists and is not a personamine export: move it, or choose "
                               "another --output or --source-set")
    explained = _explained(explanations, results, feature_ids) if explanations is not None else None
    disc = None
    if discovery is not None:
        disc = read_discovery(discovery)
        _check_discovery(disc, attrs, results)
    if explained is not None:  # a mismatched file is refused now, not after hours of writing
        probe = [f for f in feature_ids.tolist() if explained.windows.get(int(f))][:PRECHECK_FEATURES]
        if probe:
            _check_windows(read_results(results, probe), explained, probe)

    counts = dict.fromkeys(("features", "activations", "explanations", "explanations_unparsed", "explanation_scores",
                            "list_entries"), 0)
    never_active: list[int] = []
    conversations = False
    tokens = _Tokens()
    with _staged(target) as tmp:
        for n, lo in enumerate(range(0, feature_ids.size, batch_size)):
            batch = feature_ids[lo:lo + batch_size].tolist()
            res = read_results(results, batch)
            turns = res.has_turns() and res.roles is not None
            conversations |= turns
            if explained is not None:
                _check_windows(res, explained, batch)
            files = {kind: _BatchFile(tmp / kind / f"batch-{n}.jsonl.gz")
                     for kind in ("features", "activations", "explanations", "explanation_scores")}
            try:
                for i, fid in enumerate(res.feature_ids.tolist()):
                    files["features"].write(_record(_feature_row(res, i, fid, names, tokens)))
                    before = files["activations"].lines
                    for line in _activation_rows(res, i, fid, names, tokens, turns):
                        files["activations"].write(line)
                    if files["activations"].lines == before:
                        never_active.append(int(fid))
                    if explained is not None and fid in explained.rows:
                        explanation, scores = _explanation_rows(explained, fid, names)
                        files["explanations"].write(_record(explanation))
                        counts["explanations_unparsed"] += explanation["notes"] is not None
                        for score in scores:
                            files["explanation_scores"].write(_record(score))
            finally:
                for kind, file in files.items():
                    file.close()
                    counts[kind] += file.lines
            del res
        meta = _meta_rows(attrs, names, conversations)
        for name, row in meta.items():
            _jsonl(tmp / name, [row])
        if counts["explanations"]:
            for name, rows in _config_rows(explained, names).items():
                _jsonl(tmp / "config" / name, rows)
        if disc is not None:
            head, entries = _list_rows(disc, names, set(feature_ids.tolist()))
            _jsonl(tmp / "lists" / "list.jsonl", [head])
            if entries:
                _jsonl(tmp / "lists" / "lists_on_neurons.jsonl", entries)
            counts["list_entries"] = len(entries)
        (tmp / "skipped_indexes.json").write_text(json.dumps(
            {"model_id": names.model, "layer": names.layer, "sae_set": names.source_set,
             "skipped_indexes": never_active}) + "\n")

        (tmp / PROVENANCE).write_text(json.dumps({
            "personamine_version": __version__, "results": str(results),
            "explanations": str(explanations) if explanations is not None else None,
            "discovery": str(discovery) if discovery is not None else None,
            "mined": {key: attrs.get(key) for key in ("model", "layer", "sae", "corpus", "ctx_len", "top_k")},
            "neuronpedia": {"modelId": names.model, "source": names.source, "sourceSetName": names.source_set,
                            "release": names.release, "creatorId": names.creator_id},
            "batch_size": batch_size, "roles_field": ROLES_FIELD if conversations else None,
            "counts": counts}, indent=1, default=_plain) + "\n")
    return target


def _plain(value: Any) -> Any:
    """numpy scalars in the file's attributes, for json."""
    return value.item() if isinstance(value, np.generic) else str(value)


def describe_export(path: str | Path) -> str:
    """One line: what an export directory holds (from its ``personamine_export.json``)."""
    info = json.loads((Path(path) / PROVENANCE).read_text())
    c = info["counts"]
    parts = [f"{c['features']:,} features", f"{c['activations']:,} activation records"]
    if info["explanations"] is not None:
        unparsed = f" ({c['explanations_unparsed']:,} not in the format)" if c["explanations_unparsed"] else ""
        parts.append(f"{c['explanations']:,} explanations{unparsed} with {c['explanation_scores']:,} scores")
    if info["discovery"] is not None:
        parts.append(f"a list of {c['list_entries']:,} discovered features")
    return f"{path}: " + ", ".join(parts)
