"""Faults around a run rather than in its numbers: a failed start leaves nothing that blocks the fixed rerun, input
is validated before mining where it can be, SAE metadata that disagrees is refused, one run per output at a time,
and a full disk during the final write. Each: one ``personamine: error:`` line, exit 2, nothing partial left."""

from __future__ import annotations

import json

import pytest
from fixtures import SAE_LAYER, write_saelens

import personamine
from personamine.jobs.cli import main

GOOD_TURNS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a model."}]


@pytest.fixture()
def run_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "out.h5"

    def run(*extra, **changes):
        args = {"model": str(tiny_model_dir), "layer": str(SAE_LAYER), "sae": str(tiny_sae_dir),
                "corpus": str(tiny_corpus_jsonl), "features": "1,2,3", "ctx-len": "16", "output": str(out)}
        args.update({k: str(v) for k, v in changes.items() if v is not None})
        args = {k: v for k, v in args.items() if changes.get(k, "") is not None}  # None drops a flag
        code = main(["mine", "--no-progress", *(x for k, v in args.items() for x in (f"--{k}", v)), *extra])
        return code, capsys.readouterr().err.strip().splitlines()

    run.out = out
    run.work = tmp_path / "out.h5.work"
    return run


def assert_failed_cleanly(run, code, err, *fragments):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("personamine: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err[0]
    assert not run.out.exists()
    assert not list(run.out.parent.glob("*.h5*tmp*"))
    assert not run.work.exists(), sorted(p.name for p in run.work.iterdir())


# ---------------------------------------------------------------- failed starts


def test_a_bad_row_found_while_mining_leaves_nothing_that_blocks_the_fixed_rerun(run_cli, tmp_path):
    """The bad conversation is row 70 of the first unit: past the pre-flight, found while mining. The rerun after the
    fix is a new corpus (size and mtime changed), which a work dir holding a run.json used to refuse."""
    corpus = tmp_path / "c.jsonl"
    rows = [{"messages": GOOD_TURNS}] * 70 + [{"messages": [{"role": "narrator", "content": "hi"}]}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = run_cli("--preflight-tokens", "0", corpus=corpus, **{"messages-column": "messages", "ctx-len": 32})
    # row 70 of the unit, not row 6 of its 64-row tokenization group
    assert_failed_cleanly(run_cli, code, err, "unit 0 row 70: the conversation turn 0 has an unknown role 'narrator'")
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1] + [{"messages": GOOD_TURNS[::-1]}]))
    code, err = run_cli("--preflight-tokens", "0", corpus=corpus, **{"messages-column": "messages", "ctx-len": 32})
    assert code == 0, err
    assert personamine.read_results(run_cli.out).attrs["n_documents"] == 71


def test_a_run_json_alone_never_blocks_a_rerun_whose_inputs_changed(run_cli, tiny_corpus_jsonl, tmp_path):
    """A start killed before its first checkpoint (SIGKILL: no cleanup ran) leaves a run.json alone."""
    import shutil

    corpus = tmp_path / "c.jsonl"
    shutil.copy(tiny_corpus_jsonl, corpus)
    run_cli.work.mkdir()
    (run_cli.work / "run.json").write_text(json.dumps({"fingerprint": "another run", "config": {"top_k": 3},
                                                       "corpus": {"source": "another corpus"}}))
    code, err = run_cli(corpus=corpus)
    assert code == 0, err
    assert not run_cli.work.exists()


def test_every_row_skipped_leaves_no_checkpoints_behind(run_cli, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(3)))
    code, err = run_cli(corpus=corpus)
    # the wrong type named as such, not as "null or empty"
    assert_failed_cleanly(run_cli, code, err, "every one of the 3 rows of corpus",
                          "(column 'text' null or empty in 0, not a string in 3, malformed in 0)")
    corpus.write_text("".join(json.dumps({"text": f"The cat sat on mat {i}."}) + "\n" for i in range(3)))
    code, err = run_cli(corpus=corpus, **{"preflight-tokens": 0})
    assert code == 0, err


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_typed_column_of_the_wrong_type_is_refused_before_mining(run_cli, tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    table = pa.table({"text": pa.array([1, 2, 3], pa.int64()), "body": ["a", "b", "c"]})
    corpus = tmp_path / f"c.{fmt}"
    pq.write_table(table, corpus) if fmt == "parquet" else pyarrow.csv.write_csv(table, corpus)
    code, err = run_cli(corpus=corpus)
    assert_failed_cleanly(run_cli, code, err, f"c.{fmt}': column 'text' holds int64, not strings; set text_column")


def test_a_tokens_column_of_strings_is_refused_before_mining(run_cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "c.parquet"
    pq.write_table(pa.table({"ids": ["1 2 3", "4 5"]}), corpus)
    code, err = run_cli(corpus=corpus, **{"tokens-column": "ids"})
    assert_failed_cleanly(run_cli, code, err, "column 'ids' holds string, not lists of token ids; set tokens_column")


# ---------------------------------------------------------------- SAE metadata that disagrees


def edited_release(src, dst, **trainer):
    import shutil

    shutil.copytree(src, dst)
    path = dst / f"resid_post_layer_{SAE_LAYER}" / "trainer_0" / "config.json"
    config = json.loads(path.read_text())
    config["trainer"].update(trainer)
    path.write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("trainer, message", [
    ({"layer": 99}, "declares two layers: config.json trainer.submodule_name says resid_post_layer_2, but "
                    "config.json trainer.layer says 99"),
    ({"layer": 3, "submodule_name": "resid_post_layer_3"},
     "config.json trainer.submodule_name says resid_post_layer_3, but the release folder's name says "
     "resid_post_layer_2"),
    ({"submodule_name": None, "layer": 7}, "config.json trainer.layer says 7, but the release folder's name says "
                                           "resid_post_layer_2"),
])
def test_sae_metadata_that_disagrees_is_refused_naming_both(run_cli, tiny_sae_dir, tmp_path, trainer, message):
    sae = edited_release(tiny_sae_dir, tmp_path / "sae", **trainer)
    for layer in (SAE_LAYER, None):  # whether the run names the layer or takes the SAE's
        code, err = run_cli(sae=sae, layer=layer)
        assert_failed_cleanly(run_cli, code, err, message)


def test_saelens_hook_layer_that_disagrees_with_the_hook_name_is_refused(tmp_path):
    from personamine.errors import PersonamineError
    from personamine.saes import read_sae_meta

    folder = write_saelens(tmp_path / "sae", "jumprelu", hook="blocks.5.hook_resid_post")
    config = json.loads((folder / "cfg.json").read_text())
    config["hook_layer"] = 5
    (folder / "cfg.json").write_text(json.dumps(config))
    assert read_sae_meta(str(folder)).hook.layer == 5  # agreeing sources: fine
    config["hook_layer"] = 6
    (folder / "cfg.json").write_text(json.dumps(config))
    with pytest.raises(PersonamineError, match=r"declares two layers: cfg.json hook_name says "
                                               r"blocks.5.hook_resid_post, but cfg.json hook_layer says 6;"):
        read_sae_meta(str(folder))


# ---------------------------------------------------------------- one run per output


HOLD_LOCK = """
import sys, time
from personamine.config import MineConfig
from personamine.jobs.workdir import WorkDir
work = WorkDir(MineConfig(output=sys.argv[1]))
work.lock()
(work.path / "units-000000-000000.json").write_text("a checkpoint of the other run")
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_on_the_same_output_exits_in_one_line(run_cli):
    """Another process (a run's driver) holds the work dir's lock: the second run stops at once, in one line, and
    touches nothing of the first's; once the holder is gone (killed: the OS releases the lock), a run proceeds."""
    import signal
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_cli.out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = run_cli()
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("personamine: error: another run is using the work dir") and \
            f"pid {holder.pid} on " in err[0] and "give this run another output or --work-dir" in err[0], err[0]
        assert sorted(p.name for p in run_cli.work.iterdir()) == ["lock", "units-000000-000000.json"]
        assert not run_cli.out.exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    (run_cli.work / "units-000000-000000.json").unlink()  # the killed run's checkpoint, not a real one
    code, err = run_cli()
    assert code == 0, err
    assert not run_cli.work.exists()



# ---------------------------------------------------------------- a full disk


def _cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, output, work_dir) -> list[str]:
    import sys

    return [sys.executable, "-m", "personamine.jobs.cli", "mine", "--no-progress", "--model", str(tiny_model_dir),
            "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir), "--corpus", str(tiny_corpus_jsonl), "--features",
            "0-255", "--ctx-len", "16", "--n-shards", "1", "--output", str(output), "--work-dir", str(work_dir)]


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "warning:" not in line]
    assert len(lines) == 1 and lines[0].startswith("personamine: error: "), stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    return lines[0]


def test_disk_full_during_the_final_write(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    """The output's directory is a 256 KiB tmpfs (mounted in a private mount namespace: `unshare -m`, as root) and
    the file is ~800 KB: the write fails with ENOSPC partway. One line, exit 2, no HDF5 noise, no segfault, nothing
    left on the full disk; the work dir (elsewhere) keeps its checkpoints, so the rerun to a disk with room only
    writes."""
    import shlex
    import shutil
    import subprocess

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("unshare -m (a private mount namespace) is not available here")
    full, work = tmp_path / "full", tmp_path / "work"
    full.mkdir()
    cli = shlex.join(_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, full / "out.h5", work))
    script = (f"mount -t tmpfs -o size=256k tmpfs {full} || exit 99; {cli}; code=$?; "
              f"echo left: $(ls -A {full}) >&2; exit $code")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    if done.returncode == 99:
        pytest.skip("cannot mount a tmpfs here")
    assert done.returncode == 2, done.stderr
    left = [line for line in done.stderr.splitlines() if line.startswith("left:")]
    assert left == ["left:"], done.stderr  # nothing partial on the full disk
    error = _one_error_line(done.stderr.replace(left[0], ""))
    assert error.startswith(f"personamine: error: cannot write '{full}/out.h5': No space left on device after "), error
    assert error.endswith(" bytes; the partial file was removed"), error
    assert sorted(p.name for p in work.glob("units-*")) == ["units-000000-000000.json", "units-000000-000000.npz"]
    again = subprocess.run(_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "out.h5", work),
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert personamine.read_results(tmp_path / "out.h5").feature_ids.size == 256


def _limited(limit: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


def test_a_file_size_limit_during_the_final_write(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    """The same through RLIMIT_FSIZE (EFBIG, no mount needed): the shards are mined and checkpointed first, then the
    resumed run, which only merges and writes, is limited to 300 KB per file."""
    import subprocess

    from ray_helpers import assert_identical_datasets

    work = tmp_path / "work"
    argv = _cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "first.h5", work)
    assert subprocess.run([*argv, "--keep-work-dir"], capture_output=True).returncode == 0
    limited = subprocess.run(_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "out.h5", work),
                             capture_output=True, text=True, preexec_fn=_limited(300_000))
    assert limited.returncode == 2, limited.stderr
    error = _one_error_line(limited.stderr)
    assert f"cannot write '{tmp_path / 'out.h5'}': File too large after " in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.h5", "work"]  # no out.h5, no temp file
    again = subprocess.run(_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "out.h5", work),
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert_identical_datasets(tmp_path / "first.h5", tmp_path / "out.h5")


def test_a_checkpoint_that_cannot_be_written_is_one_line(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    import subprocess

    work = tmp_path / "work"
    done = subprocess.run(_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path / "out.h5", work),
                          capture_output=True, text=True, preexec_fn=_limited(300_000))
    assert done.returncode == 2, done.stderr
    error = _one_error_line(done.stderr)
    assert f"cannot write '{work}/units-000000-000000.npz': File too large" in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint: the work dir is gone too


# ---------------------------------------------------------------- huge documents


@pytest.mark.parametrize("prefix, ctx_len, stride", [([1], 8, None), ([1, 2], 16, 3), ([], 6, 1), ([1], 9, 8),
                                                     ([5], 12, 6)])
def test_streamed_windows_are_the_windows_of_the_whole_document(prefix, ctx_len, stride):
    import numpy as np

    from personamine.shards.documents import stream_windows
    from personamine.shards.windows import Document, cut_windows

    rng = np.random.default_rng(0)
    for n in (0, 1, 5, ctx_len - len(prefix), ctx_len + 1, 97, 500):
        ids = rng.integers(10, 400, n).tolist()
        expected = list(cut_windows(Document(7, ids), prefix, ctx_len, stride))
        for _ in range(4):  # random cuts into pieces, empty pieces included
            cuts = np.sort(rng.integers(0, n + 1, rng.integers(0, 6)))
            pieces = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
            got = []
            stream = stream_windows(7, ((p, None) for p in pieces), prefix, ctx_len, stride)
            while True:
                try:
                    got.append(next(stream))
                except StopIteration as stop:
                    total = stop.value
                    break
            assert total == n
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                assert (a.document, a.start, a.score_from) == (b.document, b.start, b.score_from)
                np.testing.assert_array_equal(a.tokens, b.tokens)
                np.testing.assert_array_equal(a.roles, b.roles)


def test_split_text_cuts_where_whitespace_begins():
    from personamine.shards.documents import split_text

    text = "alpha beta  gamma\n\ndelta epsilon " * 50
    pieces = list(split_text(text, 40))
    assert "".join(pieces) == text and all(len(p) <= 40 for p in pieces)
    assert all(p[0].isspace() and not prev[-1].isspace() for prev, p in zip(pieces[:-1], pieces[1:], strict=True))
    assert list(split_text("x" * 100, 30)) == ["x" * 30] * 3 + ["x" * 10]  # no whitespace: cut at the size


def test_a_huge_document_is_tokenized_in_bounded_pieces_with_the_same_result(
        tiny_model_dir, tiny_sae_dir, tmp_path, monkeypatch):
    """A document 40 times the piece size (the piece shrunk to 2,000 characters so the test is small) is tokenized
    in pieces of at most that size, windowed as they come, counted in documents_chunked, and mines exactly what the
    whole-document path mines; its line (over a long line's limit, shrunk to 10,000 bytes) is streamed from the
    file, not read whole."""
    from fixtures import decoder_fit_texts
    from ray_helpers import assert_identical_datasets

    from personamine.corpus.readers import jsonl, lines
    from personamine.shards import documents

    corpus = tmp_path / "c.jsonl"
    huge = " ".join(decoder_fit_texts(300))[:80_000]
    corpus.write_text(json.dumps({"text": "A short one."}) + "\n" + json.dumps({"text": huge}) + "\n")
    kwargs = dict(model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
                  features=[1, 2, 3], ctx_len=32, stride=16, progress=False, preflight_tokens=0)
    whole = personamine.mine(**kwargs, output=str(tmp_path / "whole.h5"))
    longest = []
    real = documents.tokenize

    def recording(tokenizer, texts):
        longest.append(max(len(t) for t in texts))
        return real(tokenizer, texts)

    monkeypatch.setattr(documents, "LONG_TEXT_CHARS", 2000)
    monkeypatch.setattr(documents, "tokenize", recording)
    monkeypatch.setattr(lines, "LONG_LINE_BYTES", 10_000)
    monkeypatch.setattr(lines, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(jsonl, "SHORT_STRING_CHARS", 5000)  # the string too: decoded as it is tokenized
    streamed = []
    real_blocks = lines.LongLine.text_blocks

    def recording_blocks(line):
        streamed.append(line.size)
        return real_blocks(line)

    monkeypatch.setattr(lines.LongLine, "text_blocks", recording_blocks)
    shards = personamine.mine(**kwargs, output=str(tmp_path / "shards.h5"))
    assert max(longest) <= 2000 and len(longest) >= 40
    assert len(streamed) >= 2 and set(streamed) == {len(json.dumps({"text": huge}))}  # checked, then decoded
    res = personamine.read_results(shards)
    assert res.attrs["documents_chunked"] == 1 and personamine.read_results(whole).attrs["documents_chunked"] == 0
    assert_identical_datasets(whole, shards)


def test_an_error_quoting_a_multi_line_message_prints_one_line(capsys, monkeypatch):
    """HDF5's own error texts hold a newline (in their timestamp): the CLI's error is one line whatever it quotes."""
    from personamine.errors import PersonamineError
    from personamine.jobs import cli

    def fail(_args):
        raise PersonamineError("cannot open 'x.h5': file read failed: time = Sun Dec  6 18:01:30 2026\n, filename = x")

    monkeypatch.setitem(cli.COMMANDS, "show", cli.Command("", cli.COMMANDS["show"].build, fail))
    assert main(["show", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert err == "personamine: error: cannot open 'x.h5': file read failed: time = Sun Dec  6 18:01:30 2026 , " \
                  "filename = x\n"
