"""The work dir: one verified checkpoint per finished shard of work, tied to the run's config and corpus.

A checkpoint is ``<shard>.npz`` (the shard's buffers and stats) plus ``<shard>.json`` (what the shard covered and the
npz's SHA-256), written in that order, each atomically: a shard counts as done only once its ``.json`` exists and
its npz matches the checksum. Checkpoints are verified when a run starts and again when read; a damaged one is
reported by path, moved to ``damaged/`` and its shard is mined again, so the result is the same as an undisturbed
run's. ``run.json`` holds the config's and the corpus's fingerprints: a resume whose inputs changed is refused, with
the change named. A work dir that holds no checkpoint (a start that failed) never blocks: a failed run removes it,
and a ``run.json`` found alone is replaced. One run uses a work dir at a time: it holds an OS file lock on
``<work dir>/lock`` while it runs (``WorkDir.lock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from personamine.atomic import atomic_write_bytes, check_writable, ensure_dir
from personamine.config import EXECUTION_FIELDS, MineConfig, ScreenConfig
from personamine.corpus import Manifest, describe_change
from personamine.errors import PersonamineError
from personamine.merge.documents import DocumentScores
from personamine.merge.negatives import NegativeBuffer
from personamine.merge.samples import SampleBuffer
from personamine.merge.stats import FeatureStats
from personamine.merge.topk import TopKBuffer
from personamine.shards.plan import Coverage, Schedule, UnitDone
from personamine.shards.run import ReadoutResult, ShardResult

DAMAGE_RETRIES = 3  # rounds of running again shards whose checkpoints turned out damaged when read


class DamagedCheckpoint(Exception):
    """A checkpoint failed its checksum while being read: it has been moved aside and must be mined again."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class WorkDirBusy(PersonamineError):
    """Another run holds the work dir's lock."""


class WorkDir:
    """A run's work dir: mining's, or screening's (``ScreenConfig``, with its own ``execution_fields``, the fields a
    resume may change; its checkpoints are plain arrays, ``save_arrays`` / ``load_arrays``)."""

    def __init__(self, config: MineConfig | ScreenConfig, execution_fields: frozenset[str] = EXECUTION_FIELDS) -> None:
        self.path = config.resolved_work_dir()
        self.config = config
        self.execution_fields = execution_fields
        self._lock: int | None = None

    # ---------------------------------------------------------------- one run at a time

    def lock(self) -> None:
        """Take the work dir's lock (an OS file lock, ``flock``, on ``<work dir>/lock``, held until ``unlock`` or the
        process ends, however it ends): a second run on the same output fails at once, touching nothing. Creates the
        work dir."""
        path = self.path / "lock"
        while True:
            ensure_dir(self.path, "work dir")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the holder removed the work dir between the two calls: make it again
                continue
            except OSError as exc:
                raise PersonamineError(f"cannot lock the work dir {str(self.path)!r}: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip()
                os.close(fd)
                raise WorkDirBusy(
                    f"another run is using the work dir {str(self.path)!r} ({holder or 'a process'}, for output "
                    f"{str(self.config.output)!r}): wait for it to finish, or give this run another output or "
                    "--work-dir") from None
            except OSError as exc:  # a filesystem without locks (some network mounts): run, but say so
                os.close(fd)
                warnings.warn(f"cannot lock the work dir {str(self.path)!r} ({exc.strerror}): a second run on the "
                              "same output would not be stopped", stacklevel=3)
                return
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file the run before removed with its work dir: lock the one there now
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                 .encode())
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the last descriptor releases the lock
            self._lock = None

    def open(self, manifest: Manifest) -> None:
        """Create, or check that an existing work dir belongs to this exact run."""
        check_writable(self.path, "work dir", directory=True)
        ensure_dir(self.path, "work dir")
        run_file = self.path / "run.json"
        mine = {"fingerprint": self.config.fingerprint(), "config": self.config.to_dict(),
                "corpus": manifest.fingerprint()}
        if run_file.exists() and not self.holds_checkpoints():
            # A start that failed before its first checkpoint (a corpus or SAE error found while mining, a crash):
            # nothing to resume, so nothing to protect; the run starts over whatever changed.
            run_file.unlink()
        if run_file.exists():
            try:
                theirs = json.loads(run_file.read_text())
            except (OSError, ValueError) as exc:
                raise PersonamineError(f"work dir {str(self.path)!r} has an unreadable run.json ({exc}); delete the "
                                       "work dir to start over") from exc
            if theirs.get("fingerprint") != mine["fingerprint"]:
                # Over both key sets: a field added since that run counts as changed.
                changed = sorted(k for k in set(theirs.get("config", {})) | set(mine["config"])
                                 if k not in self.execution_fields and mine["config"].get(k) != theirs["config"].get(k))
                raise PersonamineError(
                    f"work dir {str(self.path)!r} holds a different run (changed: {', '.join(changed) or 'config'});"
                    " use another --work-dir or delete it to start over")
            change = describe_change(theirs.get("corpus", {}), mine["corpus"])
            if change is not None:
                raise PersonamineError(f"the corpus changed since the run in work dir {str(self.path)!r} started: "
                                       f"{change}; delete the work dir to start over")
            return
        atomic_write_bytes(run_file, json.dumps(mine, indent=1).encode())

    # ---------------------------------------------------------------- checkpoints

    def _files(self, name: str) -> tuple[Path, Path]:
        return self.path / f"{name}.npz", self.path / f"{name}.json"

    def _set_aside(self, name: str, reason: str) -> None:
        damaged = self.path / "damaged"
        ensure_dir(damaged, "work dir")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = []
        for path in self._files(name):
            if path.exists():
                target = damaged / f"{path.stem}.{stamp}{path.suffix}"
                shutil.move(str(path), target)
                moved.append(target)
        warnings.warn(f"checkpoint {str(self._files(name)[0])!r} is damaged ({reason}): moved to "
                      f"{str(damaged)!r}; its shard of work is mined again", stacklevel=3)

    def _verify(self, name: str, meta: dict) -> str | None:
        """Why the checkpoint is damaged, or None if its npz matches its checksum."""
        npz = self._files(name)[0]
        if not npz.exists():
            return "its .npz is missing"
        if npz.stat().st_size != meta.get("bytes"):
            return f"{npz.stat().st_size:,} bytes instead of {meta.get('bytes', 0):,}"
        if _sha256(npz) != meta.get("sha256"):
            return "checksum mismatch"
        return None

    def completed(self) -> dict[str, Coverage]:
        """Every verified finished shard by name; damaged ones are moved aside (with a warning)."""
        done: dict[str, Coverage] = {}
        for meta_path in sorted(self.path.glob("units-*.json")):
            name = meta_path.stem
            try:
                meta = json.loads(meta_path.read_text())
                coverage = Coverage([UnitDone(*u) for u in meta["units"]], bool(meta["reached_budget"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(name, f"unreadable {meta_path.name}: {exc}")
                continue
            reason = self._verify(name, meta)
            if reason is not None:
                self._set_aside(name, reason)
                continue
            done[name] = coverage
        return done

    def save(self, result: ShardResult) -> None:
        arrays: dict[str, np.ndarray] = {}
        # The first readout's arrays keep their old names, so a classic run's checkpoint reads as it always did; the
        # others' are prefixed with their position in the run (r1_, r2_, ...).
        for i, part in enumerate(result.readouts.values()):
            prefix = f"r{i}_" if i else ""
            arrays.update({f"{prefix}buffer_{k}": v for k, v in part.buffer.arrays().items()})
            arrays.update({f"{prefix}stats_{k}": v for k, v in part.stats.arrays().items()})
            for kind, value in (("samples", part.samples), ("negatives", part.negatives),
                                ("documents", part.documents)):
                if value is not None:
                    arrays.update({f"{prefix}{kind}_{k}": v for k, v in value.arrays().items()})
        self.save_arrays(result.coverage, arrays, result.doc_tokens, result.seconds)

    def save_arrays(self, coverage: Coverage, arrays: dict[str, np.ndarray], doc_tokens: list[np.ndarray],
                    seconds: float) -> None:
        """A finished shard's checkpoint: ``arrays`` (names without the ``doc_tokens_`` prefix), each unit's
        per-row token counts (``doc_tokens``, which a token budget's cut reads) and the shard's time."""
        arrays = dict(arrays)
        for unit, counts in zip(coverage.units, doc_tokens, strict=True):
            arrays[f"doc_tokens_{unit.index}"] = counts
        arrays["seconds"] = np.float64(seconds)
        blob = io.BytesIO()
        np.savez(blob, **arrays)
        data = blob.getvalue()
        name = coverage.name
        npz, meta = self._files(name)
        atomic_write_bytes(npz, data)
        record = {"units": [[u.index, u.rows, u.tokens, u.complete] for u in coverage.units],
                  "reached_budget": coverage.reached_budget, "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(), "seconds": seconds}
        atomic_write_bytes(meta, json.dumps(record).encode())

    def _open_npz(self, name: str):
        npz, meta_path = self._files(name)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            self._set_aside(name, f"unreadable {meta_path.name}: {exc}")
            raise DamagedCheckpoint(name) from exc
        reason = self._verify(name, meta)
        if reason is not None:
            self._set_aside(name, reason)
            raise DamagedCheckpoint(name)
        return np.load(npz)

    def doc_tokens(self, name: str, unit: int) -> np.ndarray:
        with self._open_npz(name) as data:
            return np.array(data[f"doc_tokens_{unit}"])

    def load_arrays(self, name: str) -> dict[str, np.ndarray]:
        """A checkpoint's arrays as ``save_arrays`` stored them, checked against its checksum (``DamagedCheckpoint``:
        set aside, to run again)."""
        with self._open_npz(name) as data:
            return {k: np.array(data[k]) for k in data.files}

    def load(self, name: str) -> list[ReadoutResult]:
        """The checkpoint's result of each readout, in the run's order."""
        dedupe = self.config.dedupe
        with self._open_npz(name) as data:
            parts = []
            for i in range(len(data.files)):
                prefix = f"r{i}_" if i else ""

                def group(kind: str, prefix: str = prefix) -> dict[str, np.ndarray]:
                    head = f"{prefix}{kind}_"
                    return {k[len(head):]: data[k] for k in data.files if k.startswith(head)}

                buffer_arrays = group("buffer")
                if not buffer_arrays:
                    break
                samples, negatives, documents = group("samples"), group("negatives"), group("documents")
                parts.append(ReadoutResult(
                    TopKBuffer.from_arrays(buffer_arrays, dedupe=dedupe), FeatureStats.from_arrays(group("stats")),
                    SampleBuffer.from_arrays(samples, dedupe=dedupe) if samples else None,
                    NegativeBuffer.from_arrays(negatives, dedupe=dedupe) if negatives else None,
                    DocumentScores.from_arrays(documents) if documents else None))
            return parts

    def run_schedule(self, manifest: Manifest, backend, progress, *, n_shards: int | None,
                     max_documents: int | None, max_tokens: int | None, save: Callable[[Any], None],
                     load: Callable[[str], Any], combine: Callable[[Iterator[Any]], Any] = list,
                     on_shard_done: Callable[[Any], None] | None = None) -> tuple[Any, list[str], np.ndarray]:
        """Run on ``backend`` every shard the schedule still needs (the finished ones are this work dir's verified
        checkpoints), checkpointing each result with ``save`` as it comes back; then ``combine`` what ``load`` gives
        for every shard of the final schedule, in order, handed over one at a time (mining merges them as they come,
        so one shard's buffers are in memory at a time). A checkpoint that turns out damaged when loaded is set
        aside and its shard run again, up to ``DAMAGE_RETRIES`` rounds. Returns (what ``combine`` made; the shards'
        names; each unit's first global document index). ``progress`` has ``start(schedule)``, ``batch(...)`` and
        ``shard_done(result)``: mining and screening share this loop."""
        schedule: Schedule | None = None

        def on_result(result: Any) -> None:
            assert schedule is not None
            if schedule.needed(result.coverage):
                save(result)
            schedule.record(result.shard, result.coverage)
            progress.shard_done(result)
            if on_shard_done is not None:
                on_shard_done(result)

        for _ in range(DAMAGE_RETRIES + 1):
            schedule = Schedule(manifest, n_shards, max_documents, max_tokens, self.completed(), self.doc_tokens)
            progress.start(schedule)
            if not schedule.finished():
                backend.run(schedule, on_result, progress.batch)
            names, offsets = schedule.final()
            try:
                return combine(load(name) for name in names), names, offsets
            except DamagedCheckpoint:
                continue  # set aside with a warning: the next round runs its shard again
        raise PersonamineError(f"checkpoints in {str(self.path)!r} keep failing their checksums: is the disk faulty?")

    def holds_checkpoints(self) -> bool:
        """Whether any shard was checkpointed here (verified or not, set aside as damaged or not)."""
        return any(self.path.glob("units-*")) or any((self.path / "damaged").glob("*"))

    def discard_if_empty(self) -> None:
        """After a failed run: a work dir that holds no checkpoint has nothing to resume, so it is removed (it would
        only hold a ``run.json``)."""
        if self.path.is_dir() and not self.holds_checkpoints():
            self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
