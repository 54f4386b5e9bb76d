"""The steering file (schema ``personamine.steer`` version 2), written atomically, and its reader.

Intervention 0 is always the unsteered model; every array with a leading ``I`` axis holds all interventions.
Version 2 adds the direction terms (``directions/``, one row per term and layer) and their measurements per prompt
set (``{set}/direction_stats``); a version 1 file reads as one without direction terms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from personamine.files.h5 import atomic_h5, open_h5, plain_attrs

FORMAT = "personamine.steer"
FORMAT_VERSION = 2
SETS = ("persona", "control")
_STR = h5py.string_dtype("utf-8")


@dataclass
class PromptSetResults:
    """One prompt set (persona or control) under every intervention."""

    text: list[str]
    rendered: list[str]
    logprob: np.ndarray  # [I, P, C] log p(continuation | prompt)
    kl: np.ndarray  # [I, P] KL(unsteered || steered) of the first generated token, nats
    tokens: np.ndarray  # [I, P, G] int32 response tokens, -1 past the end
    length: np.ndarray  # [I, P]
    finished: np.ndarray  # [I, P] bool: ended with an end-of-turn token
    responses: list[list[str]]  # [I][P] decoded responses
    # Per term (rows of the terms table), during generation. Over every position the intervention acted on:
    # n_positions, before_mean / after_mean, after_max. Over those where the term's feature fired before: n_fired,
    # before_fired_mean / after_fired_mean, target_error (max |a_f after - target|; NaN for add or n_fired = 0).
    term_stats: dict[str, np.ndarray]
    # Per direction row (one term at one layer), during generation, over the positions it acted on: n_positions,
    # before_mean / after_mean of the projection h . v_hat at the layer, after_max / after_min, and for cap and floor
    # n_active / active_fraction (positions where it changed anything).
    direction_stats: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SteeringResults:
    attrs: dict
    config: dict
    feature_ids: np.ndarray  # [F]
    feature_scale: np.ndarray  # [F] what a clamp multiple multiplies (corpus or prompt max); NaN if absolute
    encoder_decoder_dot: np.ndarray  # [F] e_f . d_f
    decoder_norm: np.ndarray  # [F]
    prompt_max: np.ndarray  # [F] max activation over the persona prompts' tokens, unsteered
    names: list[str]  # [I]
    kinds: list[str]  # [I] none, ablate, clamp, add, mixed
    alphas: np.ndarray  # [I] the common alpha (as given) of an add intervention, else NaN
    term_intervention: np.ndarray  # [T] which intervention the term belongs to
    term_feature: np.ndarray  # [T]
    term_kind: list[str]  # [T]
    term_value: np.ndarray  # [T] absolute: the clamped activation, or alpha in residual units
    term_given: np.ndarray  # [T] as given: the clamp value or multiple, alpha in its unit
    term_where: list[str]  # [T] clamp: active or all
    set_names: list[str]  # [S] continuation sets, e.g. assistant, human
    continuations: list[str]  # [C]
    continuation_set: np.ndarray  # [C] index into set_names
    perplexity: np.ndarray  # [I] on the corpus sample
    sets: dict[str, PromptSetResults] = field(default_factory=dict)
    path: Path | None = None
    # Direction terms, one row per term and layer (none in a version 1 file).
    direction_intervention: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [R]
    direction_kind: list[str] = field(default_factory=list)  # [R] add, ablate, cap, floor
    direction_name: list[str] = field(default_factory=list)  # [R] the direction's name in the direction file
    direction_layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [R]
    direction_target: list[str] = field(default_factory=list)  # [R] the term's "[name]@layers", as written
    direction_value: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [R] add: alpha * scale; cap: tau
    direction_given: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [R] alpha, tau or percentile as given
    direction_percentile: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [R] given as a percentile
    direction_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [R] add: what alpha multiplies

    def directions_of(self, i: int) -> tuple[str, ...]:
        """The direction targets (``[name]@layers``) intervention ``i`` acts on."""
        return tuple(dict.fromkeys(t for t, r in zip(self.direction_target, self.direction_intervention.tolist(),
                                                     strict=True) if r == i))

    def direction_text(self, i: int, kind: str = "persona", most: int = 2) -> str:
        """Intervention ``i``'s direction rows on one prompt set as text: ``L10 3.1 -> 1.2 (cap 25%)``."""
        stats = self.sets[kind].direction_stats if kind in self.sets else {}
        rows = np.nonzero(self.direction_intervention == i)[0]
        if not stats or rows.size == 0:
            return ""
        parts = []
        for r in rows[:most]:
            text = (f"L{int(self.direction_layer[r])} {stats['before_mean'][r]:.3g} -> "
                    f"{stats['after_mean'][r]:.3g}")
            if self.direction_kind[r] in ("cap", "floor"):
                text += f" ({self.direction_kind[r]} {100 * stats['active_fraction'][r]:.0f}%)"
            parts.append(text)
        return "; ".join(parts) + ("; …" if rows.size > most else "")

    def features_of(self, i: int) -> tuple[int, ...]:
        return tuple(sorted(set(self.term_feature[self.term_intervention == i].tolist())))

    def set_logprob(self, prompts: str, set_name: str) -> np.ndarray:
        """[I, P] log of the probability mass of one continuation set: ``log sum_c p(c | prompt)``."""
        lp = self.sets[prompts].logprob[:, :, self.continuation_set == self.set_names.index(set_name)]
        top = lp.max(-1, keepdims=True)
        return (top + np.log(np.exp(lp - top).sum(-1, keepdims=True)))[..., 0]

    def summary(self) -> list[dict]:
        """One row per intervention: the means over prompts of every metric, shifts against unsteered."""
        rows = []
        for i, name in enumerate(self.names):
            row: dict = {"intervention": name, "kind": self.kinds[i], "alpha": float(self.alphas[i]),
                         "features": list(self.features_of(i)), "perplexity": float(self.perplexity[i])}
            for kind, data in self.sets.items():
                for s in self.set_names:
                    lp = self.set_logprob(kind, s)
                    row[f"{kind}_logprob_{s}"] = float(lp[i].mean())
                    row[f"{kind}_delta_{s}"] = float((lp[i] - lp[0]).mean())
                row[f"{kind}_kl"] = float(data.kl[i].mean())
                terms = self.term_intervention == i
                # Per term: the feature's mean activation where it fired, before and after the intervention.
                row[f"{kind}_act_before"] = data.term_stats["before_fired_mean"][terms].tolist() if terms.any() else []
                row[f"{kind}_act_after"] = data.term_stats["after_fired_mean"][terms].tolist() if terms.any() else []
            rows.append(row)
        return rows

    def table(self) -> str:
        """The summary as aligned text: the shift of each continuation set's log-probability on persona prompts, KL on
        both sets, perplexity, and the steered features' mean activation where they fired, before -> after, and each
        direction's mean projection at its layers before -> after, with how often a cap or floor acted."""
        width = max([28] + [len(n) for n in self.names])  # a direction's name is long: never cut one short
        head = f"{'intervention':<{width}}" + "".join(f" {'Δlog p ' + s:>14}" for s in self.set_names)
        lines = [head + f" {'KL persona':>11} {'KL control':>11} {'perplexity':>11}  activation or projection "
                        "(persona)"]
        for i, row in enumerate(self.summary()):
            line = f"{row['intervention']:<{width}}" + "".join(f" {row[f'persona_delta_{s}']:>14.3f}"
                                                            for s in self.set_names)
            before, after = row["persona_act_before"], row["persona_act_after"]
            acts = f"{np.nanmean(before):.3g} -> {np.nanmean(after):.3g}" if before and not np.isnan(
                before).all() else ""
            directions = self.direction_text(i)
            acts = "; ".join(a for a in (acts, directions) if a)
            lines.append(line + f" {row['persona_kl']:>11.4f} {row['control_kl']:>11.4f} {row['perplexity']:>11.3f}  "
                         + acts)
        return "\n".join(lines)


def write_steering(path: str | Path, results: SteeringResults) -> Path:
    path = Path(path)
    config = json.dumps(results.config, sort_keys=True)
    with atomic_h5(path, FORMAT, FORMAT_VERSION, {**results.attrs, "config": config}) as f:
        g = f.create_group("features")
        g["ids"] = results.feature_ids.astype(np.int64)
        for name in ("feature_scale", "encoder_decoder_dot", "decoder_norm", "prompt_max"):
            g[name.removeprefix("feature_")] = getattr(results, name).astype(np.float64)
        g = f.create_group("interventions")
        g.create_dataset("name", data=results.names, dtype=_STR)
        g.create_dataset("kind", data=results.kinds, dtype=_STR)
        g["alpha"] = results.alphas.astype(np.float64)
        g["perplexity"] = results.perplexity.astype(np.float64)
        t = f.create_group("terms")
        t["intervention"] = results.term_intervention.astype(np.int64)
        t["feature"] = results.term_feature.astype(np.int64)
        t.create_dataset("kind", data=results.term_kind, dtype=_STR)
        t["value"], t["given"] = results.term_value.astype(np.float64), results.term_given.astype(np.float64)
        t.create_dataset("where", data=results.term_where, dtype=_STR)
        c = f.create_group("continuations")
        c.create_dataset("set_names", data=results.set_names, dtype=_STR)
        c.create_dataset("text", data=results.continuations, dtype=_STR)
        c["set"] = results.continuation_set.astype(np.int64)
        for kind, data in results.sets.items():
            s = f.create_group(kind)
            s.create_dataset("text", data=data.text, dtype=_STR)
            s.create_dataset("rendered", data=data.rendered, dtype=_STR)
            s["logprob"], s["kl"] = data.logprob.astype(np.float64), data.kl.astype(np.float64)
            s.create_dataset("tokens", data=data.tokens.astype(np.int32), compression="gzip")
            s["length"], s["finished"] = data.length.astype(np.int32), data.finished.astype(bool)
            s.create_dataset("responses", data=np.array(data.responses, dtype=object).reshape(
                data.length.shape), dtype=_STR)
            st = s.create_group("term_stats")
            for name, values in data.term_stats.items():
                st[name] = values
            st = s.create_group("direction_stats")
            for name, values in data.direction_stats.items():
                st[name] = values
        d = f.create_group("directions")
        d["intervention"] = results.direction_intervention.astype(np.int64)
        for name in ("kind", "name", "target"):
            d.create_dataset(name, data=getattr(results, f"direction_{name}"), dtype=_STR)
        d["layer"] = results.direction_layer.astype(np.int64)
        for name in ("value", "given", "scale"):
            d[name] = getattr(results, f"direction_{name}").astype(np.float64)
        d["percentile"] = results.direction_percentile.astype(bool)
    return path


def _strings(ds: h5py.Dataset) -> list:
    return ds.asstr()[()].tolist()


def read_steering(path: str | Path) -> SteeringResults:
    """Read a file written by ``personamine.steer``."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "steering") as f:
        attrs = plain_attrs(f)
        g, t, c = f["features"], f["terms"], f["continuations"]
        sets = {}
        for kind in SETS:
            if kind not in f:
                continue
            s = f[kind]
            sets[kind] = PromptSetResults(
                text=_strings(s["text"]), rendered=_strings(s["rendered"]), logprob=s["logprob"][()],
                kl=s["kl"][()], tokens=s["tokens"][()], length=s["length"][()], finished=s["finished"][()],
                responses=_strings(s["responses"]),
                term_stats={name: ds[()] for name, ds in s["term_stats"].items()},
                direction_stats={name: ds[()] for name, ds in s.get("direction_stats", {}).items()})
        directions = {}
        if "directions" in f:  # version 2
            d = f["directions"]
            directions = {"direction_intervention": d["intervention"][()], "direction_layer": d["layer"][()],
                          **{f"direction_{n}": _strings(d[n]) for n in ("kind", "name", "target")},
                          **{f"direction_{n}": d[n][()] for n in ("value", "given", "scale", "percentile")}}
        return SteeringResults(
            attrs=attrs, config=json.loads(attrs.get("config", "{}")), feature_ids=g["ids"][()],
            feature_scale=g["scale"][()], encoder_decoder_dot=g["encoder_decoder_dot"][()],
            decoder_norm=g["decoder_norm"][()], prompt_max=g["prompt_max"][()],
            names=_strings(f["interventions/name"]), kinds=_strings(f["interventions/kind"]),
            alphas=f["interventions/alpha"][()], term_intervention=t["intervention"][()],
            term_feature=t["feature"][()], term_kind=_strings(t["kind"]), term_value=t["value"][()],
            term_given=t["given"][()], term_where=_strings(t["where"]), set_names=_strings(c["set_names"]),
            continuations=_strings(c["text"]), continuation_set=c["set"][()],
            perplexity=f["interventions/perplexity"][()], sets=sets, path=path, **directions,
        )
