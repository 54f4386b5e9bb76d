"""The discovery file (schema ``personamine.discover`` version 2), written atomically, and its readers.

Two sides are compared (``attrs["contrast"]``): persona vs control prompts, the prompts under the default Assistant
vs under role-play system prompts, or the prompts through two models; "persona" names side a and "control" side b
throughout the file. Layout:

- ``ranking/``, ``prompts/``, ``activations/``: the primary table (the first SAE and the first pooling), as in
  version 1, so a reader of one table finds it where it always was. ``ranking/`` holds the ranked features, best
  first, with ``score`` (the mean difference; the persona mean with contrast none), the means and firing fractions
  of both sides, and from version 2 on the statistics: ``ci_low``/``ci_high`` (bootstrap percentile CI of the mean
  difference), ``p_value`` (Wilcoxon signed-rank when paired, Mann-Whitney U when not), ``q_value``
  (Benjamini-Hochberg over every feature tested), ``effect_size`` and ``support`` (how many prompts carry the
  effect). ``prompts/`` holds each side's texts, renderings and, for response pooling, ``*_response``.
- ``tables/<readout>/<pooling>/``: the same ``ranking/`` and ``activations/`` for every SAE (readout ``L10``, or
  ``L10-t1`` with several trainers) and pooling, with the readout's ``layer`` and ``sae`` as attributes.
- ``directions/L<layer>/<pooling>/``: the persona direction (``vector`` = mean(a) - mean(b) of the pooled raw
  residual), its ``norm``, ``auroc`` with ``auroc_ci``, ``split_half`` (mean, min cosine of random halves), the
  projections of both sides, and ``decomposition/<readout>/`` for each SAE at that layer.

Version 1 files (one table, no statistics, no directions) still read.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.atomic import atomic_write_bytes
from personamine.errors import PersonamineError
from personamine.files.h5 import CheckedReader, atomic_h5, open_h5, plain_attrs
from personamine.model.prompts import RenderedPrompt

FORMAT = "personamine.discover"
FORMAT_VERSION = 2
_UTF8 = h5py.string_dtype("utf-8")
_STATS = ("ci_low", "ci_high", "p_value", "q_value", "effect_size", "support")


@dataclass
class Ranking:
    feature_ids: np.ndarray  # best first
    score: np.ndarray  # mean(persona) - mean(control); the persona mean with contrast none
    persona_mean: np.ndarray
    control_mean: np.ndarray  # NaN without controls
    persona_firing: np.ndarray  # fraction of persona prompts where the feature's value is > 0
    control_firing: np.ndarray
    # The statistics (None in version-1 files and with contrast none)
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    p_value: np.ndarray | None = None
    q_value: np.ndarray | None = None
    effect_size: np.ndarray | None = None
    support: np.ndarray | None = None  # prompts (pairs) that carry the effect

    @property
    def has_statistics(self) -> bool:
        return self.ci_low is not None

    def discoveries(self, q: float = 0.05) -> np.ndarray:
        """[n ranked] bool: the features with a q-value below ``q`` and a CI above zero (none without statistics)."""
        if not self.has_statistics:
            return np.zeros(self.feature_ids.size, bool)
        return (self.q_value < q) & (self.ci_low > 0)


@dataclass
class Table:
    """One SAE's ranking under one pooling, with the per-prompt values of its first ranked features."""

    readout: str
    layer: int
    sae: str
    pooling: str
    ranking: Ranking
    persona_acts: np.ndarray  # [n_persona, n_top]
    control_acts: np.ndarray  # [n_control, n_top]


@dataclass
class Decomposition:
    readout: str
    cosine_ids: np.ndarray  # features whose decoder direction aligns best with v, best first
    cosine: np.ndarray
    contribution_ids: np.ndarray  # features carrying most of the projection difference, largest first
    contribution: np.ndarray
    reconstructed_share: float  # r . v_hat / |v|, r the decoded mean-code difference
    reconstructed_cosine: float  # cos(r, v)


@dataclass
class Direction:
    layer: int
    pooling: str
    vector: np.ndarray  # [hidden] float32, mean(a) - mean(b)
    norm: float
    auroc: float
    auroc_ci: tuple[float, float]
    split_half: tuple[float, float]  # (mean, min) cosine over random halves
    projection_a: np.ndarray  # [n_a] h . v_hat
    projection_b: np.ndarray  # [n_b]
    decompositions: dict[str, Decomposition] = field(default_factory=dict)

    @property
    def unit(self) -> np.ndarray:
        return (self.vector / self.norm).astype(np.float32) if self.norm > 0 else np.zeros_like(self.vector)


@dataclass
class Side:
    """What one side of the contrast read: its prompts as rendered for the primary pooling, and responses."""

    texts: list[str]
    rendered: list[RenderedPrompt]
    responses: list[str] | None = None


def _write_ranking(group: h5py.Group, ranking: Ranking) -> None:
    for name in ("feature_ids", "score", "persona_mean", "control_mean", "persona_firing", "control_firing",
                 *_STATS):
        value = getattr(ranking, name)
        if value is not None:
            dtype = np.int64 if name in ("feature_ids", "support") else np.float64
            group.create_dataset(name, data=np.asarray(value).astype(dtype))


def _write_acts(group: h5py.Group, ranking: Ranking, persona_top: np.ndarray, control_top: np.ndarray) -> None:
    group.attrs["feature_ids"] = ranking.feature_ids[: persona_top.shape[1]]
    group.create_dataset("persona", data=persona_top.astype(np.float32))
    group.create_dataset("control", data=control_top.astype(np.float32))


def write_discovery(path: Path, attrs: dict, tables: list[Table], persona: Side, control: Side,
                    directions: list[Direction] = (), roles: list[tuple[str, str]] = ()) -> Path:
    """Write a discovery file: ``attrs`` (the run's model, layers, SAEs, poolings, contrast, config, ...), every
    table (the first is the primary one), each side's prompts, the directions, and the role set of a roles
    contrast."""
    primary = tables[0]
    attrs = {**attrs, "layer": primary.layer, "sae": primary.sae, "position": primary.pooling}
    with atomic_h5(path, FORMAT, FORMAT_VERSION, attrs) as f:
        _write_ranking(f.create_group("ranking"), primary.ranking)
        prompts = f.create_group("prompts")
        for kind, side in (("persona", persona), ("control", control)):
            prompts.create_dataset(f"{kind}_text", data=side.texts, dtype=_UTF8)
            prompts.create_dataset(f"{kind}_rendered", data=[p.rendered for p in side.rendered], dtype=_UTF8)
            prompts.create_dataset(f"{kind}_n_positions", data=np.array([len(p.positions) for p in side.rendered],
                                                                        dtype=np.int64))
            if side.responses is not None:
                prompts.create_dataset(f"{kind}_response", data=side.responses, dtype=_UTF8)
        if roles:
            prompts.create_dataset("role_name", data=[name for name, _ in roles], dtype=_UTF8)
            prompts.create_dataset("role_system", data=[system for _, system in roles], dtype=_UTF8)
        _write_acts(f.create_group("activations"), primary.ranking, primary.persona_acts, primary.control_acts)
        for table in tables:
            g = f.create_group(f"tables/{table.readout}/{table.pooling}")
            g.attrs.update({"layer": table.layer, "sae": table.sae})
            _write_ranking(g.create_group("ranking"), table.ranking)
            _write_acts(g.create_group("activations"), table.ranking, table.persona_acts, table.control_acts)
        for d in directions:
            g = f.create_group(f"directions/L{d.layer}/{d.pooling}")
            g.attrs.update({"layer": d.layer, "norm": d.norm, "auroc": d.auroc, "auroc_ci": np.asarray(d.auroc_ci),
                            "split_half": np.asarray(d.split_half)})
            g.create_dataset("vector", data=d.vector.astype(np.float32))
            g.create_dataset("projection_a", data=d.projection_a.astype(np.float64))
            g.create_dataset("projection_b", data=d.projection_b.astype(np.float64))
            for name, dec in d.decompositions.items():
                h = g.create_group(f"decomposition/{name}")
                h.attrs.update({"reconstructed_share": dec.reconstructed_share,
                                "reconstructed_cosine": dec.reconstructed_cosine})
                for key in ("cosine_ids", "cosine", "contribution_ids", "contribution"):
                    h.create_dataset(key, data=getattr(dec, key))
    return path


@dataclass
class DiscoveryResults:
    """A discovery file as plain numpy. The fields are the primary table's (the first SAE, the first pooling):
    ``persona_acts[:, j]`` is feature ``feature_ids[j]`` on every prompt. ``tables`` holds every (readout, pooling)
    and ``directions`` every (layer, pooling); both are empty in version-1 files."""

    path: Path
    attrs: dict
    config: dict
    feature_ids: np.ndarray
    score: np.ndarray
    persona_mean: np.ndarray
    control_mean: np.ndarray
    persona_firing: np.ndarray
    control_firing: np.ndarray
    persona_text: list[str]
    control_text: list[str]
    persona_rendered: list[str]
    control_rendered: list[str]
    persona_acts: np.ndarray  # [n_persona, n_top]
    control_acts: np.ndarray  # [n_control, n_top]
    ranking: Ranking | None = None
    persona_response: list[str] | None = None
    control_response: list[str] | None = None
    roles: list[tuple[str, str]] = field(default_factory=list)
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    directions: dict[tuple[int, str], Direction] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return int(self.attrs.get("format_version", 1))

    @property
    def has_controls(self) -> bool:
        return bool(self.attrs.get("controls", True)) and len(self.control_text) > 0

    @property
    def contrast(self) -> str:
        return str(self.attrs.get("contrast", "controls" if self.has_controls else "none"))

    def summary(self) -> str:
        """One line: the prompt sets, how many features are ranked and how many of them score above zero (and, with
        statistics, how many survive the false discovery rate with a CI above zero)."""
        positive = int((self.score > 0).sum())
        against = f" vs {len(self.control_text)} controls" if self.has_controls else " (no controls)"
        if self.contrast == "roles":
            against = f" under the default Assistant vs {len(self.roles)} roles"
        elif self.contrast == "models":
            against = f" through {self.attrs.get('model')} vs {self.attrs.get('model_b')}"
        line = (f"{len(self.persona_text)} persona prompts{against}, {self.feature_ids.size} features ranked, "
                f"{positive} scoring above zero")
        if self.ranking is not None and self.ranking.has_statistics:
            line += f", {int(self.discoveries().sum())} with q < 0.05 and a CI above zero"
        return line

    def discoveries(self, q: float = 0.05) -> np.ndarray:
        """[n ranked] bool: the primary table's features with a q-value below ``q`` and a CI above zero."""
        return self.ranking.discoveries(q) if self.ranking is not None else np.zeros(self.feature_ids.size, bool)

    def directions_table(self) -> str:
        """Each persona direction: its separation (AUROC with CI), stability (split-half cosine), and the SAE
        features that carry it."""
        lines = []
        for (layer, pooling), d in sorted(self.directions.items()):
            line = (f"layer {layer:>3} {pooling:<16} |v| {d.norm:8.3g}  AUROC {d.auroc:.3f} [{d.auroc_ci[0]:.3f}, "
                    f"{d.auroc_ci[1]:.3f}]  split-half cos {d.split_half[0]:.3f} (min {d.split_half[1]:.3f})")
            for name, dec in d.decompositions.items():
                carried = ", ".join(f"{int(f)} ({c:.3g})" for f, c in zip(dec.contribution_ids[:5],
                                                                            dec.contribution[:5], strict=True))
                line += (f"\n    {name}: SAE reconstructs {dec.reconstructed_share:.0%} of v (cos "
                         f"{dec.reconstructed_cosine:.2f}); carried by {carried}")
            lines.append(line)
        return "\n".join(lines)

    def table(self, n: int = 20) -> str:
        """The top ``n`` features as an aligned text table (with the CI, q and support when the file has them)."""
        controls = self.has_controls
        stats = self.ranking is not None and self.ranking.has_statistics
        head = f"{'rank':>4} {'feature':>8} {'score':>9}"
        if stats:
            head += f" {'95% CI':>19} {'q':>8} {'support':>7}"
        head += f" {'persona mean':>13}"
        if controls:
            head += f" {'control mean':>13} {'fires (persona)':>16} {'fires (control)':>16}"
        else:
            head += f" {'fires':>7}"
        lines = [head]
        for r in range(min(n, self.feature_ids.size)):
            line = f"{r + 1:>4} {int(self.feature_ids[r]):>8} {self.score[r]:>9.4g}"
            if stats:
                rk = self.ranking
                ci = f"[{rk.ci_low[r]:.3g}, {rk.ci_high[r]:.3g}]"
                low = "*" if rk.support[r] < 3 else " "  # a feature fewer than 3 prompts carry
                line += f" {ci:>19} {rk.q_value[r]:>8.2g} {int(rk.support[r]):>6}{low}"
            line += f" {self.persona_mean[r]:>13.4g}"
            if controls:
                line += (f" {self.control_mean[r]:>13.4g} {self.persona_firing[r]:>16.0%}"
                         f" {self.control_firing[r]:>16.0%}")
            else:
                line += f" {self.persona_firing[r]:>7.0%}"
            lines.append(line)
        if stats:
            lines.append("score: mean difference; CI: bootstrap over prompts; q: Benjamini-Hochberg; "
                         "* fewer than 3 prompts carry the effect")
        return "\n".join(lines)


def _read_ranking(group: h5py.Group, read: CheckedReader) -> Ranking:
    values = {name: read(group[name]) for name in group}
    return Ranking(**{k: v for k, v in values.items() if k in Ranking.__dataclass_fields__})


def _texts(group: h5py.Group, name: str) -> list[str] | None:
    return [str(s) for s in group[name].asstr()[()]] if name in group else None


def read_discovery(path: str | Path) -> DiscoveryResults:
    """Read a file written by ``personamine.discover`` (any version)."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "discovery") as f:
        read = CheckedReader(path, f)
        attrs = plain_attrs(f)
        ranking = _read_ranking(f["ranking"], read)
        prompts, acts = f["prompts"], f["activations"]
        tables = {}
        for readout, by_pooling in f.get("tables", {}).items():
            for pooling, g in by_pooling.items():
                tables[(readout, pooling)] = Table(readout, int(g.attrs["layer"]), str(g.attrs["sae"]), pooling,
                                                   _read_ranking(g["ranking"], read),
                                                   read(g["activations/persona"]), read(g["activations/control"]))
        directions = {}
        for by_pooling in f.get("directions", {}).values():
            for pooling, g in by_pooling.items():
                decompositions = {name: Decomposition(name, **{k: read(h[k]) for k in h},
                                                      reconstructed_share=float(h.attrs["reconstructed_share"]),
                                                      reconstructed_cosine=float(h.attrs["reconstructed_cosine"]))
                                  for name, h in g.get("decomposition", {}).items()}
                directions[(int(g.attrs["layer"]), pooling)] = Direction(
                    layer=int(g.attrs["layer"]), pooling=pooling, vector=read(g["vector"]),
                    norm=float(g.attrs["norm"]), auroc=float(g.attrs["auroc"]),
                    auroc_ci=tuple(float(x) for x in g.attrs["auroc_ci"]),
                    split_half=tuple(float(x) for x in g.attrs["split_half"]), projection_a=read(g["projection_a"]),
                    projection_b=read(g["projection_b"]), decompositions=decompositions)
        names, systems = _texts(prompts, "role_name") or [], _texts(prompts, "role_system") or []
        return DiscoveryResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")),
            feature_ids=ranking.feature_ids, score=ranking.score, persona_mean=ranking.persona_mean,
            control_mean=ranking.control_mean, persona_firing=ranking.persona_firing,
            control_firing=ranking.control_firing, persona_text=_texts(prompts, "persona_text"),
            control_text=_texts(prompts, "control_text"), persona_rendered=_texts(prompts, "persona_rendered"),
            control_rendered=_texts(prompts, "control_rendered"), persona_acts=read(acts["persona"]),
            control_acts=read(acts["control"]), ranking=ranking,
            persona_response=_texts(prompts, "persona_response"), control_response=_texts(prompts, "control_response"),
            roles=list(zip(names, systems, strict=True)), tables=tables, directions=directions)


def _ranking_group(f: h5py.File, path: Path, readout: str | tuple[str, ...] | None) -> h5py.Group:
    """The ``ranking/`` group of the primary table, or of ``readout``'s table (``L15``; of several names, the first
    the file has) at the primary pooling (a discovery of several layers); a file without it: the primary table."""
    names = (readout,) if isinstance(readout, str) else readout or ()
    tables = f["tables"] if "tables" in f else {}
    readout = next((name for name in names if name in tables), None)
    if readout is None:
        return f["ranking"]
    pooling = str(f.attrs.get("position", "last")).split(",")[0]
    by_pooling = f["tables"][readout]
    return by_pooling[pooling if pooling in by_pooling else sorted(by_pooling)[0]]["ranking"]


def read_discovery_ranking(path: str | Path,
                           readout: str | tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(feature ids, scores) of a discovery file's primary table (or ``readout``'s: ``L15``), best first, without
    reading the rest."""
    with open_h5(Path(path), FORMAT, FORMAT_VERSION, "discovery") as f:
        group = _ranking_group(f, Path(path), readout)
        return group["feature_ids"][()].astype(np.int64), group["score"][()]


def read_discovery_statistics(path: str | Path, readout: str | tuple[str, ...] | None = None) -> Ranking:
    """The primary table's (or ``readout``'s) ranking with its statistics (None fields in version-1 files)."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "discovery") as f:
        return _read_ranking(_ranking_group(f, path, readout), CheckedReader(path, f))


def export_directions(path: str | Path, out: str | Path) -> Path:
    """Write a discovery file's persona directions for other tools (``write_directions``)."""
    found = read_discovery(path)
    if not found.directions:
        raise PersonamineError(f"{str(path)!r} holds no directions (a version-1 file, or contrast none)")
    return write_directions(list(found.directions.values()), str(found.attrs.get("model", "")), out)


def write_directions(directions: list[Direction], model: str, out: str | Path) -> Path:
    """Persona directions (``v`` = mean(a) - mean(b), one per layer and pooling) for other tools: ``.safetensors``
    (tensors named ``L{layer}/{pooling}``, with each one's norm, AUROC and split-half cosine in the metadata) or
    ``.npy`` (an [n, hidden] float32 array, rows in the order of the ``.json`` written beside it)."""
    out = Path(out)
    ordered = sorted(directions, key=lambda d: (d.layer, d.pooling))
    names = [f"L{d.layer}/{d.pooling}" for d in ordered]
    vectors = [d.vector.astype(np.float32) for d in ordered]
    # "mean": the midpoint of the two sides' mean projections, the reference a centred reading subtracts
    info = {name: {"layer": d.layer, "pooling": d.pooling, "norm": d.norm, "auroc": d.auroc,
                   "split_half_cosine": d.split_half[0],
                   "mean": float((d.projection_a.mean() + d.projection_b.mean()) / 2)}
            for name, d in zip(names, ordered, strict=True)}
    if out.suffix == ".safetensors":
        from safetensors.numpy import save

        atomic_write_bytes(out, save(dict(zip(names, vectors, strict=True)),
                                     metadata={"directions": json.dumps(info), "model": model}))
    elif out.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, np.stack(vectors))
        atomic_write_bytes(out, buffer.getvalue())
        atomic_write_bytes(out.with_suffix(".json"), json.dumps({"names": names, "directions": info},
                                                                indent=1).encode())
    else:
        raise PersonamineError(f"directions export {str(out)!r}: use a .safetensors or .npy file name")
    return out
