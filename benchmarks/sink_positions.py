"""Where the massive-norm positions of a chat model's residual stream fall in rendered conversations, and what the
per-window norm filter does with them.

Renders conversations of ``builtin:conversations`` with the model's chat template (``ChatRenderer``, as mining does),
feeds each conversation's first window (``ctx_len`` tokens, as rendered: its own BOS or template token first) alone
through the model, and at each layer asks, per window:

- which positions have a residual norm above ``ratio`` times the window's median (over all its tokens), and what they
  are: position 0, a template token (role headers, delimiters: say which), or a content token of a role;
- what the filter does: it compares a scored-eligible token (content role, not special) with the median over the
  window's scored-eligible tokens only, so template tokens neither count in that median nor are ever scored; the
  content tokens it drops are counted per role;

and, for contrast, the same on plain text (``builtin:chat-and-prose``) fed after the sink prefix.

    python benchmarks/sink_positions.py                    # SmolLM2 (ChatML), 300 conversations, layers 5-25
    python benchmarks/sink_positions.py --model DIR --layers 10,15 --n 100
    python benchmarks/sink_positions.py --quick            # 50 of each, layers 10 and 15
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine, offline, print_table, today  # noqa: E402


def _rows(corpus: str, column: str, n: int) -> list[object]:
    """``n`` non-empty rows spread evenly over the corpus (the built-ins are in source order: bot Q/A, then human
    conversations; prose, then chat)."""
    from personamine.corpus import CorpusSpec, iter_rows, open_manifest

    manifest = open_manifest(CorpusSpec(corpus, column=column))
    rows = [value for _, value in iter_rows(manifest) if value]
    return [rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)]


def _windows(tokenizer, kind: str, rows: list[object], ctx_len: int) -> list[tuple[list[int], np.ndarray]]:
    from personamine.corpus.conversations import ChatRenderer, parse_turns
    from personamine.model.prompts import sink_prefix_ids
    from personamine.roles import ROLE

    if kind == "chat":
        renderer = ChatRenderer(tokenizer, date_string="26 Jul 2024")
        out = []
        for turns in rows:
            r = renderer.render(parse_turns(turns))
            out.append((r.ids[:ctx_len], r.roles[:ctx_len]))
        return out
    prefix = sink_prefix_ids(tokenizer)
    out = []
    for text in rows:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: ctx_len - len(prefix)]
        out.append((prefix + ids, np.array([ROLE["prefix"]] * len(prefix) + [ROLE["text"]] * len(ids), np.int8)))
    return out


@torch.no_grad()
def measure(model, tokenizer, windows, layers: list[int], ratio: float, norm_filter: float) -> dict:
    from personamine.roles import CONTENT_ROLES, ROLE, ROLES

    special = set(tokenizer.all_special_ids)
    content = {ROLE[r] for r in CONTENT_ROLES}
    out = {layer: {"windows": 0, "tokens": 0, "massive": 0, "at_0": 0, "by_role": collections.Counter(),
                   "template_tokens": collections.Counter(), "filtered_by_role": collections.Counter(),
                   "eligible_by_role": collections.Counter(), "max_ratio_content": []} for layer in layers}
    for ids, roles in windows:
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        eligible = np.array([int(r) in content and t not in special for t, r in zip(ids, roles.tolist(),
                                                                                    strict=True)])
        for layer in layers:
            norms = hidden[layer + 1][0].float().norm(dim=-1).numpy()
            o = out[layer]
            o["windows"] += 1
            o["tokens"] += len(ids)
            big = np.flatnonzero(norms > ratio * np.median(norms))
            o["massive"] += big.size
            for p in big.tolist():
                if p == 0:
                    o["at_0"] += 1
                role = ROLES[int(roles[p])]
                o["by_role"][role] += 1
                if role in ("template", "prefix"):
                    o["template_tokens"][tokenizer.convert_ids_to_tokens(ids[p])] += 1
            if eligible.any():
                vals = np.sort(norms[eligible])
                median = vals[(vals.size - 1) // 2]  # the lower median, as mining takes it
                o["max_ratio_content"].append(float(vals[-1] / median))
                for p in np.flatnonzero(eligible).tolist():
                    role = ROLES[int(roles[p])]
                    o["eligible_by_role"][role] += 1
                    if norm_filter > 0 and norms[p] > norm_filter * median:
                        o["filtered_by_role"][role] += 1
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--layers", default=None, help="comma-separated decoder layers (default 5,10,15,20,25)")
    parser.add_argument("--n", type=int, default=300, help="conversations (and texts) measured")
    parser.add_argument("--ctx-len", type=int, default=256)
    parser.add_argument("--ratio", type=float, default=10.0, help="a massive norm: this many times the median")
    parser.add_argument("--norm-filter", type=float, default=10.0, help="the filter's multiple, as mine's")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="50 of each; layers 10 and 15 unless --layers")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 50)
    args.layers = args.layers or ("10,15" if args.quick else "5,10,15,20,25")
    offline()
    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM

    from personamine.model.loading import load_tokenizer, resolve_model_source

    layers = [int(x) for x in args.layers.split(",")]
    tokenizer = load_tokenizer(args.model)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_source(args.model), dtype=torch.float32).eval()
    print(f"sink_positions: {today()}, {machine()}, load {load_average()}; {args.model}, ctx {args.ctx_len}, "
          f"massive = norm > {args.ratio:g} x the window's median")
    summary: dict = {"model": args.model, "date": today(), "machine": machine(), "ctx_len": args.ctx_len,
                     "ratio": args.ratio, "kinds": {}}
    for kind, corpus, column in (("chat", "builtin:conversations", "messages"),
                                 ("text", "builtin:chat-and-prose", "text")):
        began = time.perf_counter()
        windows = _windows(tokenizer, kind, _rows(corpus, column, args.n), args.ctx_len)
        found = measure(model, tokenizer, windows, layers, args.ratio, args.norm_filter)
        rows = []
        for layer, o in found.items():
            where = ", ".join(f"{r} {c / max(o['massive'], 1):.0%}" for r, c in o["by_role"].most_common())
            tokens = ", ".join(f"{t!r} {c}" for t, c in o["template_tokens"].most_common(4))
            filtered = ", ".join(f"{r} {o['filtered_by_role'][r]}/{o['eligible_by_role'][r]:,}"
                                 for r in sorted(o["eligible_by_role"]))
            rows.append([layer, f"{o['massive'] / o['windows']:.2f}", f"{o['at_0'] / max(o['massive'], 1):.0%}",
                         where or "-", tokens or "-", f"{np.median(o['max_ratio_content']):.2f}", filtered])
            summary["kinds"].setdefault(kind, {})[layer] = {
                **{k: v for k, v in o.items() if not isinstance(v, (collections.Counter, list))},
                **{k: dict(v) for k, v in o.items() if isinstance(v, collections.Counter)},
                "median_max_content_ratio": float(np.median(o["max_ratio_content"]))}
        print(f"\n{kind}: {len(windows)} windows from {corpus} ({time.perf_counter() - began:.0f} s)")
        print_table(["layer", "massive / window", "at position 0", "where (role)", "template tokens",
                     "content max / median", "filtered / eligible"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
