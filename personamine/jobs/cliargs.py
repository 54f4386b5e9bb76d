"""Every field of a config dataclass as a command-line flag, so a TOML file and flags mean the same thing."""

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


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: frozenset[str] = frozenset()) -> None:
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("run config (each overrides the TOML file)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        base, is_list = _kind(hints[f.name])
        if base is bool and not is_list:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None)
        elif is_list:
            group.add_argument(flag, dest=f.name, default=None, metavar="A,B,...",
                               help="comma-separated" + (" ids, ranges like 3-6, or 'all'" if base is int else ""))
        else:
            group.add_argument(flag, dest=f.name, type=base if base in (int, float) else str, default=None)


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
