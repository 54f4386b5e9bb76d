"""The discovery file (schema ``personamine.discover`` version 1), written atomically, and its readers.

Layout: ``ranking/`` (``feature_ids`` best first, ``score``, ``persona_mean``, ``control_mean``, ``persona_firing``,
``control_firing``), ``prompts/`` (each set's text, rendering and number of positions read), ``activations/``
(``persona`` and ``control``: [prompts, top] per-prompt values of the first ranked features).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from personamine.files.h5 import atomic_h5, open_h5, plain_attrs
from personamine.model.prompts import RenderedPrompt

FORMAT = "personamine.discover"
FORMAT_VERSION = 1


@dataclass
class Ranking:
    feature_ids: np.ndarray  # best first
    score: np.ndarray
    persona_mean: np.ndarray
    control_mean: np.ndarray  # NaN without controls
    persona_firing: np.ndarray  # fraction of persona prompts where the feature's value is > 0
    control_firing: np.ndarray


def write_discovery(path: Path, attrs: dict, ranking: Ranking, persona: list[RenderedPrompt],
                    control: list[RenderedPrompt], persona_top: np.ndarray, control_top: np.ndarray) -> Path:
    """Write a discovery file: ``attrs`` (the run's model, layer, SAE, position, config, ...), the ranking, the
    prompts as rendered, and the per-prompt values of the first ``persona_top.shape[1]`` ranked features."""
    utf8 = h5py.string_dtype("utf-8")
    with atomic_h5(path, FORMAT, FORMAT_VERSION, attrs) as f:
        rank = f.create_group("ranking")
        for name in ("feature_ids", "score", "persona_mean", "control_mean", "persona_firing", "control_firing"):
            value = getattr(ranking, name)
            rank.create_dataset(name, data=value.astype(np.int64 if name == "feature_ids" else np.float64))
        prompts = f.create_group("prompts")
        for kind, items in (("persona", persona), ("control", control)):
            prompts.create_dataset(f"{kind}_text", data=[p.text for p in items], dtype=utf8)
            prompts.create_dataset(f"{kind}_rendered", data=[p.rendered for p in items], dtype=utf8)
            prompts.create_dataset(f"{kind}_n_positions", data=np.array([len(p.positions) for p in items],
                                                                        dtype=np.int64))
        acts = f.create_group("activations")
        acts.attrs["feature_ids"] = ranking.feature_ids[: persona_top.shape[1]]
        acts.create_dataset("persona", data=persona_top.astype(np.float32))
        acts.create_dataset("control", data=control_top.astype(np.float32))
    return path


@dataclass
class DiscoveryResults:
    """A discovery file as plain numpy. ``persona_acts[:, j]`` is feature ``feature_ids[j]`` on every prompt."""

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

    @property
    def has_controls(self) -> bool:
        return bool(self.attrs.get("controls", True)) and len(self.control_text) > 0

    def summary(self) -> str:
        """One line: the prompt sets, how many features are ranked and how many of them score above zero."""
        positive = int((self.score > 0).sum())
        against = f" vs {len(self.control_text)} controls" if self.has_controls else " (no controls)"
        return (f"{len(self.persona_text)} persona prompts{against}, {self.feature_ids.size} features ranked, "
                f"{positive} scoring above zero")

    def table(self, n: int = 20) -> str:
        """The top ``n`` features as an aligned text table."""
        controls = self.has_controls
        head = f"{'rank':>4} {'feature':>8} {'score':>9} {'persona mean':>13}"
        if controls:
            head += f" {'control mean':>13} {'fires (persona)':>16} {'fires (control)':>16}"
        else:
            head += f" {'fires':>7}"
        lines = [head]
        for r in range(min(n, self.feature_ids.size)):
            line = f"{r + 1:>4} {int(self.feature_ids[r]):>8} {self.score[r]:>9.4g} {self.persona_mean[r]:>13.4g}"
            if controls:
                line += (f" {self.control_mean[r]:>13.4g} {self.persona_firing[r]:>16.0%}"
                         f" {self.control_firing[r]:>16.0%}")
            else:
                line += f" {self.persona_firing[r]:>7.0%}"
            lines.append(line)
        return "\n".join(lines)


def read_discovery(path: str | Path) -> DiscoveryResults:
    """Read a file written by ``personamine.discover``."""
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "discovery") as f:
        attrs = plain_attrs(f)
        rank, prompts, acts = f["ranking"], f["prompts"], f["activations"]

        def texts(name: str) -> list[str]:
            return [str(s) for s in prompts[name].asstr()[()]]

        return DiscoveryResults(
            path=path, attrs=attrs, config=json.loads(attrs.get("config", "{}")),
            feature_ids=rank["feature_ids"][()], score=rank["score"][()], persona_mean=rank["persona_mean"][()],
            control_mean=rank["control_mean"][()], persona_firing=rank["persona_firing"][()],
            control_firing=rank["control_firing"][()], persona_text=texts("persona_text"),
            control_text=texts("control_text"), persona_rendered=texts("persona_rendered"),
            control_rendered=texts("control_rendered"), persona_acts=acts["persona"][()],
            control_acts=acts["control"][()],
        )


def read_discovery_ranking(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(feature ids, scores) of a discovery file, best first, without reading the rest."""
    with open_h5(Path(path), FORMAT, FORMAT_VERSION, "discovery") as f:
        return f["ranking/feature_ids"][()].astype(np.int64), f["ranking/score"][()]
