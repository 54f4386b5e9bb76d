"""``personamine export neuronpedia``: every row of the bundle validated against a JSON schema written here from
Neuronpedia's public table definitions (apps/webapp/prisma/schema.prisma: column types, and which columns an insert
must name), every value traced back to ``read_results`` (and ``read_explanations``, ``read_discovery``) on the same
file, for a plain-text run, a conversation run, an all-features run and a run with explanations; gzip files that the
``gzip`` tool opens; streaming in batches with bounded memory; bad input refused in one line with nothing written."""

from __future__ import annotations

import gzip
import json
import math
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from chat_server import ChatServer
from fixtures import REPO, SAE_LAYER, personamine_cli, run_discovery, synthetic_results, write_chat_corpus_jsonl
from jsonschema import Draft202012Validator, validators

import personamine
from personamine.export.neuronpedia import PROVENANCE
from personamine.files.explain import METRICS, Answer, ExplanationResults, write_explanations
from personamine.jobs.cli import main
from personamine.roles import ROLES

# ------------------------------------------------------------------------------------------------ the schema
# Columns as schema.prisma declares them: NAME TYPE, "?" optional, "=" a database default. An insert must name
# every column that is neither (jsonb_to_recordset leaves the others to the database); ids whose default is
# Prisma's cuid() are made by the client, not the database, so a bulk import must name them too ("!").

TABLES = {
    "Neuron": """modelId String; layer String; index String; sourceSetName String?; creatorId String?;
        createdAt DateTime=; maxActApprox Float?=; hasVector Boolean=; vector Float[]=; vectorLabel String?;
        vectorDefaultSteerStrength Float?=; hookName String?; topkCosSimIndices Int[]=; topkCosSimValues Float[]=;
        neuron_alignment_indices Int[]=; neuron_alignment_values Float[]=; neuron_alignment_l1 Float[]=;
        correlated_neurons_indices Int[]=; correlated_neurons_pearson Float[]=; correlated_neurons_l1 Float[]=;
        correlated_features_indices Int[]=; correlated_features_pearson Float[]=; correlated_features_l1 Float[]=;
        neg_str String[]=; neg_values Float[]=; pos_str String[]=; pos_values Float[]=; frac_nonzero Float=;
        freq_hist_data_bar_heights Float[]=; freq_hist_data_bar_values Float[]=;
        logits_hist_data_bar_heights Float[]=; logits_hist_data_bar_values Float[]=; decoder_weights_dist Float[]=;
        umap_cluster Int?; umap_log_feature_sparsity Float?; umap_x Float?; umap_y Float?""",
    "Activation": """id String!; tokens String[]; dataIndex String?; index String; layer String; modelId String;
        dataSource String?; maxValue Float; maxValueTokenIndex Int; minValue Float; values Float[];
        dfaValues Float[]=; dfaTargetIndex Int?; dfaMaxValue Float?; zQIndices Int[]=; zKIndices Int[]=;
        zValues Float[]=; creatorId String; createdAt DateTime=; lossValues Float[]=; logitContributions String?;
        binMin Float?; binMax Float?; binContains Float?; qualifyingTokenIndex Int?""",
    "Explanation": """id String!; modelId String; layer String; index String; description String;
        authorId String; triggeredByUserId String?; notes String?; scoreV1 Float=; scoreV2 Float?;
        umap_x Float?=; umap_y Float?=; umap_cluster Int?=; umap_log_feature_sparsity Float?=; typeName String?;
        explanationModelName String?; createdAt DateTime=; updatedAt DateTime=""",
    "ExplanationScore": """id String!; initiatedByUserId String; value Float; explanationId String;
        explanationScoreTypeName String; explanationScoreModelName String; jsonDetails String=; createdAt DateTime=""",
    "ExplanationType": """name String; displayName String; description String; featured Boolean=;
        isAttention Boolean=; explainerModelSettingsId String?; settings String?; url String?; creatorName String;
        creatorId String; createdAt DateTime=; updatedAt DateTime=""",
    "ExplanationModelType": """name String; displayName String; description String; featured Boolean=;
        openRouterModelId String?; url String?; creatorName String; createdAt DateTime=; updatedAt DateTime=""",
    "ExplanationScoreType": """name String; displayName String; description String; featured Boolean=;
        isAttention Boolean=; scoreDescription String?; scorerModel String?; settings String?; url String?;
        creatorName String; creatorId String; createdAt DateTime=; updatedAt DateTime=""",
    "ExplanationScoreModel": """name String; displayName String; description String; featured Boolean=;
        openRouterModelId String?; url String?; creatorName String; createdAt DateTime=; updatedAt DateTime=""",
    "Model": """id String; displayNameShort String=; displayName String=; creatorId String; tlensId String?;
        openRouterId String?; dimension Int?; thinking Boolean=; visibility Visibility=;
        defaultSourceSetName String?; defaultSourceId String?; defaultGraphSourceSetName String?;
        inferenceEnabled Boolean=; instruct Boolean=; layers Int; neuronsPerLayer Int; createdAt DateTime=;
        owner String; updatedAt DateTime=; website String?""",
    "Source": """id String; modelId String; hasDashboards Boolean=; inferenceEnabled Boolean=; saelensConfig Json?;
        saelensRelease String?; saelensSaeId String?; hfRepoId String?; hfFolderId String?; visibility Visibility=;
        defaultOfModelId String?; setName String; creatorId String; hasUmap Boolean=; hasUmapLogSparsity Boolean=;
        hasUmapClusters Boolean=; num_prompts Int?; num_tokens_in_prompt Int?; dataset String?; notes String?;
        cosSimMatchModelId String?; cosSimMatchSourceId String?; createdAt DateTime=""",
    "SourceSet": """modelId String; name String; hasDashboards Boolean=; allowInferenceSearch Boolean=;
        visibility Visibility=; description String; type String=; creatorName String; urls String[];
        creatorEmail String?; creatorId String; releaseName String?; hasGraphs Boolean=; graphEnabled Boolean=;
        similarityMatrixEnabled Boolean=; defaultOfModelId String?; defaultGraphModelId String?; defaultRange Int=;
        defaultShowBreaks Boolean=; showDfa Boolean=; showCorrelated Boolean=; showHeadAttribution Boolean=;
        showUmap Boolean=; createdAt DateTime=""",
    "SourceRelease": """name String; visibility Visibility=; isNewUi Boolean=; featured Boolean=;
        description String; descriptionShort String?; urls String[]; creatorEmail String?; creatorName String;
        creatorNameShort String?; creatorId String; defaultSourceSetName String?; defaultSourceId String?;
        defaultUmapSourceIds String[]=; createdAt DateTime=""",
    "List": """id String!; name String; description String; defaultTestText String?; userId String;
        createdAt DateTime=; updatedAt DateTime=""",
    "ListsOnNeurons": """modelId String; layer String; index String; listId String; description String?;
        addedAt DateTime=; userId String""",
}
SCALARS = {"String": {"type": "string"}, "Int": {"type": "integer"}, "Float": {"type": "number"},
           "Boolean": {"type": "boolean"}, "Json": {}, "DateTime": {"type": "string", "format": "date-time"},
           "Visibility": {"enum": ["PUBLIC", "UNLISTED", "PRIVATE"]}}
# The one column personamine adds, documented in docs/export.md: the importer keeps only the table's columns.
EXTRA = {"Activation": {"personamineRoles": {"type": "array", "items": {"enum": list(ROLES)}}}}
# Which table each file of the bundle holds rows of.
FILES = {"features": "Neuron", "activations": "Activation", "explanations": "Explanation",
         "explanation_scores": "ExplanationScore", "model.jsonl": "Model", "source.jsonl": "Source",
         "sourceset.jsonl": "SourceSet", "release.jsonl": "SourceRelease",
         "config/explanation_type.jsonl": "ExplanationType", "config/explanation_model_type.jsonl":
         "ExplanationModelType", "config/explanation_score_type.jsonl": "ExplanationScoreType",
         "config/explanation_score_model.jsonl": "ExplanationScoreModel", "lists/list.jsonl": "List",
         "lists/lists_on_neurons.jsonl": "ListsOnNeurons"}
# "integer" is a JSON number without a fraction: 2.0 would pass jsonschema's default check and fail Postgres's int.
_STRICT = validators.extend(Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool)))


def schema(table: str) -> dict:
    properties, required = {}, []
    for column in TABLES[table].split(";"):
        name, kind = column.split()
        base = kind.rstrip("=!")
        optional, many = base.endswith("?"), base.rstrip("?").endswith("[]")
        scalar = SCALARS[base.rstrip("?").removesuffix("[]")]
        prop = {"type": "array", "items": scalar} if many else scalar
        properties[name] = {"anyOf": [prop, {"type": "null"}]} if optional else prop
        if kind.endswith("!") or not (optional or kind.endswith("=")):
            required.append(name)
    properties.update(EXTRA.get(table, {}))
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


VALIDATORS = {table: _STRICT(schema(table)) for table in TABLES}


def read_lines(path: Path) -> list[dict]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def load_bundle(root: Path) -> dict[str, list[dict]]:
    """Every row of the bundle, by file kind (batch files concatenated in batch order), each validated."""
    rows: dict[str, list[dict]] = {}
    seen = set()
    for kind, table in FILES.items():
        path = root / kind
        paths = (sorted(path.glob("batch-*.jsonl.gz"), key=lambda p: int(re.findall(r"\d+", p.name)[0]))
                 if path.is_dir() else [path] if path.is_file() else [])
        for p in paths:
            seen.add(p)
            lines = read_lines(p)
            assert lines, f"{p}: Neuronpedia's importer cannot read an empty file"
            # The importer takes a file's columns from its first line: every line must name the same ones.
            assert all(list(line) == list(lines[0]) for line in lines), p
            for line in lines:
                errors = sorted(VALIDATORS[table].iter_errors(line), key=lambda e: e.path)
                assert not errors, f"{p}: {errors[0].message} in {json.dumps(line)[:300]}"
            rows.setdefault(kind, []).extend(lines)
    others = {p for p in root.rglob("*") if p.is_file()} - seen
    assert {p.name for p in others} == {"skipped_indexes.json", "personamine_export.json"}
    return rows


def f32(values) -> np.ndarray:
    return np.asarray(values, np.float64).astype(np.float32)


def trace(root: Path, results: Path, *, conversations: bool = False) -> dict[str, list[dict]]:
    """Every feature and activation row equals what ``read_results`` reads from the same file."""
    rows = load_bundle(root)
    res = personamine.read_results(results)
    assert [r["index"] for r in rows["features"]] == [str(f) for f in res.feature_ids.tolist()]
    acts: dict[str, list[dict]] = {}
    for row in rows.get("activations", []):
        acts.setdefault(row["index"], []).append(row)
    assert len({r["id"] for r in rows.get("activations", [])}) == len(rows.get("activations", []))
    info = json.loads((root / "personamine_export.json").read_text())
    model, source = info["neuronpedia"]["modelId"], info["neuronpedia"]["source"]
    edges = res.histogram_edges
    for i, fid in enumerate(res.feature_ids.tolist()):
        feature = rows["features"][i]
        assert (feature["modelId"], feature["layer"]) == (model, source)
        assert f32(feature["maxActApprox"]) == res.max[i] and feature["frac_nonzero"] == res.density[i]
        nonzero = np.flatnonzero(res.histogram[i])
        span = slice(nonzero[0], nonzero[-1] + 1) if nonzero.size else slice(0, 0)
        assert feature["freq_hist_data_bar_heights"] == res.histogram[i, span].tolist()
        lows, highs = edges[:-1][span], edges[1:][span]
        assert (f32(feature["freq_hist_data_bar_values"]) == f32(np.sqrt(lows * highs))).all()
        lens = res.logit_lens
        assert feature["pos_str"] == [res.token_text(t) for t in lens.promoted_ids[i].tolist()]
        assert feature["neg_str"] == [res.token_text(t) for t in lens.suppressed_ids[i].tolist()]
        assert (f32(feature["pos_values"]) == lens.promoted_values[i]).all()
        assert (f32(feature["neg_values"]) == lens.suppressed_values[i]).all()
        # Top windows (as SAEDashboard writes its top group), then interval samples, highest interval first.
        expected = [(ex, -1, res.max[i], -1) for ex in res.examples(fid)]
        for interval, windows in sorted(res.interval_samples(fid).items(), reverse=True):
            low, high = res.interval_bounds(interval)
            inside = (edges[:-1] >= low * (1 - 1e-9)) & (edges[1:] <= high * (1 + 1e-9))
            share = res.histogram[i, inside].sum() / res.active_tokens[i]
            expected += [(ex, low, high, share) for ex in windows]
        got = acts.get(str(fid), [])
        assert len(got) == len(expected), fid
        for row, (ex, low, high, share) in zip(got, expected, strict=True):
            keep = res.shown(ex)
            values = ex["activations"][keep]
            assert row["tokens"] == [res.token_text(t) for t in ex["token_ids"][keep].tolist()]
            assert (f32(row["values"]) == values).all() and len(row["values"]) == len(row["tokens"])
            assert f32(row["maxValue"]) == np.float32(ex["score"]) == values.max()  # the peak is the window's score
            assert row["values"][row["maxValueTokenIndex"]] == row["maxValue"]
            assert row["qualifyingTokenIndex"] == row["maxValueTokenIndex"] and row["minValue"] == values.min()
            assert (f32(row["binMin"]), f32(row["binMax"])) == (f32(low), f32(high))
            assert row["binContains"] == pytest.approx(share, abs=1e-12)
            assert row["dataSource"] == res.attrs["corpus"] and row["dataIndex"] == str(ex["document"])
            assert (row["modelId"], row["layer"], row["index"]) == (model, source, str(fid))
            if conversations:
                assert row["personamineRoles"] == [ROLES[r] for r in ex["roles"][keep].tolist()]
            else:
                assert "personamineRoles" not in row
    skipped = json.loads((root / "skipped_indexes.json").read_text())["skipped_indexes"]
    assert skipped == [f for f in res.feature_ids.tolist() if str(f) not in acts]
    assert info["counts"]["features"] == res.feature_ids.size
    assert info["counts"]["activations"] == len(rows.get("activations", []))
    return rows


# ------------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def plain(tiny_mining_file, tmp_path_factory) -> Path:
    """The session's plain-text mining file, exported four features a batch (three batches)."""
    out = tmp_path_factory.mktemp("np-plain")
    return personamine.export_neuronpedia(tiny_mining_file, out, batch_size=4)


@pytest.fixture(scope="module")
def chat(tiny_model_dir, tiny_sae_dir, tmp_path_factory) -> Path:
    """Fixture conversations mined with only the Assistant's turns scored."""
    tmp = tmp_path_factory.mktemp("np-chat")
    return personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                            corpus=str(write_chat_corpus_jsonl(tmp / "chat.jsonl")), messages_column="messages",
                            score_roles=["assistant"], features=list(range(0, 256, 16)), ctx_len=128, example_len=24,
                            top_k=4, samples_per_interval=2, output=str(tmp / "chat.h5"), progress=False)


@pytest.fixture(scope="module")
def explained(tiny_model_dir, tiny_mining_file, tmp_path_factory) -> Path:
    """A real ``personamine explain`` of two features over HTTP, from the tiny model behind a real server; its
    explanations are made to follow the format (a random model never writes ``[EXPLANATION]:``)."""
    tmp = tmp_path_factory.mktemp("np-explained")

    def follow_format(reply: dict) -> None:
        choice = reply["choices"][0]
        if "logprobs" not in choice:  # an explanation request (the scoring ones ask for log-probabilities)
            choice["message"]["content"] = "[EXPLANATION]: fires on " + choice["message"]["content"]

    with ChatServer(tiny_model_dir, edit=follow_format) as server:
        return personamine.explain(tiny_mining_file, backend="openai", base_url=server.url, features=[4, 28],
                                   n_explain=3, n_test=2, n_negatives=2, explanation_tokens=8, top_logprobs=600,
                                   cache_dir=str(tmp / "cache"), output=str(tmp / "ex.h5"), progress=False)


N_ALL = 600


@pytest.fixture(scope="module")
def all_features(tmp_path_factory) -> Path:
    """Every feature of a 600-feature SAE, through the real writer (no model run); a few never fire."""
    tmp = tmp_path_factory.mktemp("np-all")
    path = synthetic_results(tmp / "all.h5", N_ALL, top_k=3, ctx_len=12, per_interval=2, windows_per_feature=4,
                             feature_ids=np.arange(N_ALL), attrs={"dict_size": N_ALL})
    return path


def test_plain_run(plain, tiny_mining_file):
    rows = trace(plain, tiny_mining_file)
    res = personamine.read_results(tiny_mining_file)
    # DIR/MODEL/LAYER-SET: an SAE Neuronpedia does not host gets the model's name and the set "personamine".
    assert plain.name == f"{SAE_LAYER}-personamine" and plain.parent.name == Path(res.attrs["model"]).name.lower()
    assert sorted(p.name for p in (plain / "features").iterdir()) == [f"batch-{n}.jsonl.gz" for n in range(3)]
    (model,), (source,), (sourceset,), (release,) = (rows[k] for k in ("model.jsonl", "source.jsonl",
                                                                        "sourceset.jsonl", "release.jsonl"))
    assert model["id"] == plain.parent.name and model["displayName"] == res.attrs["model"]
    config = json.loads((Path(res.attrs["model"]) / "config.json").read_text())  # the model's own, found locally
    assert (model["layers"], model["neuronsPerLayer"], model["dimension"]) == (
        config["num_hidden_layers"], config["intermediate_size"], config["hidden_size"])
    assert source["id"] == plain.name and source["setName"] == sourceset["name"] == "personamine"
    assert (source["dataset"], source["num_tokens_in_prompt"], source["num_prompts"]) == (
        res.attrs["corpus"], res.attrs["ctx_len"], res.attrs["n_windows"])
    assert sourceset["releaseName"] == release["name"]
    assert {r["creatorId"] for r in rows["features"] + rows["activations"]} == {"clkht01d40000jv08hvalcvly"}


def test_gzip_files_open_in_the_gzip_tool(plain):
    if shutil.which("gzip") is None:
        pytest.fail("the gzip tool is missing: apt-get install -y gzip")
    for path in sorted(plain.rglob("*.gz")):
        done = subprocess.run(["gzip", "-t", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        text = subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout.decode("utf-8")
        assert [json.loads(line) for line in text.splitlines()] == read_lines(path)


def test_export_again_gives_the_same_bytes_and_replaces_the_first(plain, tiny_mining_file, tmp_path):
    again = personamine.export_neuronpedia(tiny_mining_file, tmp_path, batch_size=4)

    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE)

    assert files(plain) == files(again)
    # Ids are hashed from what they name, and gzip stores no time: the same file gives the same bytes.
    assert all((plain / f).read_bytes() == (again / f).read_bytes() for f in files(plain))
    (again / "features" / "stale.txt").write_text("from the first export")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs: the temp directory of an export that was killed
    killed = again.with_name(f".{again.name}.tmp-{gone.pid}")
    (killed / "features").mkdir(parents=True)
    assert personamine.export_neuronpedia(tiny_mining_file, tmp_path, batch_size=4) == again
    assert not (again / "features" / "stale.txt").exists()
    assert [p.name for p in again.parent.iterdir()] == [again.name]  # no temp or old directory left


def test_conversation_run_keeps_chat_tokens_and_their_roles(chat, tmp_path):
    root = personamine.export_neuronpedia(chat, tmp_path)
    rows = trace(root, chat, conversations=True)
    roles = [r for row in rows["activations"] for r in row["personamineRoles"]]
    assert {"template", "assistant", "user"} <= set(roles)  # the template's own tokens are kept, labelled
    template = {t for row in rows["activations"] for t, r in zip(row["tokens"], row["personamineRoles"], strict=True)
                if r == "template"}
    assert template & {"<|user|>", "<|assistant|>"}
    # Only the Assistant's tokens were scored: every activation sits on one.
    assert all(r == "assistant" for row in rows["activations"]
               for v, r in zip(row["values"], row["personamineRoles"], strict=True) if v)
    (model,) = rows["model.jsonl"]
    assert model["instruct"] is True
    assert json.loads((root / "personamine_export.json").read_text())["roles_field"] == "personamineRoles"


def test_all_features_run_streams_batch_by_batch(all_features, tmp_path):
    root = personamine.export_neuronpedia(all_features, tmp_path, batch_size=256)
    rows = trace(root, all_features)
    assert len(rows["features"]) == N_ALL
    for kind in ("features", "activations"):
        names = sorted(p.name for p in (root / kind).iterdir())
        assert names == [f"batch-{n}.jsonl.gz" for n in range(3)]  # 256 + 256 + 88
        for n in range(3):  # batch N holds features N*256 ..
            held = {int(r["index"]) for r in read_lines(root / kind / f"batch-{n}.jsonl.gz")}
            assert held <= set(range(n * 256, (n + 1) * 256))
    res = personamine.read_results(all_features)
    windowless = [f for f in res.feature_ids.tolist() if not res.examples(f) and not res.interval_samples(f)]
    assert json.loads((root / "skipped_indexes.json").read_text())["skipped_indexes"] == windowless and windowless


def test_memory_follows_the_batch_not_the_file(tmp_path):
    """An export holds one batch of the mining file at a time: in a file whose top-k arrays are most of its size,
    exporting in batches of 16 features peaks at a fraction of what reading the whole file takes (measured: 3.4
    against 20 MB)."""
    path = synthetic_results(tmp_path / "wide.h5", 256, top_k=64, ctx_len=128, per_interval=1, windows_per_feature=2,
                             feature_ids=np.arange(256))
    personamine.export_neuronpedia(path, tmp_path / "warm", batch_size=256)  # imports and caches, untraced
    tracemalloc.start()
    try:
        res = personamine.read_results(path)
        whole = tracemalloc.get_traced_memory()[1]
        del res
        tracemalloc.reset_peak()
        personamine.export_neuronpedia(path, tmp_path / "out", batch_size=16)
        batched = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert whole > 16 * 2**20 and batched < whole / 3, (whole, batched)


def test_explanations_with_their_scores(explained, tiny_mining_file, tmp_path):
    root = personamine.export_neuronpedia(tiny_mining_file, tmp_path, explanations=explained, batch_size=4)
    rows = trace(root, tiny_mining_file)
    ex = personamine.read_explanations(explained)
    assert ex.parsed.all() and all(ex.explanations)
    by_index = {r["index"]: r for r in rows["explanations"]}
    assert sorted(by_index) == sorted(str(f) for f in ex.feature_ids.tolist())
    scores = rows.get("explanation_scores", [])
    config = {name: rows[f"config/{name}.jsonl"] for name in ("explanation_type", "explanation_model_type",
                                                              "explanation_score_type", "explanation_score_model")}
    assert [r["name"] for r in config["explanation_type"]] == ["personamine"]
    assert [r["name"] for r in config["explanation_model_type"]] == [ex.attrs["model"]] == ["tiny-chat"]
    n_scores = 0
    for r, fid in enumerate(ex.feature_ids.tolist()):
        row = by_index[str(fid)]
        assert row["description"] == ex.explanations[r] and row["typeName"] == "personamine"
        assert row["explanationModelName"] == ex.attrs["model"] and row["authorId"] == "clkht01d40000jv08hvalcvly"
        assert row["notes"] is None  # it followed the format
        mine = {s["explanationScoreTypeName"]: s for s in scores if s["explanationId"] == row["id"]}
        for scorer, metrics in ex.scores.items():
            value = metrics["balanced_accuracy"][r]
            if math.isnan(value):
                assert f"personamine_{scorer}" not in mine
                continue
            n_scores += 1
            score = mine[f"personamine_{scorer}"]
            assert score["value"] == value and score["explanationScoreModelName"] == ex.attrs["model"]
            details = json.loads(score["jsonDetails"])
            assert details == {m: float(v[r]) for m, v in metrics.items() if not math.isnan(v[r])}
            assert set(details) <= set(METRICS)
    assert n_scores == len(scores) > 0
    # Every name a row points at is defined (foreign keys: the insert fails otherwise).
    assert {s["explanationScoreTypeName"] for s in scores} <= {t["name"] for t in config["explanation_score_type"]}
    assert {s["explanationScoreModelName"] for s in scores} <= {m["name"] for m in config["explanation_score_model"]}
    assert json.loads(config["explanation_type"][0]["settings"]) == ex.config
    info = json.loads((root / "personamine_export.json").read_text())
    assert (info["counts"]["explanations"], info["counts"]["explanation_scores"]) == (2, n_scores)
    # An explanation not in the [EXPLANATION]: format (a small explainer's habit) is kept, and says so.
    res = personamine.read_results(tiny_mining_file, [4, 28])
    windows = {f: [(e["document"], e["window_start"]) for e in res.examples(f)[:2]] for f in (4, 28)}
    loose = _explanations_for(tmp_path / "loose.h5", tiny_mining_file, windows, unparsed=(28,))
    rows = load_bundle(personamine.export_neuronpedia(tiny_mining_file, tmp_path / "loose", explanations=loose))
    notes = {r["index"]: r["notes"] for r in rows["explanations"]}
    assert notes["4"] is None and "did not answer in the [EXPLANATION]: format" in notes["28"]


def test_discovery_becomes_a_list(tiny_model_dir, tiny_sae_dir, tiny_mining_file, tmp_path):
    disc_path = run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, ["Who are you?", "Are you an AI?"],
                              ["Who is she?", "Is that a cat?"], top=256)
    root = personamine.export_neuronpedia(tiny_mining_file, tmp_path / "out", discovery=disc_path)
    rows = trace(root, tiny_mining_file)
    disc = personamine.read_discovery(disc_path)
    held = set(personamine.read_results(tiny_mining_file).feature_ids.tolist())
    (head,) = rows["lists/list.jsonl"]
    assert head["defaultTestText"] == disc.persona_text[0]
    entries = rows["lists/lists_on_neurons.jsonl"]
    ranked = [(rank, f) for rank, f in enumerate(disc.feature_ids.tolist()) if f in held]
    assert [e["index"] for e in entries] == [str(f) for _, f in ranked] and entries
    for entry, (rank, _) in zip(entries, ranked, strict=True):
        assert entry["listId"] == head["id"]
        assert entry["description"].startswith(f"rank {rank + 1} of {disc.feature_ids.size}: score "
                                               f"{disc.score[rank]:.4g} (mean {disc.persona_mean[rank]:.4g} on")


def test_names_of_a_hosted_sae_and_the_flags(tmp_path, capsys):
    repo = "andyrdt/saes-llama-3.1-8b-instruct"
    hosted = {"model": "meta-llama/Llama-3.1-8B-Instruct", "sae": f"{repo}@trainer_1",
              "sae_neuronpedia": "llama3.1-8b-it/15-resid-post-aa", "layer": 15,
              "config": json.dumps({"sae": repo, "sae_id": "resid_post_layer_15/trainer_1"})}
    path = synthetic_results(tmp_path / "hosted.h5", 3, top_k=2, ctx_len=8, windows_per_feature=3, attrs=hosted)
    root = personamine.export_neuronpedia(path, tmp_path / "a")
    assert root == tmp_path / "a" / "llama3.1-8b-it" / "15-resid-post-aa"
    bundle = load_bundle(root)
    (model,), (source,) = bundle["model.jsonl"], bundle["source.jsonl"]
    assert (source["hfRepoId"], source["hfFolderId"]) == (repo, "resid_post_layer_15/trainer_1")
    assert (model["owner"], model["website"], model["instruct"]) == (
        "meta-llama", "https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct", True)
    out = tmp_path / "b"
    assert main(["export", "neuronpedia", str(path), "-o", str(out), "--source-set", "resid-post-pm",
                 "--model-id", "llama-mine", "--batch-size", "2"]) == 0
    rows = load_bundle(out / "llama-mine" / "15-resid-post-pm")
    assert capsys.readouterr().out == (f"wrote {out / 'llama-mine' / '15-resid-post-pm'}: 3 features, "
                                       f"{len(rows['activations'])} activation records\n")
    assert {(r["modelId"], r["layer"]) for r in rows["features"]} == {("llama-mine", "15-resid-post-pm")}
    assert {r["sourceSetName"] for r in rows["features"]} == {"resid-post-pm"}


# ------------------------------------------------------------------------------------------------ bad input


def _explanations_for(path: Path, results: Path, windows: dict[int, list[tuple[int, int]]],
                      unparsed: tuple[int, ...] = ()) -> Path:
    """An explanations file (the real writer) whose scored windows are ``windows`` (feature -> (document, start));
    the explanations of the ``unparsed`` features did not follow the format."""
    ids = sorted(windows)
    scores = {"detection": {m: np.full(len(ids), 0.5) for m in METRICS}}
    answers = [Answer(f, "detection", 0, 1, 1, 0.9, d, s, "top") for f in ids for d, s in windows[f]]
    return write_explanations(path, ExplanationResults(
        path=path, attrs={"model": "m", "backend": "openai", "results_file": str(results)}, config={},
        feature_ids=np.array(ids), explanations=[f"explains {f}" for f in ids],
        parsed=np.array([f not in unparsed for f in ids]), scores=scores, answers=answers))


def _refused(argv: list[str], capsys, fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("personamine: error: ") and err.count("\n") == 1 and fragment in err, err


def test_bad_input_is_one_line_and_writes_nothing(explained, chat, all_features, tiny_mining_file, tmp_path, capsys):
    out = tmp_path / "out"
    export = ["export", "neuronpedia"]
    _refused([*export, str(explained), "-o", str(out)], capsys, "is not a personamine mining file")
    text = tmp_path / "notes.txt"
    text.write_text("not HDF5")
    _refused([*export, str(text), "-o", str(out)], capsys, "cannot open results file")
    _refused([*export, str(tiny_mining_file), "-o", str(out), "--explanations", str(tiny_mining_file)], capsys,
             "is not a personamine explanations file")
    # Explanations of another run: features this file does not hold; the same features, other windows.
    _refused([*export, str(chat), "-o", str(out), "--explanations", str(explained)], capsys,
             "explains feature 4, which")
    _refused([*export, str(all_features), "-o", str(out), "--explanations", str(explained)], capsys,
             "was not made from")
    _refused([*export, str(tiny_mining_file), "-o", str(out), "--source-set", "a/b"], capsys, "may hold only")
    assert not out.exists()
    taken = tmp_path / "taken" / Path(personamine.read_results(tiny_mining_file).attrs["model"]).name.lower()
    (taken / f"{SAE_LAYER}-personamine").mkdir(parents=True)
    _refused([*export, str(tiny_mining_file), "-o", str(taken.parent)], capsys, "is not a personamine export")
    assert [p.name for p in taken.iterdir()] == [f"{SAE_LAYER}-personamine"]


def test_discovery_of_another_sae_is_refused(tiny_model_dir, tied_sae_dir, tiny_mining_file, tmp_path, capsys):
    disc = run_discovery(tiny_model_dir, tied_sae_dir, tmp_path, ["Who are you?"], ["Who is she?"], top=16)
    _refused(["export", "neuronpedia", str(tiny_mining_file), "-o", str(tmp_path / "out"), "--discovery",
              str(disc)], capsys, "it is for another run")
    assert not (tmp_path / "out").exists()


def test_a_mismatch_found_mid_stream_leaves_nothing(all_features, tmp_path, capsys):
    """The first 64 explained features check out, so the export starts; the bad window is in batch 2 of 3: the
    batches already written go, with the directories made for them."""
    res = personamine.read_results(all_features, list(range(70)))
    windows = {f: [(e["document"], e["window_start"]) for e in res.examples(f)[:1]] for f in range(70)
               if res.examples(f)}
    windows[520] = [(10**9, 0)]
    ex = _explanations_for(tmp_path / "ex.h5", all_features, windows)
    out = tmp_path / "deep" / "out"
    _refused(["export", "neuronpedia", str(all_features), "-o", str(out), "--explanations", str(ex),
              "--batch-size", "256"], capsys, "feature 520 was scored on a top window (document 1000000000")
    assert not (tmp_path / "deep").exists()


def test_cli_as_a_user_types_it(tiny_mining_file, tmp_path):
    done = personamine_cli("export", "neuronpedia", str(tiny_mining_file), "-o", str(tmp_path), "--batch-size", "4")
    assert done.returncode == 0, done.stderr
    (root,) = tmp_path.glob(f"*/{SAE_LAYER}-personamine")
    assert done.stdout.startswith(f"wrote {root}: 10 features, ")
    assert done.stderr == ""
    bad = personamine_cli("export", "neuronpedia", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x"))
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_the_docs_sample_records_are_valid_rows():
    """docs/export.md shows real rows; each still validates against the schema above."""
    text = (REPO / "docs" / "export.md").read_text()
    samples = re.findall(r"<!-- sample (\w+) -->\s*```json\n(.*?)```", text, re.S)
    assert {table for table, _ in samples} >= {"Activation", "Neuron"}
    for table, body in samples:
        row = json.loads(body)
        errors = list(VALIDATORS[table].iter_errors(row))
        assert not errors, (table, errors[0].message)
