"""Every field of a config dataclass as a command-line flag, so a TOML file and flags mean the same thing.

Each flag's help is the field's own ``knob(default, "help")`` text plus its default, so ``--help`` and the config
cannot drift apart."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _kind(annotation: Any) -> tuple[type, bool]:
    """(base type, is list) of a field annotation such as ``int | None`` or ``list[str] | None``."""
    args = typing.get_args(annotation)
    options = [a for a in args if a is not type(None)] if (
        typing.get_origin(annotation) in (typing.Union, types.UnionType)) else [annotation]
    for option in options:
        if typing.get_origin(option) is list:
            return typing.get_args(option)[0], True
    return options[0], False


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def describe_default(value: Any) -> str:
    """A default as a user would type it: ``none``, ``on``/``off``, ``a,b``, ``200,000``."""
    if value is None or value == "" or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def flag_help(f: dataclasses.Field) -> str:
    """The field's help text, with its default unless the text already says what the default does."""
    text = f.metadata.get("help", "")
    default = default_of(f)
    if default is dataclasses.MISSING or "default" in text:
        return text
    return f"{text} (default: {describe_default(default)})" if text else f"default: {describe_default(default)}"


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str | None = None,
                     skip: frozenset[str] = frozenset()) -> None:
    """One flag per field of ``cls`` (``--field-name``), in a group titled ``title`` (default: "options (the fields
    of CLS)"), each with the field's help text and default."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"options (the fields of {cls.__name__})")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        base, is_list = _kind(hints[f.name])
        # argparse expands "%" in help; a help text may say "5%".
        text = flag_help(f).replace("%", "%%")
        if base is bool and not is_list:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif is_list:
            group.add_argument(flag, dest=f.name, default=None, metavar="A,B,...", help=text)
        else:
            metavar = {int: "N", float: "X"}.get(base, f.name.upper())
            group.add_argument(flag, dest=f.name, type=base if base in (int, float) else str, default=None,
                               metavar=metavar, help=text)


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        base, is_list = _kind(hints[f.name])
        if is_list and isinstance(value, str) and base is str:
            value = [v for v in value.split(",") if v]
        out[f.name] = value
    return out
