"""Live inspection with the tiny model and SAE: what it shows for a text (and for a chat, rendered with the template)
is what mining that text gives, token for token, with the same sink and role rules; requests run one at a time and
the rest of the server keeps answering; markup in the box stays text; neighbours come from the SAE's decoder."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from fixtures import IMG_ATTACK, SAE_LAYER, SCRIPT_ATTACK, SENTENCES, http_json, open_page, wait_for

import personamine
from personamine.roles import ROLE, ROLES
from personamine.serve.inspect import MAX_QUEUED, SPECIAL, TEMPLATE, UNSCORED_ROLE, Busy, Inspector, InspectRequest

TEXT = " ".join(SENTENCES[:9]) + f" {SCRIPT_ATTACK} and {IMG_ATTACK}"
CHAT = [{"role": "user", "content": "Who are you, and what do you think about yourself?"},
        {"role": "assistant", "content": " ".join(SENTENCES[1:5])},
        {"role": "user", "content": "Can you help me write a short poem about the sea?"},
        {"role": "assistant", "content": "I am an AI model trained to help people write code. " + SENTENCES[11]}]
FEATURES = list(range(0, 256, 8))  # 32: as many as one inspection shows


def mine_one(tmp_path, model_dir, sae_dir, row: dict, **extra):
    """Mine a corpus of exactly one document, keeping every window that fires (top_k above the window count)."""
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(json.dumps(row) + "\n")
    return personamine.mine(model=str(model_dir), layer=SAE_LAYER, sae=str(sae_dir), corpus=str(corpus),
                            features=FEATURES, top_k=64, samples_per_interval=0, negatives_per_feature=0,
                            output=str(tmp_path / "one.h5"), progress=False, **extra)


def assert_inspection_is_mining(result: dict, mined) -> int:
    """Every mined window of every feature, token by token, in the inspection; and every activation the inspection
    shows, in a mined window. Returns how many activations were compared."""
    tokens, roles, state = result["tokens"], result["roles"], result["state"]
    compared, covered = 0, {f: set() for f in result["features"]}
    for c, feature in enumerate(result["features"]):
        acts = result["activations"][c]
        for ex in mined.examples(feature):
            head = int((ex["roles"] == ROLE["prefix"]).sum())
            for p in range(head, len(ex["token_ids"])):
                at = ex["window_start"] + p - head
                assert tokens[at] == int(ex["token_ids"][p]) and roles[at] == int(ex["roles"][p])
                # Exactly: the same windows in the same batches through the same forward and encoder.
                assert acts[at] == float(ex["activations"][p]), (feature, at)
                assert state[at] == 0 or acts[at] == 0  # an unscored token has no activation
                covered[feature].add(at)
                compared += 1
        assert {at for at, a in enumerate(acts) if a > 0} <= covered[feature], feature
    return compared


@pytest.fixture(scope="module")
def text_run(tiny_model_dir, tiny_sae_dir, tmp_path_factory):
    return mine_one(tmp_path_factory.mktemp("text-run"), tiny_model_dir, tiny_sae_dir, {"text": TEXT}, ctx_len=16)


@pytest.fixture(scope="module")
def text_server(text_run):
    with personamine.serve(text_run, port=0, quiet=True) as server:
        yield server


def test_a_text_shows_what_mining_it_gives(text_server, text_run):
    status, result = http_json("POST", f"{text_server.url}api/inspect", {"text": TEXT, "features": FEATURES,
                                                                          "top": 8})
    assert status == 200, result
    mined = personamine.read_results(text_run)
    assert len(result["windows"]) > 5  # the text spans several 16-token windows
    assert assert_inspection_is_mining(result, mined) > 100
    assert sum(a > 0 for acts in result["activations"] for a in acts) > 20
    # Plain text: every token is scored but special ones; the sink prefix is never among the tokens.
    assert set(result["roles"]) == {ROLE["text"]} and result["state"].count(0) >= len(result["tokens"]) - 2
    assert result["rules"]["sink_prefix"] == [int(t) for t in mined.attrs["sink_prefix"]]
    # The top features at each scored token: the whole SAE's largest activations there, best first.
    for tops, acts_at in zip(result["top"], zip(*result["activations"], strict=True), strict=True):
        values = [v for _, v in tops]
        assert values == sorted(values, reverse=True) and len(tops) <= 8
        chosen = {f: a for f, a in zip(FEATURES, acts_at, strict=True) if a > 0}
        for f, v in tops:
            if f in chosen:  # the full encoder and the file's own agree to BLAS rounding
                assert abs(v - chosen[f]) <= 1e-5 * max(1.0, abs(v))
        if len(values) == 8:  # a chosen feature left out of a full list is no larger than its last
            listed = {f for f, _ in tops}
            assert all(a <= values[-1] + 1e-5 for f, a in chosen.items() if f not in listed)


def test_a_chat_shows_what_mining_the_conversation_gives(tiny_model_dir, tiny_sae_dir, tmp_path):
    path = mine_one(tmp_path, tiny_model_dir, tiny_sae_dir, {"messages": CHAT}, ctx_len=32,
                    messages_column="messages", score_roles=["assistant"])
    with personamine.serve(path, port=0, quiet=True) as server:
        status, result = http_json("POST", f"{server.url}api/inspect", {"messages": CHAT, "features": FEATURES})
    assert status == 200, result
    assert result["mode"] == "chat" and len(result["windows"]) >= 3
    assert_inspection_is_mining(result, personamine.read_results(path))
    roles, state = np.array(result["roles"]), np.array(result["state"])
    # Only the Assistant's turns are scored; the user's turns and the template never are, and say why.
    assert (state[roles == ROLE["assistant"]] == 0).mean() > 0.9 and not (state[roles != ROLE["assistant"]] == 0).any()
    assert set(state[roles == ROLE["user"]].tolist()) == {UNSCORED_ROLE}
    assert set(state[roles == ROLE["template"]].tolist()) <= {SPECIAL, TEMPLATE}
    assert [r for r in ROLES if ROLE[r] in set(roles.tolist())] == ["user", "assistant", "template"]
    assert all(not tops for tops, s in zip(result["top"], state.tolist(), strict=True) if s)


def test_requests_are_checked_and_capped(text_server):
    url = f"{text_server.url}api/inspect"
    for payload, fragment in [({"text": "x" * 8001}, "at most 8,000"), ({"text": "  "}, "empty"),
                              ({"text": "a", "messages": CHAT}, "not both"), ({"features": [1]}, "either"),
                              ({"text": "a", "features": [1]}, "not in one.h5"),
                              ({"text": "a", "features": list(range(0, 256, 8)) + [4]}, "at most 32"),
                              ({"text": "a", "top": 99}, "top must be"), ({"text": "a", "file": 3}, "file must"),
                              ({"messages": [{"role": "robot", "content": "x"}]}, "role is one of"),
                              ({"text": "a", "path": "/etc/passwd"}, "unknown field"), ([1, 2], "JSON object")]:
        status, answer = http_json("POST", url, payload)
        assert status == 400 and fragment in answer["error"], (payload, answer)
    status, answer = http_json("POST", url, {"text": "a b " * 1999})  # 7,996 characters, ~4,000 tokens
    assert status == 400 and "at most 2,048" in answer["error"]


def test_one_at_a_time_and_the_server_keeps_answering(text_server, text_run):
    long_text = " ".join(SENTENCES * 2)  # ~1,740 tokens, in 116 windows
    results, began = {}, time.perf_counter()

    def inspect():
        results["status"], results["answer"] = http_json("POST", f"{text_server.url}api/inspect",
                                                         {"text": long_text, "features": [0, 8]})
        results["done"] = time.perf_counter() - began

    worker = threading.Thread(target=inspect)
    worker.start()
    answered = []
    while worker.is_alive() and len(answered) < 20:
        t0 = time.perf_counter()
        status, _ = http_json("GET", f"{text_server.url}api/index?sort=max&dir=desc")
        answered.append((status, time.perf_counter() - t0, time.perf_counter() - began))
    worker.join()
    assert results["status"] == 200 and len(results["answer"]["tokens"]) > 1500
    during = [took for status, took, at in answered if status == 200 and at < results["done"]]
    print(f"inspection of {len(results['answer']['tokens'])} tokens: {results['answer']['seconds']} s; "
          f"{len(during)} index pages meanwhile, slowest {max(during, default=0):.3f} s")
    assert during and max(during) < 1.0

    # Queued one at a time: beyond MAX_QUEUED waiting, a request is refused, not queued.
    inspector = Inspector(text_server_files(text_run), enabled=True)
    request = InspectRequest(0, long_text, None, [0], 5)
    futures, refused = [], 0
    for _ in range(MAX_QUEUED + 3):
        try:
            futures.append(inspector.submit(request))
        except Busy:
            refused += 1
    outputs = [f.result(timeout=300) for f in futures]
    inspector.close()
    assert len(futures) == MAX_QUEUED and refused == 3
    assert all(o["activations"] == outputs[0]["activations"] for o in outputs)


def text_server_files(path):
    from personamine.serve.sources import open_sources

    return open_sources([path]).files


def test_the_inspection_page_renders_markup_as_text(browser, text_server):
    open_page(browser, f"{text_server.url}inspect?features=0,8,16")
    wait_for(browser, "return document.querySelector('.status').textContent.indexOf('on cpu') >= 0", timeout=120)
    browser.execute_script("document.querySelector('textarea[name=text]').value = arguments[0]", TEXT)
    browser.execute_script("document.body.removeAttribute('data-ready'); "
                           "document.querySelector('form.inspect-form button').click()")
    wait_for(browser, "return document.body && document.body.getAttribute('data-ready') === '1'", timeout=120)
    shown = browser.execute_script("""
        return {rows: Array.from(document.querySelectorAll('.inspected')).map(b => [b.getAttribute('data-feature'),
                    Array.from(b.querySelectorAll('.tok')).map(t => t.textContent).join('')]),
                tokens: document.querySelectorAll('table.tokens tr[data-position]').length,
                text: document.querySelector('textarea').value,
                markup: document.querySelectorAll('#pm-main script, #pm-main img').length};""")
    assert [f for f, _ in shown["rows"]] == ["0", "8", "16"]
    assert all(SCRIPT_ATTACK in text and IMG_ATTACK in text for _, text in shown["rows"])
    assert shown["text"] == TEXT and shown["markup"] == 0 and shown["tokens"] > 50
    assert browser.execute_script("return typeof window.__pwned") == "undefined"


def test_neighbours_are_the_decoder_cosines(text_server, tiny_sae_dir):
    status, data = http_json("GET", f"{text_server.url}api/feature/0/8")
    neighbours = data["server"]["neighbours"]
    for _ in range(50):  # computed once, on first use, on their own thread
        if neighbours["ready"]:
            break
        time.sleep(0.2)
        neighbours = http_json("GET", f"{text_server.url}api/feature/0/8")[1]["server"]["neighbours"]
    assert status == 200 and neighbours["ready"], neighbours
    sae = personamine.load_sae(str(tiny_sae_dir), layer=SAE_LAYER)
    directions = sae.decoder_directions(np.arange(sae.d_sae))
    unit = directions / directions.norm(dim=1, keepdim=True)
    cosine = (unit @ unit[8]).tolist()
    cosine[8] = -2.0
    expected = sorted(range(sae.d_sae), key=lambda f: -cosine[f])[:12]
    assert [n["id"] for n in neighbours["rows"]] == expected
    assert all(abs(n["cosine"] - cosine[n["id"]]) < 1e-5 for n in neighbours["rows"])
    held = set(FEATURES)  # the served file's features link to their pages; the rest are named only
    assert all((n["file"] == 0) == (n["id"] in held) for n in neighbours["rows"])
