"""Conversations rendered with the model's chat template, and every token's role found from the template itself,
on the real templates of SmolLM2 (ChatML, with a default system prompt) and Llama-3.1-8B-Instruct."""

from __future__ import annotations

import fixtures as fx
import numpy as np
import pytest
import torch

from personamine.corpus.conversations import BadConversation, ChatRenderer, parse_turns
from personamine.errors import PersonamineError
from personamine.roles import ROLE, ROLES

TURNS = [{"role": "user", "content": "  Who are you, really?  "},
         {"role": "assistant", "content": "I am an AI assistant. I help people."},
         {"role": "user", "content": "Do you have feelings?"},
         {"role": "assistant", "content": "No, but I can talk about them."}]


def spans(tokenizer, rendered):
    """The decoded text of each maximal run of tokens that share a role: [(role, text), ...]."""
    out: list[tuple[str, str]] = []
    for tid, code in zip(rendered.ids, rendered.roles.tolist(), strict=True):
        piece = tokenizer.decode([tid])
        if out and out[-1][0] == ROLES[code]:
            out[-1] = (out[-1][0], out[-1][1] + piece)
        else:
            out.append((ROLES[code], piece))
    return out


def content_runs(tokenizer, rendered):
    return [(role, text) for role, text in spans(tokenizer, rendered) if role != "template"]


@pytest.fixture(scope="module")
def smollm2():
    from personamine.model.loading import load_tokenizer

    return load_tokenizer("builtin:smollm2-135m-instruct")


def test_chatml_roles_on_smollm2(smollm2):
    rendered = ChatRenderer(smollm2, date_string="26 Jul 2024").render(parse_turns(TURNS))
    assert smollm2.decode(rendered.ids) == rendered.text
    # SmolLM2's template inserts its own system prompt: template text, not a turn of the conversation.
    assert rendered.text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    # ChatML keeps the content as it is; the "\n  " token starts on the header's newline but is mostly content.
    assert content_runs(smollm2, rendered) == [("user", "\n  Who are you, really?  "),
                                               ("assistant", "I am an AI assistant. I help people."),
                                               ("user", "Do you have feelings?"),
                                               ("assistant", "No, but I can talk about them.")]
    template = "".join(text for role, text in spans(smollm2, rendered) if role == "template")
    assert template.count("<|im_start|>") == 5 and "SmolLM" in template


def test_llama31_roles_and_one_bos():
    tokenizer = fx.llama3_tokenizer()
    renderer = ChatRenderer(tokenizer, date_string="26 Jul 2024", system_prompt="Be brief.")
    rendered = renderer.render(parse_turns(TURNS))
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert rendered.ids[0] == bos and rendered.ids.count(bos) == 1
    assert "Today Date: 26 Jul 2024" in rendered.text
    # The template trims every content: roles follow the trimmed text.
    assert content_runs(tokenizer, rendered) == [("system", "Be brief."), ("user", "Who are you, really?"),
                                                 ("assistant", "I am an AI assistant. I help people."),
                                                 ("user", "Do you have feelings?"),
                                                 ("assistant", "No, but I can talk about them.")]
    assert rendered.roles[0] == ROLE["template"]
    with_prompt = ChatRenderer(tokenizer, generation_prompt=True).render(parse_turns(TURNS[:1]))
    assert with_prompt.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert with_prompt.roles[-3:].tolist() == [ROLE["template"]] * 3


def test_sharegpt_and_lmsys_rows():
    share = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}, {"from": "system", "value": "x"}]
    assert parse_turns(share) == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                  {"role": "system", "content": "x"}]
    lmsys = [{"role": "user", "content": "Hi", "turn": 1}, {"role": "assistant", "content": "Hey"}]
    assert [t["role"] for t in parse_turns(lmsys)] == ["user", "assistant"]


@pytest.mark.parametrize("value, message", [
    ("just text", "is not a non-empty list of turns"),
    ([], "is not a non-empty list of turns"),
    ([{"role": "user"}], "turn 0 has no content"),
    ([{"content": "hi"}], "turn 0 has no role"),
    ([{"role": "narrator", "content": "hi"}], "turn 0 has an unknown role 'narrator'"),
    ([{"role": "user", "content": 5}], "turn 0's content is not a string"),
])
def test_bad_rows(value, message):
    with pytest.raises(BadConversation, match=message):
        parse_turns(value)


def test_a_template_that_refuses_a_role_sequence():
    tokenizer = fx.train_tokenizer()
    tokenizer.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                               "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
                               "<|{{ m['role'] }}|>\n{{ m['content'] }}</s>{% endfor %}")
    renderer = ChatRenderer(tokenizer)
    assert renderer.render(parse_turns(TURNS[:2])).ids
    with pytest.raises(BadConversation, match="the chat template refused it: Conversation roles must alternate"):
        renderer.render(parse_turns([TURNS[1], TURNS[0]]))


def test_no_chat_template_is_a_clear_error():
    tokenizer = fx.train_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(PersonamineError, match="has no chat template, which a conversation corpus needs"):
        ChatRenderer(tokenizer)


def _straddling_tokens(tokenizer, rendered, turns, header):
    """(token text, template characters, content characters, the turn's role, the token's role) of each token whose
    characters are partly a turn's content and partly the template's (``header``: the text before each content)."""
    spans, cursor = [], 0
    for turn in turns:
        head = header.format(role=turn["role"])
        at = rendered.text.index(head + turn["content"], cursor) + len(head)
        spans.append((at, at + len(turn["content"]), turn["role"]))
        cursor = at + len(turn["content"])
    offsets = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) == len(rendered.ids)
    out = []
    for (a, b), code in zip(offsets, rendered.roles.tolist(), strict=True):
        for lo, hi, role in spans:
            inside = max(0, min(b, hi) - max(a, lo))
            if 0 < inside < b - a:
                out.append((rendered.text[a:b], b - a - inside, inside, role, ROLES[code]))
    return out


def test_a_token_straddling_a_role_header_and_its_content_takes_the_majority_role(smollm2):
    """Restated from the docs: a token takes the role of most of its characters, a tie between the template and a
    content going to the content. ChatML's header ends with a newline; when a turn's content starts with a newline
    or a space, SmolLM2's tokenizer merges that newline with it into one token ("\\n\\n", "\\n "): one template
    character, one content character, so the token is the content's, and is scored."""
    import copy

    from personamine.shards.windows import Document, build_batch, cut_windows

    turns = [{"role": "user", "content": "\n Who are you?"}, {"role": "assistant", "content": "  I am SmolLM."},
             {"role": "user", "content": "\n\nAnd?"}, {"role": "assistant", "content": " Fine."}]
    rendered = ChatRenderer(smollm2).render(parse_turns(turns))
    straddling = _straddling_tokens(smollm2, rendered, turns, "<|im_start|>{role}\n")
    assert straddling == [("\n\n", 1, 1, "user", "user"), ("\n ", 1, 1, "assistant", "assistant"),
                          ("\n\n", 1, 1, "user", "user")]  # " Fine." is not merged: "\n" then " Fine"
    # Such a token is scored like the rest of its turn.
    (window,) = cut_windows(Document(0, rendered.ids, rendered.roles, rendered=True), [], 4096)
    batch = build_batch([[window]], ctx_len=4096, pad_id=0, special_ids=np.array(sorted(smollm2.all_special_ids)),
                        device=torch.device("cpu"), score_roles=np.array([ROLE["user"], ROLE["assistant"]]))
    offsets = smollm2(rendered.text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    at = [i for i, (a, b) in enumerate(offsets) if rendered.text[a:b] in ("\n\n", "\n ")]
    assert at and bool((batch.role_ok[0, at] & ~batch.special[0, at]).all())
    # With two template characters against one content character, the template wins; two against two is a tie.
    doubled = copy.deepcopy(smollm2)
    doubled.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}")
    turns = [{"role": "user", "content": "\n Hi"}, {"role": "assistant", "content": "\n\n Hi"}]
    rendered = ChatRenderer(doubled).render(parse_turns(turns))
    assert _straddling_tokens(doubled, rendered, turns, "<|im_start|>{role}\n\n") == [
        ("\n\n\n", 2, 1, "user", "template"), ("\n\n\n\n", 2, 2, "assistant", "assistant")]
