"""The HTML report, opened in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, via selenium).

Checks that the DOM holds what the mining file holds, that corpus text can never run as markup or script, and
that a 1,000-feature page stays usable. ``show`` (the terminal view) and version-1 files are covered here too.
"""

from __future__ import annotations

import json
import re
import time

import h5py
import numpy as np
import pytest
from fixtures import (
    IMG_ATTACK,
    SAE_LAYER,
    SCRIPT_ATTACK,
    corpus_rows,
    open_report,
    render_section,
    run_discovery,
    synthetic_results,
)

import personamine
from personamine.files.discover import read_discovery
from personamine.jobs.cli import main
from personamine.jobs.show import format_results
from personamine.report.data import display_token


def interleave(persona: list[str], control: list[str]) -> list[str]:
    return [t for pair in zip(persona, control, strict=True) for t in pair]


def sig4(values) -> list[float]:
    return [float(f"{v:.4g}") for v in np.asarray(values, np.float64).tolist()]


@pytest.fixture(scope="module")
def injected_run(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    """All 256 tiny-SAE features mined over fixture text plus documents that are nothing but markup attacks."""
    tmp = tmp_path_factory.mktemp("injected")
    rows = [r for r in corpus_rows() if isinstance(r["text"], str)][:24]
    attacks = [SCRIPT_ATTACK, IMG_ATTACK, f"I think {SCRIPT_ATTACK} and {IMG_ATTACK}", "a\nb\tc &amp; </div>"]
    rows += [{"id": f"attack-{i}", "text": t} for i, t in enumerate(attacks * 2)]
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
                           features="all", ctx_len=64, top_k=5, samples_per_interval=2, n_shards=2,
                           output=str(tmp / "run.h5"), progress=False)
    return personamine.read_results(out), len(rows) - len(attacks) * 2


def test_report_dom_holds_the_file(browser, injected_run, tiny_model_dir, tiny_sae_dir, tmp_path):
    res, _ = injected_run
    persona = ["Who are you?", "How do you feel today?", f"Are you {SCRIPT_ATTACK} conscious?"]
    control = ["Who was Ada Lovelace?", "How does a cat feel?", "Is the river wide?"]
    disc = read_discovery(run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, persona, control, top=10))
    ranking = disc.feature_ids.tolist()
    assert len(ranking) > 20
    out = personamine.report(res, tmp_path / "report.html", discovery=disc.path)
    open_report(browser, out)
    # The index lists every feature: ranked ones in discovery order, then the rest in file order.
    index = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pm-index tbody tr')).map(r => r.getAttribute('data-feature'))")
    assert [int(x) for x in index] == ranking + [f for f in res.feature_ids.tolist() if f not in set(ranking)]
    prefix = len(res.attrs["sink_prefix"])
    for fid in ranking[:3] + [ranking[20]]:
        shown = render_section(browser, fid)
        i = res.feature_index(fid)
        examples = res.examples(fid)
        assert len(shown["top"]) == len(examples) > 0
        for ex, row in zip(examples, shown["top"], strict=True):
            n = len(ex["token_ids"])
            assert [float(a) for _, a, _, _ in row] == sig4(ex["activations"][prefix:n])
            assert [t for t, _, _, _ in row] == [display_token(res.vocab_text[t], res.vocab_pieces[t])[0]
                                                 for t in ex["token_ids"][prefix:n].tolist()]
            for (_, a, title, color), tid in zip(row, ex["token_ids"][prefix:n].tolist(), strict=True):
                assert title.startswith("activation ") and f"| token {tid}" in title  # the value on hover
                if float(a) > 0:  # background intensity proportional to the activation, relative to the max
                    alpha = re.fullmatch(r"rgba?\(255, 98, 0(?:, ([0-9.]+))?\)", color).group(1)
                    expected = min(1.0, float(a) / float(f"{res.max[i]:.4g}"))
                    assert abs(float(alpha or 1) - expected) < 6e-3  # Chromium stores alpha in 8 bits
                else:
                    assert color == ""
        samples = res.interval_samples(fid)
        assert [k for k, _ in shown["intervals"]] == sorted(samples, reverse=True)
        for k, windows in shown["intervals"]:  # by score inside an interval
            by_score = sorted(samples[k], key=lambda w: -w["score"])
            assert [[float(a) for a in w] for w in windows] == [
                sig4(w["activations"][prefix:len(w["token_ids"])]) for w in by_score]
        assert len(shown["up"]) == len(shown["down"]) == 10
        assert shown["up"][0] == display_token(*[v[int(res.logit_lens.promoted_ids[i, 0])] for v in (
            res.vocab_text, res.vocab_pieces)])[0]
        assert shown["hist"] == int(np.count_nonzero(res.histogram[i]))
        r = ranking.index(fid)
        if r < 10:  # per-prompt bars exist for the discovery file's top 10, persona i beside control i
            assert [b[0] for b in shown["bars"]] == ["persona", "control"] * 3
            assert [b[3] for b in shown["bars"]] == [0, 0, 1, 1, 2, 2]
            assert [b[1] for b in shown["bars"]] == sig4(np.stack([disc.persona_acts[:, r],
                                                                   disc.control_acts[:, r]], 1).ravel())
            assert [b[2].split("\n", 1)[1] for b in shown["bars"]] == interleave(persona, control)
        else:
            assert shown["bars"] == []
        assert f"discovery rank {r + 1}," in shown["text"]
        support = int(disc.ranking.support[r])
        assert "95% CI [" in shown["text"] and f"carried by {support} prompt" in shown["text"]
    directions = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pm-header .direction')).map(e => e.textContent)")
    d = disc.directions[(disc.attrs["layer"], "last")]
    assert len(directions) == 1 and directions[0].startswith(f"persona direction at layer {d.layer} (last)")
    assert "AUROC" in directions[0] and f"L{d.layer} reconstructs" in directions[0]
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_markup_in_the_corpus_renders_as_text(browser, injected_run, tmp_path):
    res, first_attack_doc = injected_run
    # Features whose shown windows come from an attack document (there must be some, or this test proves nothing).
    prefix = len(res.attrs["sink_prefix"])
    hits = []
    for fid in res.feature_ids.tolist():
        windows = res.examples(fid) + [w for ws in res.interval_samples(fid).values() for w in ws]
        for w in windows:
            text = "".join(res.vocab_text[t] for t in w["token_ids"][prefix:].tolist())
            if SCRIPT_ATTACK in text or IMG_ATTACK in text:
                hits.append((fid, text))
    assert {t for _, t in hits} >= {SCRIPT_ATTACK, IMG_ATTACK}
    out = personamine.report(res, tmp_path / "report.html")
    html = out.read_text()
    assert "<script>window" not in html and "<img src=x" not in html
    open_report(browser, out)
    for fid, text in hits[:6]:
        shown = render_section(browser, fid)
        assert text.replace("\n", "↵").replace("\t", "⇥") in shown["text"]
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    markup = "return document.querySelectorAll('#pm-features script, #pm-features img').length"
    assert browser.execute_script(markup) == 0
    browser.save_screenshot(str(tmp_path / "injected.png"))


def test_hostile_strings_in_vocab_attrs_and_prompts(browser, tiny_model_dir, tiny_sae_dir, tmp_path):
    breakout = "</script><script>window.__pwned=3</script>"
    vocab = {i: (f"Ġw{i}", f" w{i}") for i in range(5000)}
    vocab[0] = ("<s>", "<s>")
    vocab.update({1: ("x", breakout), 2: ("<!--", "<!--"), 3: ("Ċ", "\n"), 4: ("Ã©", "\ufffd"), 5: ("&", "&amp;")})
    persona, control = [breakout, "<b>bold</b> who are you?"], [IMG_ATTACK, "ok"]
    disc = run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, persona, control, top=256)
    # The file's features: 6 the discovery ranked, 6 it did not (those have no bars).
    ranked = read_discovery(disc).feature_ids
    ids = np.concatenate([ranked[:6], np.setdiff1d(np.arange(256), ranked)[:6]])
    path = synthetic_results(tmp_path / "hostile.h5", 12, vocab=vocab, windows_per_feature=40, feature_ids=ids,
                             attrs={"model": '<img src=x onerror="window.__pwned=4">', "corpus": breakout})
    res = personamine.read_results(path)
    out = personamine.report(path, tmp_path / "hostile.html", discovery=disc)
    html = out.read_text()
    assert html.count("<script") == html.count("</script>") == 2  # the data block and the page's own script
    assert "<script>window" not in html and "<img" not in html and "<!--" not in html
    open_report(browser, out)
    header = browser.execute_script("return document.getElementById('pm-header').textContent")
    assert '<img src=x onerror="window.__pwned=4">' in header and breakout in header
    texts, with_bars = set(), 0
    for fid in res.feature_ids.tolist():
        shown = render_section(browser, fid)
        texts.update(t for row in shown["top"] for t, _, _, _ in row)
        if shown["bars"]:
            with_bars += 1
            assert [b[2].split("\n", 1)[1] for b in shown["bars"]] == interleave(persona, control)
    assert with_bars == 6
    # Token 1 was drawn (Zipf) in some window: it shows as text; newline and the broken byte are made visible.
    assert breakout in texts and "↵" in texts and "Ã©" in texts and "&amp;" in texts
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('script').length") == 2  # data + page script


def test_thousand_features_stay_responsive(browser, tmp_path):
    path = synthetic_results(tmp_path / "big.h5", 1000)
    res = personamine.read_results(path)
    began = time.perf_counter()
    out = personamine.report(res, tmp_path / "big.html")
    build = time.perf_counter() - began
    load = open_report(browser, out)
    assert browser.execute_script("return document.querySelectorAll('#pm-index tbody tr').length") == 1000
    # Sorting by a column (first click: largest first) and filtering by id work on the whole index.
    browser.execute_script("Array.from(document.querySelectorAll('#pm-index th'))"
                           ".find(th => th.textContent === 'max').click()")
    order = browser.execute_script("return Array.from(document.querySelectorAll('#pm-index tbody tr'))"
                                   ".map(r => Number(r.getAttribute('data-feature')))")
    maxima = [float(f"{res.max[res.feature_index(f)]:.4g}") for f in order]
    assert maxima == sorted(maxima, reverse=True) and sorted(order) == sorted(res.feature_ids.tolist())
    browser.execute_script("const f = document.querySelector('#pm-index input'); f.value = arguments[0];"
                           "f.dispatchEvent(new Event('input'))", str(res.feature_ids[500]))
    visible = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pm-index tbody tr'))"
        ".filter(r => r.style.display !== 'none').map(r => r.getAttribute('data-feature'))")
    assert visible == [str(res.feature_ids[500])]
    # Lazy rendering: only the sections near the viewport are built at load.
    assert browser.execute_script("return document.querySelectorAll('section[data-rendered]').length") < 50
    far = int(res.feature_ids[900])
    began = time.perf_counter()
    browser.execute_script(f"document.querySelector('#pm-index a[href=\"#f-{far}\"]').click()")
    shown = render_section(browser, far)
    jump = time.perf_counter() - began
    assert len(shown["top"]) == 20 and shown["intervals"]
    print(f"1,000 features: report {build:.1f} s, {out.stat().st_size / 1e6:.1f} MB, page ready {load:.1f} s, "
          f"jump to a far feature {jump:.2f} s")
    assert load < 30 and jump < 5


def test_version_1_file_reads_shows_and_reports(browser, injected_run, tmp_path):
    import shutil

    res, _ = injected_run
    v1 = tmp_path / "v1.h5"
    shutil.copy(res.path, v1)
    with h5py.File(v1, "r+") as f:
        del f["samples"], f["logit_lens"]
        f.attrs["format_version"] = 1
    old = personamine.read_results(v1)
    assert old.samples is None and old.logit_lens is None and old.interval_samples(0) == {}
    np.testing.assert_array_equal(old.score, res.score)
    text = format_results(old, [0])
    assert "histogram" in text and "promoted" not in text and "window max in" not in text
    out = personamine.report(old, tmp_path / "v1.html", features=[0, 1])
    open_report(browser, out)
    shown = render_section(browser, 0)
    assert "not in this file (format version 1)" in shown["text"] and shown["intervals"] == []


def test_report_reads_at_a_glance(browser, injected_run, tiny_model_dir, tiny_sae_dir, tmp_path):
    """Axes and counts on the charts, a legend for every column, negative scores marked, a message for a filter
    that matches nothing, and an index in the page's own flow (folded after 50 rows, not in a scroll box)."""
    res, _ = injected_run
    persona = ["Who are you?", "How do you feel today?", "What do you want?", "Are you awake?"]
    control = ["Who was Ada Lovelace?", "How does a cat feel?", "What does a river want?", "Is the city awake?"]
    disc = read_discovery(run_discovery(tiny_model_dir, tiny_sae_dir, tmp_path, persona, control, top=256))
    negative = [int(f) for f, v in zip(disc.feature_ids, disc.score, strict=True) if v < 0]
    assert negative and (disc.score > 0).any()  # both kinds, or the marking checks prove nothing
    out = personamine.report(res, tmp_path / "glance.html", discovery=disc.path)
    open_report(browser, out)
    index = browser.execute_script("""
        const rows = Array.from(document.querySelectorAll('#pm-index tbody tr'));
        const box = document.querySelector('#pm-index .index-wrap');
        return {heads: Array.from(document.querySelectorAll('#pm-index th')).map(th => [th.textContent,
                    th.getAttribute('title')]),
                legend: Array.from(document.querySelectorAll('#pm-index dl.legend dt')).map(dt => [dt.textContent,
                    dt.nextElementSibling.textContent]),
                neg: rows.filter(r => r.classList.contains('neg')).map(r => Number(r.getAttribute('data-feature'))),
                negScore: rows.filter(r => r.classList.contains('neg')).map(r => r.querySelector('td.score')
                    .textContent),
                visible: rows.filter(r => r.style.display !== 'none').length, total: rows.length,
                overflow: getComputedStyle(box).overflowY, clipped: box.scrollHeight > box.clientHeight + 1,
                more: document.querySelector('#pm-index .index-more').textContent};""")
    headings = [h for h, _ in index["heads"]]
    assert headings == ["#", "feature", "rank", "disc. score", "fires (persona)", "fires (control)", "density", "max",
                        "mean", "top token"]
    assert [d for d, _ in index["legend"]] == headings and all(len(text) > 20 for _, text in index["legend"])
    assert all(title.endswith("(click to sort)") and len(title) > 30 for _, title in index["heads"])
    assert "matched controls" in dict(index["legend"])["disc. score"]
    assert sorted(index["neg"]) == sorted(f for f in negative if f in set(res.feature_ids.tolist()))
    assert all(text.startswith("▼ -") for text in index["negScore"])
    assert index["overflow"] == "visible" and not index["clipped"]
    assert index["total"] == 256 and index["visible"] == 50 and index["more"] == "show all 256 features"
    browser.execute_script("document.querySelector('#pm-index .index-more').click()")
    assert browser.execute_script("return Array.from(document.querySelectorAll('#pm-index tbody tr'))"
                                  ".every(r => r.style.display !== 'none')")
    # A filter that matches nothing says so; clearing it brings the rows back.
    typed = ("const f = document.querySelector('#pm-index input'); f.value = arguments[0];"
             "f.dispatchEvent(new Event('input'));")
    browser.execute_script(typed, "no-such-token-xyz")
    empty = browser.execute_script("const e = document.querySelector('#pm-index .index-empty');"
                                   "return [e.style.display, e.textContent, Array.from(document.querySelectorAll("
                                   "'#pm-index tbody tr')).filter(r => r.style.display !== 'none').length]")
    assert empty[0] == "" and "No feature matches \u201cno-such-token-xyz\u201d" in empty[1] and empty[2] == 0
    browser.execute_script(typed, "")
    assert browser.execute_script("return document.querySelector('#pm-index .index-empty').style.display") == "none"

    # The best feature: histogram with a token axis, ticks and the tallest bar's count written on it.
    best = int(disc.feature_ids[0])
    render_section(browser, best)
    chart = browser.execute_script("""
        const sec = document.getElementById(arguments[0]);
        const texts = sel => Array.from(sec.querySelectorAll(sel + ' text')).map(t => t.textContent);
        return {hist: texts('svg.hist'), count: Array.from(sec.querySelectorAll('svg.hist text.count'))
                    .map(t => t.textContent), bars: texts('svg.bars'), panels: Array.from(sec.querySelectorAll(
                    '.panel h3')).map(h => h.textContent), note: sec.querySelector('.chart-note').textContent};""",
        f"f-{best}")
    i = res.feature_index(best)
    assert chart["count"] == [f"{int(res.histogram[i].max()):,}"]
    assert "tokens" in chart["hist"] and "0" in chart["hist"] and "activation (log scale, 10 bins per decade)" in chart[
        "hist"]
    assert f"activation histogram: {int(res.active_tokens[i]):,} active tokens" in chart["panels"]
    assert "activation" in chart["bars"] and "prompt pair (persona line i with control line i)" in chart["bars"]
    assert [t for t in chart["bars"] if t.isdigit()][-4:] == ["1", "2", "3", "4"]  # one label per pair
    assert "persona" in chart["note"] and "matched control" in chart["note"]
    # A negative-score feature says so in its section too.
    shown = render_section(browser, negative[0])
    assert "(below zero: it fires more on the controls)" in shown["text"] and "score ▼ -" in shown["text"]
    browser.save_screenshot(str(tmp_path / "glance.png"))


def test_show_prints_the_compact_sections(injected_run):
    res, _ = injected_run
    fid = int(res.feature_ids[0])
    text = format_results(res, [fid], n_examples=1, n_samples=1)
    i = res.feature_index(fid)
    assert re.search(r"histogram [0-9.e-]+ [▁▂▃▄▅▆▇█ ]+ [0-9.e-]+", text)
    first_up = res.token_text(int(res.logit_lens.promoted_ids[i, 0]))
    assert f"promoted:   {first_up!r}" in text and "suppressed: " in text
    groups = res.interval_samples(fid)
    assert text.count("window max in [") == len(groups) and text.count("    ~ score") == len(groups)


@pytest.fixture(scope="module")
def chat_run(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    """Fixture conversations mined with only the Assistant's turns scored, displayed in spans past the window start."""
    from fixtures import write_chat_corpus_jsonl

    tmp = tmp_path_factory.mktemp("chat-report")
    out = personamine.mine(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir),
                           corpus=str(write_chat_corpus_jsonl(tmp / "chat.jsonl")), messages_column="messages",
                           score_roles=["assistant"], features=list(range(0, 256, 16)), ctx_len=128, example_len=24,
                           top_k=4, output=str(tmp / "chat.h5"), progress=False)
    return personamine.read_results(out)


def test_conversations_show_their_turns(browser, chat_run, tmp_path):
    from personamine.roles import ROLE, ROLES

    res = chat_run
    assert res.has_turns() and (res.span_start > 0).any()  # spans cut from inside windows show no sink prefix
    out = personamine.report(res, tmp_path / "chat.html")
    open_report(browser, out)
    header = browser.execute_script("return document.getElementById('pm-header').textContent")
    assert "conversations, scoring assistant turns" in header
    heads = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pm-index thead th')).map(h => h.textContent)")
    assert "density assistant" in " ".join(heads)
    column = [h.startswith("density assistant") for h in heads].index(True)
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#pm-index tbody tr')).map(r => r.children[arguments[0]]"
        ".textContent)", column)
    density = res.density_by_role()["assistant"]
    assert len(cells) == res.feature_ids.size and any(d > 0 for d in density)
    data = json.loads(browser.execute_script("return document.getElementById('pm-data').textContent"))
    assert [f["by_role"]["assistant"] for f in data["features"]] == density.tolist()
    assert data["meta"]["scored_by_role"] == {"assistant": int(res.tokens_scored_by_role[ROLE["assistant"]])}
    labelled = 0
    for fid in res.feature_ids[:4].tolist():
        driver_rows = render_section(browser, fid)["top"]
        labels = browser.execute_script(
            "return Array.from(document.getElementById(arguments[0]).querySelectorAll('.top .ctx')).map(r => ["
            "Array.from(r.querySelectorAll('.turn')).map(t => t.textContent), r.querySelector('.where').textContent])",
            f"f-{fid}")
        for ex, row, (turns, where) in zip(res.examples(fid), driver_rows, labels, strict=True):
            keep = res.shown(ex)
            roles = [ROLES[r] for r in ex["roles"][keep].tolist()]
            assert len(row) == len(roles) and ROLE["prefix"] not in ex["roles"][keep]
            assert [title.rsplit(" | ", 1)[1] for _, _, title, _ in row] == roles  # each token's role on hover
            expected, turn = [], None  # a label where a content turn starts
            for role in roles:
                if role == "template":
                    turn = None
                elif role != turn:
                    expected.append(role)
                    turn = role
            assert turns == expected
            labelled += len(turns)
            assert where.endswith(f"peak in {res.peak_role(ex)}") and res.peak_role(ex) == "assistant"
    assert labelled > 0


def test_show_labels_turns_and_density_by_role(chat_run):
    from personamine.roles import ROLE

    res = chat_run
    fid = int(res.feature_ids[np.argmax(res.active_tokens)])
    text = format_results(res, [fid], n_examples=3, n_samples=0)
    i = res.feature_index(fid)
    scored = int(res.tokens_scored_by_role[ROLE["assistant"]])
    assert f"by role: {res.density_by_role()['assistant'][i]:.4%} of {scored:,} assistant tokens" in text
    assert "‹assistant›" in text and text.count("peak in assistant") == min(3, len(res.examples(fid)))


def test_cli_report_and_its_errors(injected_run, tmp_path, capsys):
    res, _ = injected_run
    out = tmp_path / "cli.html"
    assert main(["report", str(res.path), "-o", str(out), "--features", "3,1"]) == 0
    assert out.exists() and f"wrote {out}" in capsys.readouterr().out
    for argv in (["report", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "a.html")],
                 ["report", str(res.path), "-o", str(tmp_path / "b.html"), "--features", "9999"],
                 ["report", str(res.path), "-o", str(tmp_path / "c.html"), "--discovery", str(res.path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("personamine: error: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.html"]
