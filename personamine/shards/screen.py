"""Screening one shard of a conversation corpus (``run_screen_shard``, which both backends call, as they call
``run.run_shard`` for mining): per sample, its assistant response's projection on each direction and the projection
of the model's own greedy response to the same prompt.

A sample is a row whose conversation ends with an assistant turn after at least one other turn. Its prompt is every
turn before that last one (system, user and earlier assistant turns alike: a multi-turn row is one sample, its last
assistant turn, read in its whole context), rendered with the chat template and its generation prompt, as
persona vectors' ``eval/cal_projection.py`` renders ``messages[:-1]``. The response's tokens are its content
tokenized on its own and appended to the prompt's, exactly as the model's own response's generated tokens are, with
no end-of-turn token: both responses are read the same way. A row whose last turn is not the assistant's (or that
has no turn before it, or an empty last turn) is no sample and is counted. Batches never mix units, so a unit's
batches, and so its rounding and greedy choices, are the same in any shard, on any backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from personamine.config import ScreenConfig
from personamine.corpus import MALFORMED, UnitRef, unit_rows
from personamine.corpus.conversations import BadConversation, ChatRenderer, parse_turns
from personamine.model.generate import GenerationSettings, generate, pad_id
from personamine.model.loading import find_decoder_layers, load_causal_lm, load_tokenizer
from personamine.model.projection import response_projections
from personamine.model.prompts import tokenize
from personamine.shards.documents import UnitTally
from personamine.shards.plan import Budget, Coverage, Shard

# rows_too_long: samples whose prompt and response (or prompt and max_new_tokens) pass the model's context length
COUNTERS = ("n_rows", "n_samples", "rows_not_samples", "rows_malformed", "rows_skipped", "tokens_generated",
            "rows_too_long")
_END = object()
STRING_FIELDS = ("prompt", "response", "own")  # rendered prompt, the row's response, the model's own response


@dataclass
class ScreenResult:
    shard: Shard
    coverage: Coverage
    arrays: dict[str, np.ndarray]  # per sample, in corpus order: see ``_Samples.arrays``
    strings: dict[str, list[str]]  # STRING_FIELDS, per sample
    counters: dict[str, int]
    doc_tokens: list[np.ndarray]  # per unit read, each row's prompt + response tokens (0 for a row that is no sample)
    seconds: float = 0.0


class ScreenEngine:
    """What a worker loads once: the whole model (generation needs its head), the tokenizer and chat renderer, the
    directions' unit vectors as a [D, K] matrix on the model's device."""

    def __init__(self, config: ScreenConfig, units: np.ndarray) -> None:
        assert config.layer is not None, "the job resolves the layer"
        self.config = config
        self.model, self.device, _ = load_causal_lm(config.model, dtype=config.dtype, device=config.device,
                                                    revision=config.revision)
        self.tokenizer = load_tokenizer(config.model, revision=config.revision)
        self.layer_module = find_decoder_layers(self.model)[config.layer]
        self.renderer = ChatRenderer(self.tokenizer, system_prompt=config.system_prompt,
                                     date_string=config.date_string, generation_prompt=True)
        self.units = torch.from_numpy(np.ascontiguousarray(units.T, dtype=np.float32)).to(self.device)
        self.pad = pad_id(self.tokenizer)
        self.settings = GenerationSettings(max_new_tokens=config.max_new_tokens, sample=False,
                                           batch_size=config.batch_size)
        # positions the model has (None: no limit it states); a longer sequence is no sample, counted
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)


@dataclass
class _Sample:
    unit: int
    row: int
    prompt_ids: list[int]
    prompt: str
    response: str


@dataclass
class _Samples:
    columns: dict[str, list] = field(default_factory=lambda: {k: [] for k in (
        "unit", "row", "projection_response", "projection_own", "response_tokens", "own_tokens", "own_finished",
        *STRING_FIELDS)})

    def arrays(self, n_directions: int) -> dict[str, np.ndarray]:
        c = self.columns
        empty = np.zeros((0, n_directions))
        return {"unit": np.asarray(c["unit"], np.int64), "row": np.asarray(c["row"], np.int64),
                "projection_response": np.concatenate(c["projection_response"]) if c["unit"] else empty,
                "projection_own": np.concatenate(c["projection_own"]) if c["unit"] else empty,
                "response_tokens": np.asarray(c["response_tokens"], np.int32),
                "own_tokens": np.asarray(c["own_tokens"], np.int32),
                "own_finished": np.asarray(c["own_finished"], bool)}


def _sample(engine: ScreenEngine, unit: UnitRef, row: int, value: object,
            counters: dict[str, int]) -> _Sample | None:
    """The row as a sample, or None (counted) if it is none."""
    if value is None:
        counters["rows_skipped"] += 1
        return None
    if value is MALFORMED:
        counters["rows_malformed"] += 1
        return None
    try:
        turns = parse_turns(value)
        if len(turns) < 2 or turns[-1]["role"] != "assistant" or not turns[-1]["content"]:
            counters["rows_not_samples"] += 1
            return None
        rendered = engine.renderer.render(turns[:-1])
    except BadConversation as exc:
        if not engine.config.skip_malformed_rows:
            raise BadConversation(f"corpus file {unit.url!r}, unit {unit.index} row {row}: the conversation {exc} "
                                  "(skip_malformed_rows skips and counts such rows)") from None
        counters["rows_malformed"] += 1
        return None
    response = turns[-1]["content"]
    limit = engine.max_positions
    if limit is not None:
        longest = max(len(tokenize(engine.tokenizer, [response])[0]), engine.config.max_new_tokens)
        if len(rendered.ids) + longest > limit:
            counters["rows_too_long"] += 1
            return None
    return _Sample(unit.index, row, rendered.ids, rendered.text, response)


def _screen_batch(engine: ScreenEngine, batch: list[_Sample], out: _Samples, counters: dict[str, int]) -> list[int]:
    """Generate, project, record; return each sample's prompt + response token count."""
    tok = engine.tokenizer
    prompts = [s.prompt_ids for s in batch]
    response_ids = tokenize(tok, [s.response for s in batch])
    gens = generate(engine.model, tok, prompts, engine.settings)
    own_ids = [gens.token_ids[i, : gens.length[i]].tolist() for i in range(len(batch))]
    counters["tokens_generated"] += int(gens.length.sum())
    c = out.columns
    c["projection_response"].append(response_projections(engine.model, engine.layer_module, prompts, response_ids,
                                                         engine.units, engine.pad))
    c["projection_own"].append(response_projections(engine.model, engine.layer_module, prompts, own_ids,
                                                    engine.units, engine.pad))
    for i, s in enumerate(batch):
        c["unit"].append(s.unit)
        c["row"].append(s.row)
        c["prompt"].append(s.prompt)
        c["response"].append(s.response)
        c["own"].append(tok.decode(own_ids[i], skip_special_tokens=True))
        c["response_tokens"].append(len(response_ids[i]))
        c["own_tokens"].append(len(own_ids[i]))
        c["own_finished"].append(bool(gens.finished[i]))
    counters["n_samples"] += len(batch)
    return [len(p) + len(r) for p, r in zip(prompts, response_ids, strict=True)]


def run_screen_shard(engine: ScreenEngine, shard: Shard,
                     on_batch: Callable[[int, int, int], None] | None = None) -> ScreenResult:
    """Screen one shard's units; ``on_batch(samples, tokens generated, rows read)`` sees each batch as it ends."""
    began = time.perf_counter()
    counters = dict.fromkeys(COUNTERS, 0)
    out = _Samples()
    tallies: list[UnitTally] = []
    for unit in shard.units:
        last = unit is shard.units[-1]
        tallies.append(_screen_unit(engine, unit, shard.row_limit if last else None, shard.budget if last else None,
                                    out, counters, on_batch))
    coverage = Coverage([t.done() for t in tallies], reached_budget=any(t.reached_budget for t in tallies))
    strings = {k: out.columns[k] for k in STRING_FIELDS}
    return ScreenResult(shard, coverage, out.arrays(engine.units.shape[1]), strings, counters,
                        [np.asarray(t.doc_tokens, np.int32) for t in tallies], time.perf_counter() - began)


def _screen_unit(engine: ScreenEngine, unit: UnitRef, row_limit: int | None, budget: Budget | None, out: _Samples,
                 counters: dict[str, int], on_batch: Callable[[int, int, int], None] | None) -> UnitTally:
    """One unit's rows, up to ``row_limit`` rows or the budget's documents, in batches of samples."""
    tally = UnitTally(unit.index)
    pending: list[_Sample] = []

    def flush() -> None:
        generated = counters["tokens_generated"]
        counts = _screen_batch(engine, pending, out, counters)
        for s, n in zip(pending, counts, strict=True):
            tally.doc_tokens[s.row] = n
            tally.tokens += n
        if on_batch is not None:
            on_batch(len(pending), counters["tokens_generated"] - generated, tally.rows)
        pending.clear()

    rows = iter(unit_rows(unit, engine.config.messages_column, engine.config.skip_malformed_rows))
    for value in rows:
        row = tally.rows
        tally.rows += 1
        counters["n_rows"] += 1
        tally.doc_tokens.append(0)
        sample = _sample(engine, unit, row, value, counters)
        if sample is not None:
            pending.append(sample)
            if len(pending) == engine.config.batch_size:
                flush()
        spent = budget is not None and budget.documents is not None and tally.rows >= budget.documents
        if spent or (row_limit is not None and tally.rows >= row_limit):
            tally.reached_budget = row_limit is None
            tally.complete = next(rows, _END) is _END  # read to its end only if no row follows
            break
    if pending:
        flush()
    return tally
