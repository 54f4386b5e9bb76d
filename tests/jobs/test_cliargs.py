"""Flags from config fields: one ``--field-name`` per field, with the field's help and its default; what the flags
parse to builds the config a TOML file or keyword arguments would (unset flags leave the config's defaults)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from personamine.config import DiscoverConfig, ExplainConfig, MineConfig, SteerConfig, TrainSaeConfig, knob
from personamine.errors import PersonamineError
from personamine.jobs.cliargs import add_config_flags, default_of, describe_default, flag_help, overrides_from_args


def parse(cls, argv, **options):
    parser = argparse.ArgumentParser(prog="t", add_help=False)
    add_config_flags(parser, cls, **options)
    return parser, parser.parse_args(argv)


@pytest.mark.parametrize("cls", [MineConfig, DiscoverConfig, SteerConfig, TrainSaeConfig, ExplainConfig])
def test_no_flag_given_is_the_default_config(cls):
    _, args = parse(cls, [])
    overrides = overrides_from_args(args, cls)
    assert overrides == {}
    extra = {"results": "m.h5"} if cls is ExplainConfig else {}
    assert cls(**overrides, **extra) == cls(**extra)


def test_every_field_is_a_flag_with_its_help_and_default():
    parser, _ = parse(MineConfig, [])
    group = next(g for g in parser._action_groups if g.title == "options (the fields of MineConfig)")
    flags = {a.option_strings[0]: a for a in group._group_actions}
    assert sorted(flags) == sorted("--" + f.name.replace("_", "-") for f in dataclasses.fields(MineConfig))
    assert flags["--top-k"].help == "windows kept per feature (default: 20)" and flags["--top-k"].metavar == "N"
    assert flags["--min-fve"].metavar == "X" and flags["--corpus"].metavar == "CORPUS"
    assert flags["--score-roles"].metavar == "A,B,..."
    # A help text that already says what its default does is left alone.
    assert flags["--layer"].help.endswith("(default: the layer the SAE declares)")
    assert flags["--unit-bytes"].help.endswith("(default: 8,388,608)")
    skipped, _ = parse(MineConfig, [], title="run config", skip=frozenset({"output", "progress"}))
    names = [a.dest for g in skipped._action_groups if g.title == "run config" for a in g._group_actions]
    assert "output" not in names and "progress" not in names and "top_k" in names


def test_flags_parse_back_to_the_config():
    argv = ["--layer", "3", "--features", "1,4-6", "--min-fve", "0.25", "--no-dedupe", "--progress",
            "--score-roles", "assistant,user,", "--sink-prefix", "<s>", "--corpus", "c.jsonl", "--top-k", "5"]
    _, args = parse(MineConfig, argv)
    overrides = overrides_from_args(args, MineConfig)
    assert overrides == {"layer": 3, "features": "1,4-6", "min_fve": 0.25, "dedupe": False, "progress": True,
                         "score_roles": ["assistant", "user"], "sink_prefix": ["<s>"], "corpus": "c.jsonl",
                         "top_k": 5}
    cfg = MineConfig(**overrides)
    assert cfg == MineConfig(layer=3, features=[1, 4, 5, 6], min_fve=0.25, dedupe=False, score_roles=["assistant",
                             "user"], sink_prefix=["<s>"], corpus="c.jsonl", top_k=5)
    _, steer = parse(SteerConfig, ["--alphas=-1,0.5", "--clamp", "2", "--features", "3", "--no-combine"])
    assert SteerConfig(**overrides_from_args(steer, SteerConfig)) == SteerConfig(alphas=[-1.0, 0.5], clamp=[2.0],
                                                                                 features=[3], combine=False)


def test_values_that_do_not_parse_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        parse(MineConfig, ["--top-k", "many"])
    assert info.value.code == 2 and "argument --top-k: invalid int value: 'many'" in capsys.readouterr().err
    _, args = parse(MineConfig, ["--top-k", "0"])  # parses; the config refuses it
    with pytest.raises(PersonamineError, match="^top_k must be at least 1, got 0$"):
        MineConfig(**overrides_from_args(args, MineConfig))


@dataclass
class Toy:
    ratio: float = knob(0.05, "a ratio of 5% or so")
    count: int = knob(250_000, "how many")
    small: int = knob(9999, "fewer")
    flag: bool = knob(True, "on or off")
    names: list[str] = knob(help="some names", factory=lambda: ["a", "b"])
    empty: list[int] = knob(help="nothing yet", factory=list)
    text: str = knob("", "blank")
    maybe: str | None = knob(None, "the default says so already")
    bare: int = knob(3)


def test_help_texts_and_defaults_as_a_user_types_them():
    fields = {f.name: f for f in dataclasses.fields(Toy)}
    assert [describe_default(default_of(fields[n])) for n in fields] == [
        "0.05", "250,000", "9999", "on", "a,b", "none", "none", "none", "3"]
    assert flag_help(fields["count"]) == "how many (default: 250,000)"
    assert flag_help(fields["maybe"]) == "the default says so already"
    assert flag_help(fields["bare"]) == "default: 3"
    parser, args = parse(Toy, ["--no-flag", "--names", "x,,y", "--empty", "1,2", "--ratio", "0.5"])
    assert overrides_from_args(args, Toy) == {"flag": False, "names": ["x", "y"], "empty": "1,2", "ratio": 0.5}
    parser.format_help()  # "5%" in a help text is escaped for argparse
    assert "5%" in parser.format_help()
