"""The work dir: one durable checkpoint per finished shard, tied to the run's config fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from personamine.atomic import atomic_write_bytes
from personamine.config import EXECUTION_FIELDS, MineConfig
from personamine.errors import PersonamineError
from personamine.merge.negatives import NegativeBuffer
from personamine.merge.samples import SampleBuffer
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer
from personamine.shards.plan import Shard
from personamine.shards.run import ShardResult


class WorkDir:
    def __init__(self, config: MineConfig) -> None:
        self.path = config.resolved_work_dir()
        self.config = config

    def open(self, n_documents: int, shards: list[Shard]) -> None:
        """Create, or check that an existing work dir belongs to this exact run."""
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / "run.json"
        mine = {"fingerprint": self.config.fingerprint(), "config": self.config.to_dict(),
                "n_documents": n_documents, "shards": [[s.doc_start, s.doc_end] for s in shards]}
        if manifest.exists():
            theirs = json.loads(manifest.read_text())
            if theirs["fingerprint"] != mine["fingerprint"] or theirs["shards"] != mine["shards"]:
                # Over both key sets: a field added since that run (e.g. samples_per_interval) counts as changed.
                changed = sorted(k for k in set(theirs["config"]) | set(mine["config"])
                                 if k not in EXECUTION_FIELDS and mine["config"].get(k) != theirs["config"].get(k))
                raise PersonamineError(
                    f"work dir {str(self.path)!r} holds a different run (changed: {', '.join(changed) or 'corpus'}); "
                    "use another --work-dir or delete it to start over"
                )
            return
        atomic_write_bytes(manifest, json.dumps(mine, indent=1).encode())

    def shard_path(self, shard: Shard) -> Path:
        return self.path / f"{shard.name}.npz"

    def done(self, shard: Shard) -> bool:
        return self.shard_path(shard).exists()

    def save(self, result: ShardResult) -> None:
        import io

        arrays = {f"buffer_{k}": v for k, v in result.buffer.arrays().items()}
        arrays.update({f"stats_{k}": v for k, v in result.stats.arrays().items()})
        if result.samples is not None:
            arrays.update({f"samples_{k}": v for k, v in result.samples.arrays().items()})
        if result.negatives is not None:
            arrays.update({f"negatives_{k}": v for k, v in result.negatives.arrays().items()})
        arrays["seconds"] = np.float64(result.seconds)
        blob = io.BytesIO()
        np.savez(blob, **arrays)
        atomic_write_bytes(self.shard_path(result.shard), blob.getvalue())

    def load(self, shard: Shard) -> ShardResult:
        with np.load(self.shard_path(shard)) as data:
            buffer = TopKBuffer.from_arrays(
                {k[7:]: data[k] for k in data.files if k.startswith("buffer_")}, dedupe=self.config.dedupe)
            stats = FeatureStats.from_arrays({k[6:]: data[k] for k in data.files if k.startswith("stats_")})
            sample_arrays = {k[8:]: data[k] for k in data.files if k.startswith("samples_")}
            samples = SampleBuffer.from_arrays(sample_arrays, dedupe=self.config.dedupe) if sample_arrays else None
            negative_arrays = {k[10:]: data[k] for k in data.files if k.startswith("negatives_")}
            negatives = NegativeBuffer.from_arrays(negative_arrays, dedupe=self.config.dedupe) if negative_arrays \
                else None
            return ShardResult(shard, buffer, stats, float(data["seconds"]), samples, negatives)
