"""Each bad input: a clear one-line error, a non-zero exit, and no output file."""

from __future__ import annotations

import json

import pytest
from fixtures import SAE_LAYER, TINY_NUM_LAYERS, make_sae_release

from personamine.jobs.cli import main


@pytest.fixture()
def run_cli(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path, capsys):
    out = tmp_path / "out.h5"

    def run(**changes):
        args = {"model": str(tiny_model_dir), "layer": str(SAE_LAYER), "sae": str(tiny_sae_dir),
                "corpus": str(tiny_corpus_jsonl), "features": "1,2,3", "ctx-len": "16", "output": str(out)}
        args.update({k: str(v) for k, v in changes.items()})
        argv = ["mine", "--no-progress"] + [x for k, v in args.items() for x in (f"--{k}", v)]
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        return code, err

    run.out = out
    return run


def assert_clean_failure(run, fragment, **changes):
    code, err = run(**changes)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("personamine: error: "), err
    assert fragment in err[0], err[0]
    assert not run.out.exists()
    assert not list(run.out.parent.glob("*.h5*tmp*"))


def test_layer_out_of_range(run_cli):
    assert_clean_failure(run_cli, f"layer {TINY_NUM_LAYERS} is out of range", layer=TINY_NUM_LAYERS)
    assert_clean_failure(run_cli, "layer -1 is out of range", layer=-1)


def test_sae_width_mismatch(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "wide", layer=SAE_LAYER, activation_dim=32, dict_size=64, k=4,
                           threshold=0.1, seed=0)
    assert_clean_failure(run_cli, "has width 32, but the model's hidden size is 64", sae=sae)


def test_sae_trained_on_another_layer(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "l1", layer=1, activation_dim=64, dict_size=64, k=4, threshold=0.1, seed=0)
    assert_clean_failure(run_cli, "was trained on resid_post_layer_1 (the output of decoder layer 1", sae=sae)


def test_uncalibrated_sae(run_cli, tmp_path):
    sae = make_sae_release(tmp_path / "raw", layer=SAE_LAYER, activation_dim=64, dict_size=64, k=4,
                           threshold=-1.0, seed=0)
    assert_clean_failure(run_cli, "never calibrated", sae=sae)


def test_feature_out_of_range(run_cli):
    assert_clean_failure(run_cli, "feature id 256 is out of range: the SAE has 256 features", features="3,256")


def test_empty_corpus(run_cli, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = run_cli(corpus=empty)
    assert code == 2 and len(err) == 1 and not run_cli.out.exists()
    assert "empty" in err[0] or "cannot read corpus" in err[0]


def test_missing_text_column(run_cli, tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": f"hello {i}"}) for i in range(3)))
    assert_clean_failure(run_cli, "has no column 'text' (columns: body)", corpus=corpus)


@pytest.mark.parametrize("what", ["model", "sae", "corpus"])
def test_unreadable_paths(run_cli, tmp_path, what):
    assert_clean_failure(run_cli, "does not exist", **{what: tmp_path / "nope" / "missing"})


def test_unreadable_file(run_cli, tmp_path):
    bad = tmp_path / "ae.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_clean_failure(run_cli, "cannot read SAE file", sae=bad)


# ---------------------------------------------------------------- degenerate corpora (mine, through the CLI)


@pytest.mark.parametrize("content, fragment", [
    ("", "has no documents"),
    ("\n\n\n", "has no documents"),
    ('{"text": null}\n{"text": 5}\n{"text": ""}\n', "every one of the 3 rows of corpus"),
    ('{"text": "fine"}\n{"text": "broken\n{"text": "fine"}\n', "c.jsonl' line 2 is not a JSON object"),
])
def test_degenerate_corpora(run_cli, tmp_path, content, fragment):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(content)
    assert_clean_failure(run_cli, fragment, corpus=corpus)


def test_malformed_rows_may_be_skipped_and_counted(tiny_model_dir, tiny_sae_dir, tmp_path):
    import personamine

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "I think the cat is sleeping."}\n{"text": oops}\n{"text": null}\n'
                      '{"text": "The cat and the bat became friends."}\n')
    with pytest.warns(UserWarning, match="2 of 4 rows skipped"):
        res = personamine.read_results(personamine.mine(
            model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
            features=[1, 2, 3], ctx_len=16, output=str(tmp_path / "out.h5"), skip_malformed_rows=True,
            progress=False))
    assert res.attrs["rows_malformed"] == 1 and res.attrs["rows_skipped"] == 1 and res.attrs["n_documents"] == 4


GOOD_TURNS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am a model."}]


@pytest.mark.parametrize("row, fragment", [
    ({"messages": "just text"}, "c.jsonl', unit 0 row 1: the conversation is not a non-empty list of turns"),
    ({"messages": [{"role": "user"}]}, "unit 0 row 1: the conversation turn 0 has no content"),
    ({"messages": [{"content": "hi"}]}, "unit 0 row 1: the conversation turn 0 has no role"),
    ({"messages": [{"role": "narrator", "content": "hi"}]}, "turn 0 has an unknown role 'narrator'"),
])
def test_bad_conversations_name_the_row(run_cli, tmp_path, row, fragment):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"messages": GOOD_TURNS}) + "\n" + json.dumps(row) + "\n")
    assert_clean_failure(run_cli, fragment, corpus=corpus, **{"messages-column": "messages"})


def test_bad_conversations_may_be_skipped_and_counted(tiny_model_dir, tiny_sae_dir, tmp_path):
    import personamine

    corpus = tmp_path / "c.jsonl"
    rows = [{"messages": GOOD_TURNS}, {"messages": [{"role": "narrator", "content": "hi"}]}, {"messages": None},
            {"messages": GOOD_TURNS[::-1]}]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match="2 of 4 rows skipped \\(1 with nothing in 'messages', 1 malformed\\)"):
        res = personamine.read_results(personamine.mine(
            model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus),
            messages_column="messages", features=[1, 2, 3], ctx_len=32, output=str(tmp_path / "out.h5"),
            skip_malformed_rows=True, progress=False))
    assert res.attrs["rows_malformed"] == 1 and res.attrs["rows_skipped"] == 1 and res.attrs["n_documents"] == 4


def test_a_conversation_corpus_needs_a_chat_template(run_cli, tiny_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"messages": GOOD_TURNS}) + "\n")
    assert_clean_failure(run_cli, "has no chat template, which a conversation corpus needs", corpus=corpus,
                         model=model, **{"messages-column": "messages"})


def test_score_roles_the_corpus_never_has_warn_with_the_roles_found(tiny_model_dir, tiny_sae_dir,
                                                                       tiny_corpus_jsonl, tmp_path):
    import personamine

    with pytest.warns(UserWarning, match=r"score_roles names assistant, which no token of the corpus has \(nothing "
                                         r"was scored\); the corpus has text \([0-9,]+ tokens\)"):
        res = personamine.read_results(personamine.mine(
            model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(tiny_corpus_jsonl),
            features=[1, 2], ctx_len=16, score_roles=["assistant"], output=str(tmp_path / "out.h5"),
            progress=False, preflight_tokens=0))
    assert res.tokens_scored == 0 and res.tokens_seen_by_role[0] > 0


def test_a_conversation_past_the_models_context_is_windowed_not_truncated(tiny_model_dir, tiny_sae_dir, tmp_path):
    """Every content token of a conversation longer than the model's 2,048 positions is scored exactly once."""
    from fixtures import SENTENCES, TINY_MAX_POSITIONS
    from transformers import AutoTokenizer

    import personamine
    from personamine.corpus.conversations import ChatRenderer, parse_turns
    from personamine.roles import ROLE

    turns = [{"role": ("user", "assistant")[t % 2], "content": " ".join(SENTENCES[(t * 3) % 40: (t * 3) % 40 + 3])}
             for t in range(120)]
    rendered = ChatRenderer(AutoTokenizer.from_pretrained(tiny_model_dir), date_string="26 Jul 2024").render(
        parse_turns(turns))
    assert len(rendered.ids) > TINY_MAX_POSITIONS
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"messages": turns}) + "\n")
    res = personamine.read_results(personamine.mine(
        model=str(tiny_model_dir), layer=SAE_LAYER, sae=str(tiny_sae_dir), corpus=str(corpus), features=[1, 2],
        messages_column="messages", ctx_len=512, stride=256, norm_filter=0, output=str(tmp_path / "out.h5"),
        progress=False, preflight_tokens=0))
    special = set(AutoTokenizer.from_pretrained(tiny_model_dir).all_special_ids)
    for role in ("user", "assistant"):
        content = sum(1 for i, r in zip(rendered.ids, rendered.roles.tolist(), strict=True)
                      if r == ROLE[role] and i not in special)
        assert res.tokens_scored_by_role[ROLE[role]] == content > 0


def test_non_utf8_corpus_names_the_byte(run_cli, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"I think so.\nYou \xe9 feel tired.\n")
    assert_clean_failure(run_cli, "is not UTF-8: invalid continuation byte at byte 16 (line 2)", corpus=corpus)


# ---------------------------------------------------------------- output locations: checked before any heavy work


def test_output_under_a_regular_file(run_cli, tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    code, err = run_cli(output=blocker / "sub" / "out.h5")
    assert code == 2 and len(err) == 1 and f"'{blocker}' is a file, not a directory" in err[0]


def _immutable(path):
    import shutil
    import subprocess

    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE on ext2/3/4)")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("where", ["output", "work-dir"])
def test_a_directory_that_cannot_be_written(run_cli, tmp_path, where):
    # As root, permission bits do not stop a write; an immutable directory does, with EPERM.
    locked = tmp_path / "locked"
    locked.mkdir()
    release = _immutable(locked)
    try:
        target = locked / ("out.h5" if where == "output" else "work")
        code, err = run_cli(**{where: target})
    finally:
        release()
    named = f"the output directory '{locked}'" if where == "output" else f"the work dir '{target}'"
    assert code == 2 and len(err) == 1 and named in err[0] and err[0].endswith("Operation not permitted"), err
    assert list(locked.iterdir()) == []


def test_a_read_only_filesystem(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path):
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("unshare -m (a private mount namespace) is not available here")
    ro = tmp_path / "ro"
    ro.mkdir()
    cli = (f"{sys.executable} -m personamine.jobs.cli mine --no-progress --model {tiny_model_dir} --layer "
           f"{SAE_LAYER} --sae {tiny_sae_dir} --corpus {tiny_corpus_jsonl} --features 1,2 --output {ro}/out.h5")
    script = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && {cli}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and err[-1].startswith("personamine: error: cannot write to the output directory")
    assert "Read-only file system" in err[-1], err
    assert list(ro.iterdir()) == []
