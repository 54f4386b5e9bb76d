"""The screening file (schema ``personamine.screen`` version 1), written atomically, and its reader.

One row per sample (a conversation whose last turn is the assistant's), in corpus order: its id (``unit``, ``row``
in the unit, ``document``: the row's index in the whole corpus), the rendered prompt, the row's own response and the
model's greedy response, their token counts, and per direction the two projections (mean over the response's tokens
of ``h . v_hat`` at the layer) and their difference, the row's minus the model's. ``order[k]`` ranks the samples by
direction k's difference, largest first (NaN, from an empty generated response, last; ties by corpus order). The
run's config, the directions' names and unit vectors, and the corpus's counts are in the file too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personamine.files.h5 import CheckedReader, atomic_h5, dataset, open_h5, plain_attrs, read_strings, write_strings

FORMAT = "personamine.screen"
FORMAT_VERSION = 1
TEXTS = ("prompt", "response", "own")


@dataclass
class ScreeningResults:
    attrs: dict
    config: dict
    names: list[str]  # [K] the directions
    units: np.ndarray  # [K, D] float32 unit vectors
    unit: np.ndarray  # [N] int64
    row: np.ndarray  # [N] int64, the row in its unit
    document: np.ndarray  # [N] int64, the row in the corpus
    prompt: list[str]  # [N] the rendered prompt (every turn before the last, and the generation prompt)
    response: list[str]  # [N] the row's last (assistant) turn
    own: list[str]  # [N] the model's own greedy response to the prompt
    response_tokens: np.ndarray  # [N] int32
    own_tokens: np.ndarray  # [N] int32
    own_finished: np.ndarray  # [N] bool: the generated response ended with an end-of-turn token
    projection_response: np.ndarray  # [N, K] float64
    projection_own: np.ndarray  # [N, K] float64
    difference: np.ndarray  # [N, K] float64: projection_response - projection_own
    order: np.ndarray  # [K, N] int64: samples by difference, largest first
    path: Path | None = None

    def ranked(self, direction: int | str = 0) -> list[dict]:
        """The samples, largest difference first, on one direction (index or name)."""
        k = self.names.index(direction) if isinstance(direction, str) else direction
        return [{"rank": r, "unit": int(self.unit[i]), "row": int(self.row[i]), "document": int(self.document[i]),
                 "difference": float(self.difference[i, k]),
                 "projection_response": float(self.projection_response[i, k]),
                 "projection_own": float(self.projection_own[i, k]), "prompt": self.prompt[i],
                 "response": self.response[i], "own": self.own[i]} for r, i in enumerate(self.order[k].tolist())]

    def table(self, n: int = 5, width: int = 60) -> str:
        """The top and bottom ``n`` samples on the first direction, one line each, for the terminal."""
        def cut(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= width else text[: width - 3] + "..."

        rows = self.ranked(0)
        picked = rows if len(rows) <= 2 * n else rows[:n] + rows[-n:]
        lines = [f"{len(rows):,} samples ranked by projection difference on {self.names[0]} (layer "
                 f"{self.attrs['layer']}): response - own",
                 f"{'rank':>5} {'doc':>7} {'diff':>9} {'resp':>9} {'own':>9}  response | own"]
        for r in picked:
            lines.append(f"{r['rank']:>5} {r['document']:>7} {r['difference']:>9.3f} {r['projection_response']:>9.3f} "
                         f"{r['projection_own']:>9.3f}  {cut(r['response'])!r} | {cut(r['own'])!r}")
        return "\n".join(lines)


def rank(difference: np.ndarray) -> np.ndarray:
    """[K, N]: per direction, the samples by difference, largest first; NaN last; ties keep corpus order."""
    keys = np.where(np.isnan(difference), np.inf, -difference)  # [N, K]
    return np.stack([np.argsort(keys[:, k], kind="stable") for k in range(difference.shape[1])]).astype(np.int64) \
        if difference.shape[1] else np.zeros((0, difference.shape[0]), np.int64)


def write_screening(path: str | Path, *, names: list[str], units: np.ndarray, columns: dict[str, np.ndarray],
                    texts: dict[str, list[str]], attrs: dict) -> Path:
    """Write the file atomically: ``columns`` hold unit, row, document, response_tokens, own_tokens, own_finished,
    projection_response and projection_own; the difference and the ranking are computed here."""
    path = Path(path)
    difference = columns["projection_response"] - columns["projection_own"]
    with atomic_h5(path, FORMAT, FORMAT_VERSION, attrs) as f:
        directions = f.create_group("directions")
        write_strings(directions, "name", names)
        dataset(directions, "unit", np.asarray(units, np.float32))
        samples = f.create_group("samples")
        for name in ("unit", "row", "document", "response_tokens", "own_tokens", "own_finished",
                     "projection_response", "projection_own"):
            dataset(samples, name, columns[name])
        dataset(samples, "difference", difference)
        dataset(samples, "order", rank(difference))
        for name in TEXTS:
            write_strings(samples, name, texts[name])
    return path


def read_screening(path: str | Path) -> ScreeningResults:
    path = Path(path)
    with open_h5(path, FORMAT, FORMAT_VERSION, "screening") as f:
        read = CheckedReader(path, f)
        attrs = plain_attrs(f)
        s = f["samples"]
        arrays = {name: read(s[name]) for name in ("unit", "row", "document", "response_tokens", "own_tokens",
                                                   "own_finished", "projection_response", "projection_own",
                                                   "difference", "order")}
        texts = {name: read_strings(s, name, read) for name in TEXTS}
        names = read_strings(f["directions"], "name", read)
        units = read(f["directions"]["unit"])
    return ScreeningResults(attrs=attrs, config=json.loads(attrs["config"]), names=names, units=units, **arrays,
                            **texts, path=path)
