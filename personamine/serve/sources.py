"""The files a server was started with, opened once: the mining files (their index columns read, their rows left
on disk), and the discovery, explanations and steering files (small: read whole). No request names a path: pages
name a file by its position in this list."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personamine.errors import PersonamineError
from personamine.files.discover import DiscoveryResults, read_discovery
from personamine.files.explain import ExplanationResults, read_explanations
from personamine.files.h5 import file_format, open_h5
from personamine.files.mine import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_FORMAT,
    MineResults,
    holds_directions,
    read_results,
    readouts_of,
)
from personamine.files.steer import SteeringResults, read_steering
from personamine.serve.index import FeatureIndex, build_index, read_columns


@dataclass
class ServedFile:
    number: int  # its position among the served files: how pages name it
    path: Path
    head: MineResults  # ``read_results`` of its first feature: attributes, config, counts (vocabulary dropped)
    feature_ids: np.ndarray
    feature_set: frozenset[int]

    @property
    def config(self) -> dict:
        return self.head.config

    @property
    def attrs(self) -> dict:
        return self.head.attrs


@dataclass
class Sources:
    files: list[ServedFile]
    index: FeatureIndex
    discovery: DiscoveryResults | None
    explanations: ExplanationResults | None
    steering: SteeringResults | None


def sae_files(path: Path) -> list[Path]:
    """The mining files a served path stands for: itself, or, for the index of a run with several readouts, its SAE
    readouts' files (the browser pages features; a directions readout reads in ``report`` and ``show``)."""
    if not path.is_file() or file_format(path, "results") != INDEX_FORMAT:
        return [path]
    found = [f for f in readouts_of(path).values() if not holds_directions(f)]
    if not found:
        raise PersonamineError(f"{str(path)!r} holds directions readouts only: the browser pages SAE features (read "
                               "directions with personamine report or show --readout)")
    return found


def open_sources(results: list[str | Path], *, discovery: str | Path | None = None,
                 explanations: str | Path | None = None, steering: str | Path | None = None) -> Sources:
    """Every file read as far as the index needs; any file that cannot be is an error in one line, before the server
    starts."""
    if not results:
        raise PersonamineError("give at least one mining file to serve")
    paths = [p for given in results for p in sae_files(Path(given))]
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise PersonamineError("a mining file is given twice")
    files, columns = [], []
    for number, path in enumerate(paths):
        if not path.is_file():
            raise PersonamineError(f"no mining file {str(path)!r}")
        ids = _feature_ids(path)
        if not ids.size:
            raise PersonamineError(f"{str(path)!r} holds no features")
        head = read_results(path, features=[int(ids[0])])
        cols = read_columns(path, head)
        # The vocabulary is only needed for the top tokens, now computed; a page reads its own rows' tokens.
        head.vocab_text, head.vocab_pieces = {}, {}
        files.append(ServedFile(number, path, head, cols.feature_ids, frozenset(cols.feature_ids.tolist())))
        columns.append((head, cols))
    disc = read_discovery(discovery) if discovery is not None else None
    ex = None
    if explanations is not None:
        # The LLM calls and answers (every prompt sent) are not shown: dropped, they would be most of its memory.
        ex = dataclasses.replace(read_explanations(explanations), calls=[], answers=[])
    steer = read_steering(steering) if steering is not None else None
    return Sources(files, build_index(columns, disc, ex), disc, ex, steer)


def _feature_ids(path: Path) -> np.ndarray:
    with open_h5(path, FORMAT, FORMAT_VERSION, "mining", opened_as="results") as f:
        return f["feature_ids"][()]
