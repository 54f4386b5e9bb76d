"""Print a mining file in the terminal: histogram sparkline, logit lens, top contexts (activating tokens marked)
and interval samples."""

from __future__ import annotations

import numpy as np

from personamine.files.mine import MineResults
from personamine.merge.stats import signed_bins
from personamine.roles import ROLE


def render_window(results: MineResults, example: dict, *, mark: str = "«»", width: int = 0) -> str:
    """Decoded example text; each token with activation > 0 is wrapped in marks with its value, and in a
    conversation each turn opens with its role (``‹assistant›``) in place of the template's own header tokens. With
    ``width``, at most that many characters, cut around the peak token so it always shows (``…`` where cut)."""
    parts, peak = _example_parts(results, example, mark)
    if width and sum(map(len, parts)) > width:
        return clip_around(parts, peak, width)
    return "".join(parts)


def _example_parts(results: MineResults, example: dict, mark: str) -> tuple[list[str], int]:
    """The example's printed pieces and the index of the peak token's piece."""
    ids, acts, labels = results.reading(example)
    top = float(acts.max()) if acts.size else 0.0
    best = int(acts.argmax()) if acts.size else 0
    parts: list[str] = []
    peak = 0
    for j, (tid, value, label) in enumerate(zip(ids.tolist(), acts.tolist(), labels, strict=True)):
        if label is not None:
            parts.append(f"{' ' if parts else ''}‹{label}› ")
        text = results.token_text(tid).replace("\n", "⏎")
        if j == best:
            peak = len(parts)
        if value > 0:
            strength = "!" if value >= 0.5 * top else ""
            parts.append(f"{mark[0]}{text}{mark[1]}{strength}{value:.3g}")
        else:
            parts.append(text)
    return parts, peak


def clip_around(parts: list[str], center: int, width: int) -> str:
    """Whole parts around ``parts[center]``, grown one part at a time on alternate sides (right first) while the
    result, with a ``…`` on each cut side, fits in ``width`` characters. The centre part is kept whole even if it
    alone is wider."""
    lo, hi = center, center + 1
    used = len(parts[center])

    def fits(extra: int, new_lo: int, new_hi: int) -> bool:
        return used + extra + (new_lo > 0) + (new_hi < len(parts)) <= width

    grew = True
    while grew:
        grew = False
        if hi < len(parts) and fits(len(parts[hi]), lo, hi + 1):
            used += len(parts[hi])
            hi += 1
            grew = True
        if lo > 0 and fits(len(parts[lo - 1]), lo - 1, hi):
            lo -= 1
            used += len(parts[lo])
            grew = True
    return ("…" if lo > 0 else "") + "".join(parts[lo:hi]) + ("…" if hi < len(parts) else "")


_SPARK = "▁▂▃▄▅▆▇█"


def _bars(counts: np.ndarray) -> tuple[int, int, str] | None:
    """(first, end, bars) of the histogram's non-empty range, one bar per bin; None when it is all empty."""
    nonzero = np.nonzero(counts)[0]
    if nonzero.size == 0:
        return None
    lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1
    top = counts[lo:hi].max()
    return lo, hi, "".join(" " if c == 0 else _SPARK[min(len(_SPARK) - 1, int(c * len(_SPARK) / (top + 1)))]
                           for c in counts[lo:hi].tolist())


def sparkline(results: MineResults, i: int) -> str:
    """The feature's token histogram over its non-empty range of log bins, e.g. ``0.0316 ▂█▅▁ 0.1``."""
    counts = results.histogram[i]
    found = _bars(counts)
    if found is None:
        return "never active"
    lo, hi, bars = found
    edges = results.histogram_edges
    return f"{edges[lo]:.3g} {bars} {edges[hi]:.3g}  (10 bins per decade)"


def _tokens(results: MineResults, ids: np.ndarray, values: np.ndarray) -> str:
    return ", ".join(f"{results.token_text(t)!r} {v:.3g}" for t, v in zip(ids.tolist(), values.tolist(), strict=True))


def _line(results: MineResults, ex: dict, width: int, label: str) -> str:
    role = results.peak_role(ex) if results.has_turns() else None
    where = f"doc {ex['document']} @ {ex['window_start']}" + (
        f", peak in {role}" if role else "")
    return f"{label} score {ex['score']:.3g}  {where}: {render_window(results, ex, width=width)}"


def format_feature(results: MineResults, feature_id: int, n_examples: int = 5, width: int = 0,
                   n_samples: int = 1) -> str:
    i = results.feature_index(feature_id)
    density = results.density[i]
    lines = [f"feature {feature_id}: max {results.max[i]:.3g}, active on {density:.4%} of "
             f"{results.tokens_scored:,} scored tokens"]
    by_role = results.density_by_role() if results.has_turns() else {}
    if by_role:
        scored = results.tokens_scored_by_role
        lines.append("  by role: " + " · ".join(f"{d[i]:.4%} of {int(scored[ROLE[r]]):,} {r} tokens"
                                                for r, d in by_role.items()))
    lines.append(f"  histogram {sparkline(results, i)}")
    lens = results.logit_lens
    if lens is not None:
        lines.append(f"  promoted:   {_tokens(results, lens.promoted_ids[i], lens.promoted_values[i])}")
        lines.append(f"  suppressed: {_tokens(results, lens.suppressed_ids[i], lens.suppressed_values[i])}")
    for rank, ex in enumerate(results.examples(feature_id)[:n_examples], 1):
        lines.append(_line(results, ex, width, f"  #{rank}"))
    if n_samples > 0:
        for interval, windows in sorted(results.interval_samples(feature_id).items(), reverse=True):
            low, high = results.interval_bounds(interval)
            lines.append(f"  window max in [{low:.3g}, {high:.3g}): {len(windows)} sampled")
            lines.extend(_line(results, ex, width, "    ~") for ex in windows[:n_samples])
    return "\n".join(lines)


def _signed_sparkline(results: MineResults, i: int) -> str:
    """A direction's signed token histogram: its negative channel's bins mirrored, the zeros, then its positive
    channel's."""
    n = len(results.direction_names or [])
    counts, low, high = signed_bins(results.histogram[i], results.histogram[n + i], results.tokens_scored,
                                    results.histogram_edges)
    found = _bars(counts[0])
    if found is None:
        return "always 0"
    lo, hi, bars = found
    return f"{low[lo]:.3g} {bars} {high[hi - 1]:.3g}  (10 bins per decade each side of 0)"


def format_direction(results: MineResults, i: int, n_examples: int = 5, width: int = 0,
                     n_documents: int = 5) -> str:
    """A direction: its signed statistics and percentiles, the windows where it reads highest and lowest (values
    shown are the positive part, or the negated negative part), and the documents with the highest and lowest mean
    projection."""
    names = results.direction_names or []
    n, name = len(names), names[i]
    stats = results.signed_stats()
    centred = " (centred)" if results.config.get("center_directions") else ""
    lines = [f"direction {name!r}{centred}: mean {stats['mean'][i]:.3g}, max {stats['max'][i]:.3g}, min "
             f"{stats['min'][i]:.3g}; above 0 on {stats['above'][i]:.2%}, below on {stats['below'][i]:.2%} of "
             f"{results.tokens_scored:,} scored tokens",
             f"  histogram {_signed_sparkline(results, i)}"]
    if results.percentiles is not None:
        p = results.percentiles[i]
        lines.append("  percentiles: " + " · ".join(f"p{q} {p[q]:.3g}" for q in (1, 10, 50, 90, 99)))
    for label, channel, sign in (("highest", i, 1), ("lowest (token values shown are -projection)", n + i, -1)):
        examples = results.examples(channel)[:n_examples]
        if examples:
            lines.append(f"  {label}:")
            lines.extend(_line(results, {**ex, "score": sign * ex["score"]}, width, f"    #{rank}")
                         for rank, ex in enumerate(examples, 1))
    docs = results.documents
    if docs is not None and docs.document.size:
        for label, rows in zip(("highest", "lowest"), docs.ranked(i, n_documents), strict=True):
            lines.append(f"  documents, {label} mean: " + " · ".join(
                f"doc {int(docs.document[r])} {docs.mean[r, i]:.3g} (max {docs.max[r, i]:.3g}, "
                f"{int(docs.n_tokens[r])} tok)" for r in rows))
    return "\n".join(lines)


def format_results(results: MineResults, features: list[int] | None = None, n_examples: int = 5,
                   width: int = 0, n_samples: int = 1) -> str:
    if results.is_directions:
        names = results.direction_names or []
        header = (f"{results.path}: {results.attrs.get('model')} layer {results.attrs.get('layer')}, {len(names)} "
                  f"directions, {results.tokens_scored:,} tokens scored over {results.attrs.get('n_documents')} "
                  "documents")
        return "\n\n".join([header] + [format_direction(results, i, n_examples, width) for i in range(len(names))])
    ids = features if features else results.feature_ids.tolist()
    header = (f"{results.path}: {results.attrs.get('model')} layer {results.attrs.get('layer')}, "
              f"{len(ids)} features shown, {results.tokens_scored:,} tokens scored over "
              f"{results.attrs.get('n_documents')} documents")
    return "\n\n".join([header] + [format_feature(results, int(f), n_examples, width, n_samples) for f in ids])
