"""The report's screening section: a ``personamine screen`` file's ranked samples, the top and the bottom of the
ranking on each direction, the row's response and the model's own response side by side with their projections.
Plain HTML rendered here (every text escaped), so it reads with scripts off."""

from __future__ import annotations

import html

from personamine.files.screen import ScreeningResults

CSS = """#pm-screening{margin:2em 0}#pm-screening table{border-collapse:collapse;width:100%;font-size:13px}
#pm-screening td,#pm-screening th{border-top:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
#pm-screening td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
#pm-screening .prompt{color:#666;font-size:12px;white-space:pre-wrap}#pm-screening .text{white-space:pre-wrap}"""
PROMPT_CHARS = 300  # the end of the rendered prompt: the turn the responses answer


def _rows(res: ScreeningResults, k: int, picks: list[int], start: int) -> str:
    out = []
    for rank, i in enumerate(picks, start):
        prompt = res.prompt[i]
        tail = prompt if len(prompt) <= PROMPT_CHARS else "…" + prompt[-PROMPT_CHARS:]
        cells = [f'<td class="num">{rank + 1}</td>', f'<td class="num">{int(res.document[i])}</td>',
                 f'<td class="num">{res.difference[i, k]:.3f}</td>',
                 f'<td class="num">{res.projection_response[i, k]:.3f}</td>',
                 f'<td class="num">{res.projection_own[i, k]:.3f}</td>',
                 f'<td><div class="prompt">{html.escape(tail)}</div></td>',
                 f'<td class="text">{html.escape(res.response[i])}</td>',
                 f'<td class="text">{html.escape(res.own[i])}</td>']
        out.append(f"<tr>{''.join(cells)}</tr>")
    return "".join(out)


def screening_html(res: ScreeningResults, n: int = 10) -> str:
    """The section, with its style: per direction, the ``n`` samples of largest and of smallest difference."""
    parts = [f"<style>{CSS}</style><section id=\"pm-screening\" aria-label=\"screening\"><h2>Screening by projection "
             f"difference</h2><p>{len(res.unit):,} samples of {html.escape(str(res.attrs.get('corpus', '')))} "
             f"({int(res.attrs.get('rows_not_samples', 0)):,} rows were no sample), layer {res.attrs.get('layer')}: "
             "each sample's response projected on the direction minus the model's own greedy response to the same "
             "prompt (mean over the response's tokens).</p>"]
    head = ("<tr><th>rank</th><th>row</th><th>difference</th><th>response</th><th>own</th><th>prompt (end)</th>"
            "<th>the row's response</th><th>the model's own response</th></tr>")
    for k, name in enumerate(res.names):
        order = res.order[k].tolist()
        top, bottom = order[:n], order[max(n, len(order) - n):]
        label = html.escape(name)
        parts.append(f"<h3>{label}</h3><table class=\"pm-screen-table\" data-direction=\"{label}\">{head}"
                     f"{_rows(res, k, top, 0)}")
        if bottom:
            parts.append(f"<tr><td colspan=\"8\">…</td></tr>{_rows(res, k, bottom, len(order) - len(bottom))}")
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)
