"""Conversations as the model reads them: turns rendered with the model's chat template, every token given a role.

A row of a conversation corpus is a list of turns: ``[{"role", "content"}]`` (OpenAI, LMSYS-Chat-1M) or ShareGPT's
``[{"from", "value"}]``. It is rendered with the tokenizer's chat template exactly as ``discover`` renders its
prompts (one BOS, the pinned ``date_string``, an optional system prompt, else the template's own default), and
tokenized once.

Roles come from the template itself, so any template works: the conversation is rendered a second time with each
turn's content replaced by a unique marker, which splits the rendering into the template's own text between turns;
the real rendering must then be that text with each turn's content (or its ``strip()``, for templates that trim)
in between. Characters of a turn's content get its role; everything else (role headers, delimiters, a default
system prompt or date line the template inserts, a generation prompt) is ``template``. A token gets the role of
the majority of its characters (by the tokenizer's offsets), a tie between the template and a content going to the
content: ChatML's header newline merged with a content's leading newline or space ("\n\n", "\n ") is the
content's, and scored. Special tokens are always ``template``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from personamine.errors import PersonamineError
from personamine.roles import ROLE, ROLES

_ALIASES = {"system": "system", "user": "user", "human": "user", "prompter": "user", "assistant": "assistant",
            "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatbot": "assistant"}
_MARK = "\ue000{}\ue001"  # private-use code points: no template or tokenizer gives them a meaning


class BadConversation(PersonamineError):
    """A row that is not a usable conversation (the message says why); skipped and counted if the run allows."""


def parse_turns(value: object) -> list[dict[str, str]]:
    """A row's turns as ``[{"role", "content"}]`` with roles system/user/assistant."""
    if not isinstance(value, (list, tuple)) or not value:
        raise BadConversation(f"is not a non-empty list of turns (got {type(value).__name__})")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise BadConversation(f"turn {i} is not a mapping (got {type(turn).__name__})")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if role is None or content is None:
            raise BadConversation(f"turn {i} has no {'role' if role is None else 'content'} (keys: "
                                  f"{', '.join(map(str, turn))})")
        if not isinstance(content, str):
            raise BadConversation(f"turn {i}'s content is not a string (got {type(content).__name__})")
        mapped = _ALIASES.get(str(role).strip().lower())
        if mapped is None:
            raise BadConversation(f"turn {i} has an unknown role {role!r} (known: {', '.join(sorted(_ALIASES))})")
        turns.append({"role": mapped, "content": content})
    return turns


def adds_bos(tokenizer) -> int | None:
    """The BOS id the tokenizer adds by itself, or None (SmolLM2 adds none; Llama-3.1 adds <|begin_of_text|>)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(with_special) > len(plain) and with_special[0] == bos:
        return int(bos)
    return None


@dataclass
class Rendered:
    text: str  # exactly what was tokenized (a BOS the tokenizer would add is included)
    ids: list[int]
    roles: np.ndarray  # int8 [len(ids)], codes of ROLES


class ChatRenderer:
    """Renders conversations with a tokenizer's chat template and labels every token with its role."""

    def __init__(self, tokenizer, *, system_prompt: str | None = None, date_string: str | None = None,
                 generation_prompt: bool = False) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise PersonamineError("the tokenizer has no chat template, which a conversation corpus needs (mine "
                                   "it as text with text_column, or use a chat model's tokenizer)")
        self.tokenizer, self.system_prompt = tokenizer, system_prompt
        self.kwargs = {"date_string": date_string} if date_string is not None else {}
        self.generation_prompt = generation_prompt
        self.bos = adds_bos(tokenizer)
        self.special = set(tokenizer.all_special_ids)

    def messages(self, turns: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt is not None and turns[0]["role"] != "system":
            return [{"role": "system", "content": self.system_prompt}, *turns]
        return turns

    def apply(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=self.generation_prompt, **self.kwargs)
        except Exception as exc:  # jinja raises its own types, e.g. raise_exception("roles must alternate")
            raise BadConversation(f"the chat template refused it: {str(exc).splitlines()[0]}") from exc

    def layout(self, turns: list[dict[str, str]]) -> tuple[str, np.ndarray]:
        """The rendering's text (before a BOS the tokenizer would add) and each character's role code."""
        messages = self.messages(turns)
        text = self.apply(messages)
        return text, _char_roles(text, self.apply([{"role": m["role"], "content": _MARK.format(i)}
                                                   for i, m in enumerate(messages)]), messages)

    def tokens(self, text: str, char_roles: np.ndarray, start: int = 0) -> tuple[list[int], np.ndarray]:
        """``text`` (characters ``start ..`` of a layout's text, the whole of it by default) tokenized, with each
        token's role: the majority of its characters' (see the module docstring)."""
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = [int(i) for i in encoded["input_ids"]]
        if not ids:
            return ids, np.zeros(0, np.int8)
        a, b = np.asarray(encoded["offset_mapping"], np.int64).reshape(-1, 2).T
        # counts[r, t]: characters of role r in token t, from each role's running count (no loop over tokens: a
        # conversation of millions of tokens took minutes that way)
        chars = char_roles[start:start + len(text)]
        running = np.zeros((len(ROLES), chars.size + 1), np.int32)
        for code in range(len(ROLES)):
            np.cumsum(chars == code, out=running[code, 1:])
        counts = running[:, b] - running[:, a]
        # Majority of the token's characters; a tie between content and template goes to the content.
        template = ROLE["template"]
        content = counts[:template]
        majority = np.where(content.max(axis=0) >= counts[template], content.argmax(axis=0), counts.argmax(axis=0))
        scored = (b > a) & ~np.isin(np.asarray(ids), list(self.special))
        roles = np.where(scored, majority, template).astype(np.int8)
        return ids, roles

    def with_bos(self, ids: list[int], roles: np.ndarray) -> tuple[list[int], np.ndarray, bool]:
        """A template that leaves BOS to the tokenizer: add it once, as the tokenizer would (and say if it did)."""
        if self.bos is None or ids[:1] == [self.bos]:
            return ids, roles, False
        return [self.bos, *ids], np.concatenate([[ROLE["template"]], roles]).astype(np.int8), True

    def render(self, turns: list[dict[str, str]]) -> Rendered:
        text, char_roles = self.layout(turns)
        ids, roles, added = self.with_bos(*self.tokens(text, char_roles))
        if added:
            text = self.tokenizer.convert_ids_to_tokens(self.bos) + text
        return Rendered(text, ids, roles)

    def render_pieces(self, text: str, char_roles: np.ndarray,
                      pieces: Iterable[str]) -> Iterator[tuple[list[int], np.ndarray]]:
        """A layout's tokens and roles, tokenized piece by piece (``pieces`` concatenate to ``text``, each cut where
        the tokenizer's pre-tokenizer splits anyway, e.g. by ``shards.documents.split_text``): the tokens ``render``
        gives, holding one piece's offsets at a time instead of the whole conversation's."""
        start = 0
        for piece in pieces:
            ids, roles = self.tokens(piece, char_roles, start)
            if start == 0:
                ids, roles, _ = self.with_bos(ids, roles)
            start += len(piece)
            yield ids, roles


def _char_roles(text: str, marked: str, messages: list[dict[str, str]]) -> np.ndarray:
    """Each character's role code: the template's text is what surrounds the markers of ``marked``."""
    out = np.full(len(text), ROLE["template"], np.int8)
    pos = cursor = 0
    for i, message in enumerate(messages):
        mark = _MARK.format(i)
        at = marked.find(mark, cursor)
        if at < 0:
            raise BadConversation(f"the chat template drops or reorders turn {i}, so its tokens' roles are unknown")
        between = marked[cursor:at]
        if not text.startswith(between, pos):
            raise BadConversation(f"the chat template renders the text around turn {i} differently when the "
                                  "content changes, so its tokens' roles are unknown")
        pos += len(between)
        for content in (message["content"], message["content"].strip()):
            if text.startswith(content, pos):
                out[pos:pos + len(content)] = ROLE[message["role"]]
                pos += len(content)
                break
        else:
            raise BadConversation(f"the chat template changes turn {i}'s content (beyond trimming it), so its "
                                  "tokens' roles are unknown")
        cursor = at + len(mark)
    if text[pos:] != marked[cursor:]:
        raise BadConversation("the chat template renders the end of the conversation differently when the content "
                              "changes, so its tokens' roles are unknown")
    return out
