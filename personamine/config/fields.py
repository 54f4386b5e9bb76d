"""What every run config is made of: fields with their one-line help (``knob``), keyword overrides checked by name
(``resolve_config``), bounds (``at_least``) and feature lists (``parse_feature_list``)."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any

from personamine.errors import PersonamineError

DEFAULT_MODEL = "builtin:smollm2-135m-instruct"
DEFAULT_DATE = "26 Jul 2024"  # passed to chat templates that print a date (Llama-3.1 prints today's otherwise)


def resolve_config(cls: type, config: Any, overrides: dict[str, Any], what: str) -> Any:
    """The config a Python entry point runs: ``config`` with ``overrides`` applied, or, with no config,
    ``cls(**overrides)``; unknown keyword arguments are named in one error (``what``: the command)."""
    check_fields(cls, overrides, f"{what} option")
    if config is None:
        return cls(**overrides)
    return dataclasses.replace(config, **overrides) if overrides else config


def read_toml(cls: type, path: str | Path, overrides: dict[str, Any]) -> Any:
    """A config read from a TOML job file, ``overrides`` (those not None) replacing its fields; unknown fields and
    unreadable files are one line."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise PersonamineError(f"cannot read config {str(path)!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PersonamineError(f"config {str(path)!r} is not valid TOML: {exc}") from exc
    data.update({k: v for k, v in overrides.items() if v is not None})
    check_fields(cls, data, "config field")
    return cls(**data)


def check_fields(cls: type, names: Any, what: str) -> None:
    """One error naming every name that is not a field of ``cls``, each with the closest field names."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        parts.append(f"{name} (did you mean {' or '.join(close)}?)" if close else name)
    raise PersonamineError(f"unknown {what}(s): {', '.join(parts)}")


def at_least(config: Any, minimum: float, *names: str) -> None:
    """Fields that must be >= ``minimum`` when set (None means "not set")."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise PersonamineError(f"{name} must be at least {minimum}, got {value}")


def knob(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field and its one-line documentation: every command's ``--help`` prints it with the default, so
    the flags and the fields cannot drift apart (a test checks that every field of every config has one)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def parse_feature_list(text: str) -> list[int]:
    """'1,5,9' or '3-6' ranges → ids."""
    ids: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                ids.extend(range(int(lo), int(hi) + 1))
            else:
                ids.append(int(part))
        except ValueError as exc:
            raise PersonamineError(f"cannot parse feature list {text!r}: expected ids like 1,5,9 or 3-6") from exc
    return ids
