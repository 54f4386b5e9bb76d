"""Shards of work (runs of consecutive units) and the schedule that hands them out and finds where the run ends.

Units are the leaves: each is read, windowed and batched on its own, and every statistic merges exactly, so the
output does not depend on how units are grouped into shards (``n_shards``), on the number of workers, or on local vs
Ray. Without a budget, or with ``max_documents`` over units whose row counts the metadata gives, the shards are
planned up front. With ``max_tokens`` (or ``max_documents`` over line-block units, whose row counts are unknown until
read) the end of the run is found from the units' own results, with no pre-pass: shards are single units handed out
in corpus order; a unit whose predecessors are all done is told the budget left and stops after the document that
reaches it; a unit mined before that was known, and found to hold the cut, is mined again up to the cut document.
So the run covers exactly the whole documents, in order, up to and including the one that reaches the budget: what
a serial count would choose.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from personamine.corpus import Manifest, UnitRef
from personamine.errors import PersonamineError


@dataclass(frozen=True)
class Budget:
    """What is left of the run's limits when a unit starts (None: no such limit)."""

    documents: int | None = None
    tokens: int | None = None


@dataclass(frozen=True)
class Shard:
    units: tuple[UnitRef, ...]
    row_limit: int | None = None  # read only this many rows of the last unit
    budget: Budget | None = None  # stop after the document that reaches it (single-unit shards only)

    @property
    def name(self) -> str:
        return coverage_name(self.units[0].index, self.units[-1].index, self.row_limit)

    def describe(self) -> str:
        first, last = self.units[0].index, self.units[-1].index
        where = f"unit {first}" if first == last else f"units {first}-{last}"
        return f"{where} ({self.units[0].url})" + (f", rows 0-{self.row_limit - 1}" if self.row_limit else "")


def coverage_name(first: int, last: int, rows: int | None) -> str:
    return f"units-{first:06d}-{last:06d}" + (f"-rows-{rows}" if rows is not None else "")


@dataclass
class UnitDone:
    """What a finished shard says about each unit it read."""

    index: int
    rows: int  # rows read (skipped rows included: they keep their document index)
    tokens: int  # tokens of the documents read
    complete: bool  # read to its end (False: stopped at a row limit or at the budget)


@dataclass
class Coverage:
    units: list[UnitDone]
    reached_budget: bool = False  # the shard stopped because its budget ran out

    @property
    def name(self) -> str:
        last = self.units[-1]
        return coverage_name(self.units[0].index, last.index, None if last.complete else last.rows)


@dataclass
class _Run:
    """The needed part of the corpus once it is known: units ``0..last`` with ``rows`` of the last one."""

    last: int
    rows: int | None  # None: all of it


class Schedule:
    def __init__(self, manifest: Manifest, n_shards: int | None, max_documents: int | None, max_tokens: int | None,
                 done: dict[str, Coverage], doc_tokens: Callable[[str, int], np.ndarray]) -> None:
        """``done``: finished shards by name (from the work dir); ``doc_tokens(name, unit)``: the per-document token
        counts of a unit in a finished shard (read only for the unit that holds a token cut)."""
        self.manifest = manifest
        self.max_documents, self.max_tokens = max_documents, max_tokens
        self.doc_tokens = doc_tokens
        self.full: dict[int, tuple[UnitDone, str]] = {}  # unit -> (its record, the shard that holds it whole)
        self.partial: dict[int, tuple[UnitDone, str]] = {}  # unit -> a shard that holds only its first rows
        self.shards: dict[str, Coverage] = {}
        self.produced: list[str] = []  # shards finished in this run
        self.in_flight: dict[str, Shard] = {}
        self.flying_units: set[int] = set()
        known = all(u.rows is not None for u in manifest.units)
        self.dynamic = max_tokens is not None or (max_documents is not None and not known)
        # The dynamic end: the leading units read whole, their documents and tokens, and the run once known.
        self._prefix = self._prefix_docs = self._prefix_tokens = self._candidate = 0
        self.run: _Run | None = None
        for name, coverage in done.items():
            self._remember(coverage, name)
        self.queue: deque[Shard] = deque()
        self.chosen: list[str] = []
        if not self.dynamic:
            self.run = self._static_cut(max_documents) if max_documents is not None else _Run(len(manifest) - 1, None)
            self._plan_static(n_shards)

    # ---------------------------------------------------------------- static plans

    def _static_cut(self, max_documents: int) -> _Run:
        seen = 0
        for unit in self.manifest.units:
            rows = int(unit.rows)  # type: ignore[arg-type]
            if seen + rows >= max_documents:
                return _Run(unit.index, None if seen + rows == max_documents else max_documents - seen)
            seen += rows
        return _Run(len(self.manifest) - 1, None)

    def _usable(self, coverage: Coverage) -> bool:
        """Whether a finished shard holds only units of the run, each as the run needs it."""
        run, last = self.run, coverage.units[-1]
        assert run is not None
        if last.index > run.last or any(not u.complete for u in coverage.units[:-1]):
            return False
        if last.index == run.last:
            return last.complete if run.rows is None else (not last.complete and last.rows == run.rows)
        return last.complete

    def _plan_static(self, n_shards: int | None) -> None:
        run = self.run
        assert run is not None
        covered: set[int] = set()
        for name, coverage in sorted(self.shards.items(), key=lambda kv: kv[1].units[0].index):
            indices = {u.index for u in coverage.units}
            if self._usable(coverage) and not indices & covered:
                covered |= indices
                self.chosen.append(name)
        n_units = run.last + 1
        n = min(n_shards or n_units, n_units)
        bounds = [i * n_units // n for i in range(n + 1)]  # the same shards on every resume with the same n_shards
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            group: list[int] = []
            for i in range(lo, hi):
                if i in covered:
                    if group:
                        self.queue.append(self._shard(group))
                    group = []
                else:
                    group.append(i)
            if group:
                self.queue.append(self._shard(group))

    def _shard(self, units: list[int]) -> Shard:
        assert self.run is not None
        limit = self.run.rows if units[-1] == self.run.last else None
        return Shard(tuple(self.manifest.ref(i) for i in units), row_limit=limit)

    # ---------------------------------------------------------------- results

    def _remember(self, coverage: Coverage, name: str) -> None:
        self.shards[name] = coverage
        for unit in coverage.units:
            (self.full if unit.complete else self.partial)[unit.index] = (unit, name)

    def record(self, shard: Shard, coverage: Coverage) -> None:
        self.in_flight.pop(shard.name, None)
        self.flying_units.difference_update(u.index for u in shard.units)
        self._remember(coverage, coverage.name)
        self.produced.append(coverage.name)

    def needed(self, coverage: Coverage) -> bool:
        """False for a shard that lies wholly past the end of the run (its result need not be kept)."""
        if self.dynamic:
            self._advance()
        return self.run is None or coverage.units[0].index <= self.run.last

    def requeue(self, shard: Shard) -> None:
        self.in_flight.pop(shard.name, None)
        self.flying_units.difference_update(u.index for u in shard.units)
        self._candidate = min(self._candidate, shard.units[0].index)
        if not self.dynamic:
            self.queue.appendleft(shard)

    # ---------------------------------------------------------------- the dynamic end of the run

    def _advance(self) -> None:
        """Extend the prefix of units read whole, and find the run's end once the budget runs out inside it."""
        n = len(self.manifest)
        while self.run is None and self._prefix < n:
            index = self._prefix
            if index in self.full:
                unit, name = self.full[index]
                rows = self._cut_rows(unit, name)
                if rows is not None:
                    self.run = _Run(index, None if rows == unit.rows else rows)
                    return
                self._prefix += 1
                self._prefix_docs += unit.rows
                self._prefix_tokens += unit.tokens
            elif index in self.partial:
                self.run = _Run(index, self.partial[index][0].rows)  # a partial read always ends at the cut
                return
            else:
                return
        if self.run is None and self._prefix == n:
            self.run = _Run(n - 1, None)

    def _cut_rows(self, unit: UnitDone, name: str) -> int | None:
        """Rows of this whole unit inside the run if the budget runs out in it, else None."""
        cuts = []
        if self.max_documents is not None and self._prefix_docs + unit.rows >= self.max_documents:
            cuts.append(self.max_documents - self._prefix_docs)
        if self.max_tokens is not None and self._prefix_tokens + unit.tokens >= self.max_tokens:
            counts = np.cumsum(self.doc_tokens(name, unit.index)) + self._prefix_tokens
            cuts.append(int(np.searchsorted(counts, self.max_tokens, side="left")) + 1)
        return min(cuts) if cuts else None

    def _left(self) -> Budget:
        return Budget(None if self.max_documents is None else self.max_documents - self._prefix_docs,
                      None if self.max_tokens is None else self.max_tokens - self._prefix_tokens)

    def _too_far(self) -> bool:
        """Whether the units in flight, at the mean size of those read so far, would likely end the run first."""
        if self.max_tokens is None or not self.full:
            return False
        mean = sum(u.tokens for u, _ in self.full.values()) / len(self.full)
        return self._prefix_tokens + mean * len(self.flying_units) >= self.max_tokens

    def next(self) -> Shard | None:
        """The next shard to hand out, or None if there is none now (all done, or waiting on shards in flight)."""
        shard = self.queue.popleft() if not self.dynamic and self.queue else (
            self._next_dynamic() if self.dynamic else None)
        if shard is not None:
            self.in_flight[shard.name] = shard
            self.flying_units.update(u.index for u in shard.units)
        return shard

    def _next_dynamic(self) -> Shard | None:
        self._advance()
        if self.run is not None:
            if self._cut_done():
                return None
            shard = Shard((self.manifest.ref(self.run.last),), row_limit=self.run.rows)
            return None if shard.name in self.in_flight else shard
        index = max(self._candidate, self._prefix)
        while index < len(self.manifest) and (index in self.full or index in self.partial
                                              or index in self.flying_units):
            index += 1
        self._candidate = index
        if index == len(self.manifest):
            return None
        if index == self._prefix:
            return Shard((self.manifest.ref(index),), budget=self._left())
        return None if self._too_far() else Shard((self.manifest.ref(index),))

    def _cut_done(self) -> bool:
        run = self.run
        assert run is not None
        return run.rows is None or (run.last in self.partial and self.partial[run.last][0].rows == run.rows)

    def finished(self) -> bool:
        if not self.dynamic:
            return not self.queue and not self.in_flight
        self._advance()
        return self.run is not None and self._cut_done()

    # ---------------------------------------------------------------- the merge

    def final(self) -> tuple[list[str], np.ndarray]:
        """(the shards to merge, in unit order; the global document index of each needed unit's first row)."""
        if not self.finished():
            raise PersonamineError("the run is not finished")
        run = self.run
        assert run is not None
        if self.dynamic:
            names = [self.full[i][1] for i in range(run.last)]
            names.append(self.full[run.last][1] if run.rows is None else self.partial[run.last][1])
        else:
            names = self.chosen + [n for n in self.produced if self._usable(self.shards[n])]
            names.sort(key=lambda n: self.shards[n].units[0].index)
        rows = [u.rows for name in names for u in self.shards[name].units]
        return names, np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])[:-1]
