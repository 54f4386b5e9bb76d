"""The CLI is a thin layer: a TOML job plus flag overrides, and `show` on the written file."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import NOISE, SAE_LAYER, personamine_cli, user_env

import personamine
from personamine.jobs.cli import main


def test_toml_job_with_flag_override_and_show(tiny_model_dir, tiny_sae_repo, tiny_corpus_jsonl, tmp_path, capsys):
    job = tmp_path / "job.toml"
    out = tmp_path / "mine.h5"
    job.write_text(
        f'model = "{tiny_model_dir}"\nlayer = {SAE_LAYER}\nsae = "{tiny_sae_repo}"\ncorpus = "{tiny_corpus_jsonl}"\n'
        f'features = [3, 9, 27]\nctx_len = 16\ntop_k = 4\noutput = "{tmp_path / "ignored.h5"}"\nprogress = false\n'
    )
    assert main(["mine", str(job), "--output", str(out), "--top-k", "2"]) == 0
    res = personamine.read_results(out)
    assert res.feature_ids.tolist() == [3, 9, 27] and res.score.shape == (3, 2)
    assert res.config["top_k"] == 2
    capsys.readouterr()
    assert main(["show", str(out), "--features", "9", "--examples", "2"]) == 0
    text = capsys.readouterr().out
    assert "feature 9:" in text and "#1 score" in text and "«" in text
    assert "feature 3:" not in text and "1 features shown" in text
    assert main(["show", str(out), "--features", "4"]) == 2  # not in the file: a clear error, not a traceback
    assert "feature 4 is not in" in capsys.readouterr().err


def test_features_flag_accepts_ranges_and_all(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    base = ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--corpus", str(tiny_corpus_jsonl), "--ctx-len", "16", "--max-documents", "4", "--no-progress"]
    assert main(base + ["--features", "4-7,9", "--output", str(tmp_path / "a.h5")]) == 0
    assert personamine.read_results(tmp_path / "a.h5").feature_ids.tolist() == [4, 5, 6, 7, 9]
    assert main(base + ["--features", "all", "--output", str(tmp_path / "b.h5")]) == 0
    assert personamine.read_results(tmp_path / "b.h5").feature_ids.size == 256


def test_help_lists_every_command_and_documents_every_flag():
    from personamine.jobs.cli import COMMANDS, build_parser

    parser = build_parser()
    top = parser.format_help()
    for name, cmd in COMMANDS.items():
        assert len(cmd.summary) > 20, f"command {name!r} has no summary for personamine --help"
        assert name in top and cmd.summary.split(":")[0][:40] in " ".join(top.split())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, child in sub.choices.items():
        titles = [g.title for g in child._action_groups]
        if name not in ("mine", "screen"):  # only the long, resumable runs read a TOML job file
            assert not any("TOML" in (t or "") for t in titles), (name, titles)
        for action in child._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 8, (name, action.option_strings or action.dest)
            group = next(g for g in child._action_groups if action in g._group_actions)
            if group.title not in ("options", "positional arguments"):  # a config field's flag: its default too
                assert "default" in action.help, (name, action.option_strings)
        child.format_help()  # renders (a stray "%" in a help text would raise here)
    text = sub.choices["mine"].format_help()
    assert "--top-k N" in text and "--corpus CORPUS" in text
    assert "windows kept per feature (default: 20)" in " ".join(text.split())


# ---------------------------------------------------------------- what a user sees: real processes, as typed


@pytest.fixture(scope="module")
def mined(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("mined") / "mine.h5"
    assert main(["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
                 "--corpus", str(tiny_corpus_jsonl), "--features", "1,2,3", "--ctx-len", "48", "--no-progress",
                 "--output", str(out)]) == 0
    return out


def test_mine_prints_only_its_own_lines(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    """No library noise: no LOAD REPORT of the layers skipped on purpose, no weight bar, no warning that a document
    is longer than the model's maximum (mining windows it on purpose). --verbose brings the libraries back."""
    args = ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--corpus", str(tiny_corpus_jsonl), "--features", "1,2,3", "--ctx-len", "16"]
    quiet = personamine_cli(*args, "--no-progress", "--output", str(tmp_path / "a.h5"))
    assert quiet.returncode == 0, quiet.stderr
    # The fixture corpus has a null and an integer text: the one line a user should see, a count of skipped rows.
    skipped = ("personamine: warning: 2 of 62 rows skipped (1 with nothing in 'text', 1 not a string, 0 malformed); "
               "counted in the output's rows_skipped / rows_malformed\n")
    assert quiet.stdout == f"wrote {tmp_path / 'a.h5'}\n" and quiet.stderr == skipped
    with_bar = personamine_cli(*args, "--output", str(tmp_path / "b.h5"))
    assert with_bar.returncode == 0 and not any(noise in with_bar.stderr for noise in NOISE), with_bar.stderr
    # With progress on: what was loaded, the pre-flight's figures, the bar and the closing line; nothing else.
    parts = [p for p in re.split(r"[\r\n]+", with_bar.stderr.replace(skipped, "")) if p.strip()]
    assert parts[0].startswith("personamine: SAE ") and parts[1].startswith("personamine: pre-flight: SAE "), parts
    assert all(part.startswith("mining") for part in parts[2:]) and parts[-1].startswith("mining: "), parts
    # The same run with --verbose shows what the quiet runs hid (so the checks above can fail).
    loud = personamine_cli(*args, "--no-progress", "--verbose", "--output", str(tmp_path / "c.h5"))
    assert loud.returncode == 0 and "LOAD REPORT" in loud.stderr and "Loading weights" in loud.stderr


def test_discover_prints_the_table_and_a_summary(tiny_model_dir, tiny_sae_dir, tmp_path):
    out = tmp_path / "disc.h5"
    run = personamine_cli("discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                          str(tiny_sae_dir), "--output", str(out), "--table", "5", "--no-progress")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    found = personamine.read_discovery(out)
    lines = run.stdout.splitlines()
    table, directions = found.table(5).splitlines(), found.directions_table().splitlines()
    assert lines[:len(table)] == table and lines[len(table):-1] == directions
    positive = int((found.score > 0).sum())
    assert lines[-1] == (f"wrote {out}: 32 persona prompts vs 32 controls, {found.feature_ids.size} features ranked, "
                         f"{positive} scoring above zero, {int(found.discoveries().sum())} with q < 0.05 and a CI "
                         "above zero (mine --features-from takes those scoring above zero by default; with "
                         "--max-q 0.05 --min-ci-low 0, only the discoveries)")
    assert 0 < positive < found.feature_ids.size  # the tiny SAE ranks some features below zero too


def test_show_prints_the_file_and_stops_quietly_when_the_reader_goes(mined):
    run = personamine_cli("show", str(mined), "--examples", "2")
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout.startswith(f"{mined}: ") and run.stdout.count("\nfeature ") == 3
    # `personamine show ... | head -1`: the reader exits early; no BrokenPipeError traceback.
    piped = subprocess.run(f"{shlex.quote(sys.executable)} -m personamine.jobs.cli show {shlex.quote(str(mined))} "
                           "--examples 20 | head -c 10", shell=True, capture_output=True, text=True,
                           timeout=120, executable="/bin/bash", env=user_env())
    assert piped.stdout == run.stdout[:10] and piped.stderr == "", piped.stderr


def test_show_width_keeps_the_peak_in_view(mined):
    from personamine.jobs.show import clip_around

    parts = ["aa", "bb", "«P»!9", "cc", "dd"]
    assert clip_around(parts, 2, 20) == "aabb«P»!9ccdd"
    assert clip_around(parts, 2, 11) == "…bb«P»!9cc…"
    assert clip_around(parts, 0, 8) == "aabb…" and clip_around(parts, 4, 8) == "…ccdd"
    assert clip_around(parts, 2, 3) == "…«P»!9…"  # the peak alone is wider: it still shows whole
    res = personamine.read_results(mined)
    prefix = len(res.attrs["sink_prefix"])
    for width in (40, 70):
        printed = capture_show(mined, width)
        lines = [line for line in printed.splitlines() if line.startswith("  #")]
        fid = None
        for line in printed.splitlines():
            if line.startswith("feature "):
                fid, rank = int(line.split()[1].rstrip(":")), 0
            elif line.startswith("  #"):
                ex = res.examples(fid)[rank]
                rank += 1
                text = line.split(": ", 1)[1]
                peak = f"!{float(ex['activations'][prefix:].max()):.3g}"
                assert peak in text, (line, peak)  # the peak's mark and value are always shown
                assert len(text) <= width or text.count("«") == 1, line
        assert any(line.split(": ", 1)[1].startswith("…") for line in lines)  # some were cut on the left...
        assert any(line.endswith("…") for line in lines)  # ... and some on the right


def capture_show(path, width: int) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["show", str(path), "--examples", "5", "--width", str(width)]) == 0
    return buffer.getvalue()


def test_examples_of_a_feature_not_in_the_file(mined):
    from personamine.errors import FeatureNotInFile, PersonamineError

    res = personamine.read_results(mined)
    for lookup in (res.examples, res.interval_samples):
        with pytest.raises(FeatureNotInFile) as err:
            lookup(77)
        assert isinstance(err.value, KeyError) and isinstance(err.value, PersonamineError)
        assert str(err.value) == f"feature 77 is not in {mined} (it holds 3 feature(s): 1, 2, 3)"


def clean_failure(capsys, argv: list[str], fragment: str, written: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("personamine: error: ") and fragment in err[0], err
    assert not written.exists() or written.is_dir() and not any(written.iterdir())


@pytest.mark.parametrize("where,fragment", [("dir", "is a directory: give a file path"),
                                            ("under-a-file", "is a file, not a directory")])
def test_output_that_cannot_be_written_fails_first(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path,
                                                   capsys, where, fragment):
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / "out" if where == "dir" else tmp_path / "a-file" / "mine.h5"
    if where == "dir":
        target.mkdir()
    for command in (["mine", "--corpus", str(tiny_corpus_jsonl), "--features", "1"], ["discover"]):
        clean_failure(capsys, [*command, "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                               str(tiny_sae_dir), "--no-progress", "--output", str(target)], fragment, target)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == (["a-file", "out"] if where == "dir" else ["a-file"])  # no work dir, no temp file


@pytest.mark.parametrize("device,fragment", [("gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
                                             ("cuda", "torch sees no CUDA GPU")])
def test_device_that_does_not_exist(tiny_model_dir, tiny_sae_dir, tmp_path, capsys, device, fragment):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "disc.h5"
    clean_failure(capsys, ["discover", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                           str(tiny_sae_dir), "--device", device, "--no-progress", "--output", str(out)], fragment, out)


@pytest.mark.parametrize("flag,value", [("--top", "0"), ("--batch-tokens", "0"), ("--feature-chunk", "0"),
                                        ("--max-tokens", "-5"), ("--norm-filter", "-1")])
def test_out_of_range_flags(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, capsys, flag, value):
    out = tmp_path / "mine.h5"
    clean_failure(capsys, ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae",
                           str(tiny_sae_dir), "--corpus", str(tiny_corpus_jsonl), "--features", "1", flag, value,
                           "--no-progress", "--output", str(out)], f"{flag[2:].replace('-', '_')} must be at least",
                  out)


def test_unknown_field_in_a_job_file(tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text("topk = 5\n")
    clean_failure(capsys, ["mine", str(job)], "unknown config field(s): topk (did you mean top_k or top?)",
                  tmp_path / "personamine-out")


def test_negative_counts_are_usage_errors(capsys):
    for argv in (["show", "x.h5", "--examples", "-2"], ["show", "x.h5", "--width", "-1"],
                 ["discover", "--table", "-3"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "invalid count (a whole number >= 0) value" in capsys.readouterr().err


def test_a_bad_flag_is_one_error_line(capsys):
    """argparse's own error prints the usage first: the CLI's is one line, as for every other bad input."""
    for argv, said in ((["mine", "--topk", "3"], "unrecognized arguments: --topk (see personamine --help)"),
                       (["mine", "--top-k", "many"],
                        "argument --top-k: invalid int value: 'many' (see personamine mine --help)"),
                       ([], "the following arguments are required: COMMAND (see personamine --help)")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert capsys.readouterr().err == f"personamine: error: {said}\n"
