"""The schedule: shards planned from metadata, and the end of a budgeted run found from the units' own results.

A simulated corpus (units with known per-document token counts) is run through the schedule with several workers
finishing in random order, resumes and failures, and the documents it covers are compared with a serial count.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from personamine.corpus import CorpusFile, Manifest, Unit
from personamine.shards.plan import Coverage, Schedule, Shard, UnitDone


def corpus(rng: random.Random, n_units: int, known_rows: bool) -> tuple[Manifest, list[np.ndarray]]:
    tokens = [np.array([rng.choice([0, 0, 3, 17, 40, 200]) for _ in range(rng.randint(0, 9))], np.int64)
              for _ in range(n_units)]
    files = [CorpusFile(f"/c/{i}.parquet", "parquet", 1, "v") for i in range(3)]
    units = [Unit(i, min(i * 3 // n_units, 2), i, i + 1, len(t) if known_rows else None)
             for i, t in enumerate(tokens)]
    return Manifest("c", None, "text", files, units), tokens


def serial_rows(tokens: list[np.ndarray], max_documents, max_tokens) -> int:
    """The whole documents, in order, up to and including the one that reaches the budget."""
    flat = np.concatenate(tokens)
    n = flat.size
    if max_documents is not None:
        n = min(n, max_documents)
    if max_tokens is not None:
        reached = np.nonzero(np.cumsum(flat) >= max_tokens)[0]
        if reached.size:
            n = min(n, int(reached[0]) + 1)
    return n


def mine(shard: Shard, tokens: list[np.ndarray]) -> Coverage:
    """What a worker reports: rows read up to the row limit, or up to the document that exhausts the budget."""
    done, reached = [], False
    for ref in shard.units:
        counts = tokens[ref.index]
        last = ref is shard.units[-1]
        n = len(counts)
        if last and shard.row_limit is not None:
            n = shard.row_limit
        if last and shard.budget is not None:
            b = shard.budget
            for i in range(len(counts)):
                if (b.documents is not None and i + 1 >= b.documents) or (
                        b.tokens is not None and counts[:i + 1].sum() >= b.tokens):
                    n, reached = i + 1, True
                    break
        done.append(UnitDone(ref.index, n, int(counts[:n].sum()), n == len(counts)))
    return Coverage(done, reached)


def run(schedule: Schedule, tokens, rng: random.Random, workers: int, store: dict, fail_rate=0.0,
        stop_after: int | None = None) -> list[int]:
    """Run the schedule to its end (or ``stop_after`` shards); returns the units of every shard mined."""
    flying: list[Shard] = []
    finished = 0
    mined: list[int] = []
    while not schedule.finished():
        while len(flying) < workers and (shard := schedule.next()) is not None:
            flying.append(shard)
        assert flying, "an unfinished schedule with nothing in flight must have a next shard"
        shard = flying.pop(rng.randrange(len(flying)))
        if rng.random() < fail_rate:
            schedule.requeue(shard)
            continue
        coverage = mine(shard, tokens)
        mined.extend(u.index for u in shard.units)
        if schedule.needed(coverage):
            store[coverage.name] = coverage
        schedule.record(shard, coverage)
        finished += 1
        if stop_after is not None and finished == stop_after:
            return mined
    return mined


def doc_tokens_of(tokens):
    return lambda name, unit: tokens[unit]


@pytest.mark.parametrize("seed", range(40))
def test_budgets_cover_exactly_what_a_serial_count_chooses(seed):
    rng = random.Random(seed)
    known = rng.random() < 0.5
    manifest, tokens = corpus(rng, rng.randint(1, 12), known)
    total_docs, total_tokens = sum(len(t) for t in tokens), int(sum(t.sum() for t in tokens))
    max_documents = rng.choice([None, 1, rng.randint(1, total_docs + 3)])
    sums = np.cumsum(np.concatenate(tokens)).tolist()
    # Budgets that land exactly on a document's cumulative count, just after one, or anywhere.
    max_tokens = rng.choice([None, 1, rng.randint(1, total_tokens + 50), rng.choice(sums) or None,
                             (rng.choice(sums) + 1) or None])
    if total_docs == 0:
        return
    expected = serial_rows(tokens, max_documents, max_tokens)
    store: dict[str, Coverage] = {}
    workers = rng.choice([1, 2, 4])
    # A first attempt that dies part way, then a resume from what it stored, with failures along the way.
    first = Schedule(manifest, rng.choice([None, 1, 3]), max_documents, max_tokens, {}, doc_tokens_of(tokens))
    run(first, tokens, rng, workers, store, fail_rate=0.2, stop_after=rng.randint(0, 3))
    schedule = Schedule(manifest, rng.choice([None, 2, 5]), max_documents, max_tokens, dict(store),
                        doc_tokens_of(tokens))
    mined = run(schedule, tokens, rng, workers, store, fail_rate=0.2)
    if workers == 1:  # each unit starts knowing the budget left, so none is ever mined twice
        assert len(mined) == len(set(mined)), mined
    names, offsets = schedule.final()
    covered = [u for name in names for u in store[name].units]
    assert [u.index for u in covered] == list(range(len(covered)))  # units 0..k, each once, in order
    assert sum(u.rows for u in covered) == expected
    assert all(u.complete for u in covered[:-1])
    assert offsets.tolist() == np.cumsum([0] + [u.rows for u in covered])[:-1].tolist()


def test_shards_group_units_the_same_way_on_every_resume():
    manifest, tokens = corpus(random.Random(0), 13, True)
    names = [p.name for p in Schedule(manifest, 6, None, None, {}, doc_tokens_of(tokens)).queue]
    assert names == ["units-000000-000001", "units-000002-000003", "units-000004-000005", "units-000006-000007",
                     "units-000008-000009", "units-000010-000012"]
    done = {"units-000002-000003": mine(Shard((manifest.ref(2), manifest.ref(3))), tokens)}
    again = [p.name for p in Schedule(manifest, 6, None, None, done, doc_tokens_of(tokens)).queue]
    assert again == [n for n in names if n != "units-000002-000003"]
    # A different grouping reuses what is done and plans the rest.
    other = Schedule(manifest, 2, None, None, done, doc_tokens_of(tokens))
    assert [p.name for p in other.queue] == ["units-000000-000001", "units-000004-000005", "units-000006-000012"]


def test_a_known_document_cut_is_planned_up_front():
    manifest, tokens = corpus(random.Random(3), 8, True)
    counts = [len(t) for t in tokens]
    cut = counts[0] + counts[1] + 1  # one row into unit 2 (or later, if units are empty)
    schedule = Schedule(manifest, None, cut, None, {}, doc_tokens_of(tokens))
    assert not schedule.dynamic
    shards = list(schedule.queue)
    assert shards[-1].row_limit is not None or sum(counts[:len(shards)]) == cut
    assert sum(len(tokens[p.units[0].index]) for p in shards[:-1]) + (shards[-1].row_limit or counts[
        shards[-1].units[0].index]) == cut
