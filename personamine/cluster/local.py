"""In-process backend: one engine on one device, pieces in schedule order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from personamine.config import MineConfig
from personamine.shards.plan import Piece, Schedule
from personamine.shards.run import MiningEngine, PieceResult, run_piece


class LocalBackend:
    def __init__(self, config: MineConfig, features: np.ndarray) -> None:
        self.config, self.features = config, features
        self.engine: MiningEngine | None = None

    def start(self) -> None:
        """Nothing to start: the engine loads on the first piece (a resumed, finished run needs none)."""

    def preflight(self, pieces: list[Piece], n_tokens: int, min_fve: float):
        from personamine.shards.preflight import preflight_engine

        self.engine = self.engine or MiningEngine(self.config, self.features)
        return preflight_engine(self.engine, pieces, n_tokens, min_fve)

    def run(self, schedule: Schedule, on_result: Callable[[PieceResult], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        while not schedule.finished():
            piece = schedule.next()
            if piece is None:  # nothing is in flight here, so an unfinished schedule always has a next piece
                raise RuntimeError("the schedule is not finished but has no piece to run")
            self.engine = self.engine or MiningEngine(self.config, self.features)
            on_result(run_piece(self.engine, piece, on_batch=on_batch))

    def close(self) -> None:
        self.engine = None
