"""Tokenizer helpers and prompts, shared by discover, steer, mine and train-sae: the sink prefix every mined window
starts with, which ids are special, plain tokenization, the shipped prompt sets, and prompts rendered as one user turn
with the assistant's generation prompt (``render_prompts``) with the positions each prompt's vector is read at."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from personamine.config.discover import POSITIONS
from personamine.config.fields import DEFAULT_DATE
from personamine.corpus.conversations import BadConversation, ChatRenderer
from personamine.errors import PersonamineError
from personamine.roles import ROLE


def sink_prefix_ids(tokenizer, sink_prefix: list[str] | None = None) -> list[int]:
    """Token ids every window starts with; never scored."""
    if sink_prefix:
        ids = tokenizer.convert_tokens_to_ids(list(sink_prefix))
        unknown = [t for t, i in zip(sink_prefix, ids, strict=True) if i is None or i == tokenizer.unk_token_id]
        if unknown:
            raise PersonamineError(f"sink_prefix token(s) not in the vocabulary: {', '.join(unknown)}")
        return [int(i) for i in ids]
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    added = with_special[: len(with_special) - len(plain)] if with_special[-len(plain):] == plain else []
    if added:
        return [int(i) for i in added]
    # Measured on SmolLM2 (300 WikiText windows, docs/mining.md): a document separator then BOS
    # (`<|endoftext|><|im_start|>`, its unk and bos)
    # keeps every content token at a normal norm; after `<|im_end|>` (eos) the next token becomes a second sink.
    separator = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    ids = [int(i) for i in dict.fromkeys(i for i in (separator, tokenizer.bos_token_id) if i is not None)]
    if not ids:
        raise PersonamineError("the tokenizer adds no BOS and has no bos/eos token: set sink_prefix")
    return ids


def special_token_ids(tokenizer, prefix: list[int]) -> np.ndarray:
    ids = set(tokenizer.all_special_ids) | set(prefix)
    if tokenizer.pad_token_id is not None:
        ids.add(tokenizer.pad_token_id)
    return np.array(sorted(ids), dtype=np.int64)


def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def builtin_prompts_path(kind: str) -> Path:
    """The shipped prompt sets: ``kind`` is "persona" or "control" (line i of each is a matched pair)."""
    return Path(str(resources.files("personamine") / "data" / f"{kind}_prompts.jsonl"))


def _json_lines(path: Path, what: str) -> list[tuple[int, dict | str]]:
    """(line number, parsed row) of a JSONL file (``.jsonl``/``.json``), or (line number, stripped line) of a
    text file; blank lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PersonamineError(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise PersonamineError(f"{what} file {str(path)!r} is not UTF-8 text") from exc
    rows: list[tuple[int, dict | str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix not in (".jsonl", ".json"):
            rows.append((number, line.strip()))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PersonamineError(f"{str(path)!r} line {number} is not JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise PersonamineError(f"{str(path)!r} line {number} is not a JSON object")
        rows.append((number, row))
    return rows


def _string_field(path: Path, number: int, row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        raise PersonamineError(f"{str(path)!r} line {number} has no non-empty string \"{name}\"")
    return value


def load_prompt_records(path: str | Path) -> tuple[list[str], list[str | None]]:
    """(prompts, responses) from a ``.jsonl``/``.json`` file (``{"content": ..., "response": ...}`` per line, the
    response optional) or a text file (one prompt per line, no responses)."""
    path = Path(path)
    prompts: list[str] = []
    responses: list[str | None] = []
    for number, row in _json_lines(path, "prompts"):
        if isinstance(row, str):
            prompts.append(row)
            responses.append(None)
            continue
        prompts.append(_string_field(path, number, row, "content"))
        responses.append(_string_field(path, number, row, "response") if "response" in row else None)
    if not prompts:
        raise PersonamineError(f"prompts file {str(path)!r} holds no prompts")
    return prompts, responses


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl``/``.json`` file (``{"content": ...}`` per line) or a text file (one per line)."""
    return load_prompt_records(path)[0]


def builtin_roles_path() -> Path:
    """The shipped role set: characters the Assistant is asked to play (see ``load_roles``)."""
    return Path(str(resources.files("personamine") / "data" / "roles.jsonl"))


def load_roles(path: str | Path) -> list[tuple[str, str]]:
    """(name, system prompt) of each role of a JSONL file (``{"name": ..., "system": ...}`` per line)."""
    path = Path(path)
    if path.suffix not in (".jsonl", ".json"):
        raise PersonamineError(f"roles file {str(path)!r} must be JSONL ({{\"name\": ..., \"system\": ...}} per line)")
    roles = [(_string_field(path, n, row, "name"), _string_field(path, n, row, "system"))
             for n, row in _json_lines(path, "roles") if isinstance(row, dict)]
    if not roles:
        raise PersonamineError(f"roles file {str(path)!r} holds no roles")
    names = [name for name, _ in roles]
    if len(set(names)) != len(names):
        raise PersonamineError(f"roles file {str(path)!r} names a role twice")
    return roles


@dataclass
class RenderedPrompt:
    text: str
    rendered: str  # exactly what was tokenized
    ids: list[int]
    positions: list[int]  # token indices whose SAE codes are averaged into the prompt's vector


def render_prompts(tokenizer, texts: list[str], *, position: str = "last", system_prompt: str | None = None,
                   date_string: str | None = DEFAULT_DATE) -> list[RenderedPrompt]:
    """Each prompt as one user turn with the assistant's generation prompt, rendered by the same code that renders a
    conversation corpus (``corpus.conversations.ChatRenderer``), so mining the prompts as a corpus sees the same
    tokens. ``position`` (one of ``POSITIONS``) says which tokens each prompt's vector averages."""
    if position not in POSITIONS:
        raise PersonamineError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    prefix = sink_prefix_ids(tokenizer)
    special = set(special_token_ids(tokenizer, prefix).tolist())
    templated = getattr(tokenizer, "chat_template", None) is not None
    renderer = ChatRenderer(tokenizer, system_prompt=system_prompt, date_string=date_string,
                            generation_prompt=True) if templated else None
    out = []
    for text in texts:
        if renderer is not None:
            try:
                rendered = renderer.render([{"role": "user", "content": text}])
            except BadConversation as exc:
                raise PersonamineError(f"prompt {text!r}: {exc}") from None
            ids, roles = rendered.ids, rendered.roles.tolist()
            shown = rendered.text
        else:
            # No template (a base model): raw text behind the same sink prefix mining uses, so position 0 is
            # never a content token.
            ids = [*prefix, *_encode(tokenizer, text)]
            roles = [ROLE["prefix"]] * len(prefix) + [ROLE["text"]] * (len(ids) - len(prefix))
            shown = tokenizer.decode(prefix) + text
        chosen = _positions(tokenizer, text, ids, roles, special, templated, position, system_prompt, date_string)
        out.append(RenderedPrompt(text, shown, ids, chosen))
    return out


def _encode(tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _apply_template(tokenizer, text: str, system_prompt: str | None, date_string: str | None, *,
                    generation_prompt: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    kwargs = {"date_string": date_string} if date_string is not None else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                             **kwargs)
    except Exception as exc:  # jinja raises its own types (e.g. a template that rejects system messages)
        raise PersonamineError(f"the chat template failed on prompt {text!r}: {exc}") from exc


def _positions(tokenizer, text: str, ids: list[int], roles: list[int], special: set[int], templated: bool,
               position: str, system_prompt: str | None, date_string: str | None) -> list[int]:
    if position == "last":
        return [len(ids) - 1]
    if position == "user":  # the prompt's own tokens: what mining scores with score_roles=["user"]
        wanted = ROLE["user"] if templated else ROLE["text"]
        chosen = [i for i, r in enumerate(roles) if r == wanted and ids[i] not in special]
        if not chosen:
            raise PersonamineError(f"prompt {text!r} has no token of its own to read (position 'user')")
        return chosen
    if position == "prompt-mean":
        start = 0
    else:  # assistant-header: the tokens add_generation_prompt appends
        if not templated:
            raise PersonamineError("position 'assistant-header' needs a chat template; this tokenizer has none")
        without = _encode(tokenizer, _apply_template(tokenizer, text, system_prompt, date_string,
                                                     generation_prompt=False))
        start = _generation_prompt_start(ids, without)
    # Special tokens (BOS, role delimiters) carry massive, input-independent activations (Sun et al. 2024,
    # "Massive Activations in Large Language Models", arXiv:2402.17762): SAE codes there mean nothing.
    chosen = [i for i in range(start, len(ids)) if ids[i] not in special]
    if not chosen:
        raise PersonamineError(f"prompt {text!r} has no non-special token at position {position!r}")
    return chosen


def _generation_prompt_start(ids: list[int], without: list[int]) -> int:
    """Index of the first generation-prompt token: ``ids`` must extend the rendering without it."""
    # A BOS added by render_prompts shifts ids by one relative to the plain rendering.
    for shift in (0, 1):
        if ids[shift: shift + len(without)] == without and len(ids) > shift + len(without):
            return shift + len(without)
    raise PersonamineError(
        "cannot locate the generation prompt: the template rendered with it does not extend the rendering "
        "without it token for token; use position 'last' or 'prompt-mean'"
    )


def render_responses(tokenizer, texts: list[str], responses: list[str], *, system_prompt: str | None = None,
                     date_string: str | None = DEFAULT_DATE) -> list[RenderedPrompt]:
    """Each prompt as a user turn followed by ``responses[i]`` as the Assistant's turn, rendered as a conversation
    corpus is; a prompt's positions are its response's tokens (the tokens the template labels ``assistant``),
    special tokens never."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise PersonamineError("position 'response-mean' needs a chat template; this tokenizer has none")
    special = set(special_token_ids(tokenizer, sink_prefix_ids(tokenizer)).tolist())
    renderer = ChatRenderer(tokenizer, system_prompt=system_prompt, date_string=date_string)
    out = []
    for text, response in zip(texts, responses, strict=True):
        try:
            rendered = renderer.render([{"role": "user", "content": text}, {"role": "assistant", "content": response}])
        except BadConversation as exc:
            raise PersonamineError(f"prompt {text!r} with its response: {exc}") from None
        chosen = [i for i, (t, r) in enumerate(zip(rendered.ids, rendered.roles.tolist(), strict=True))
                  if r == ROLE["assistant"] and t not in special]
        if not chosen:
            raise PersonamineError(f"prompt {text!r}: its response {response!r} has no token to read "
                                   "(position 'response-mean')")
        out.append(RenderedPrompt(text, rendered.text, rendered.ids, chosen))
    return out
