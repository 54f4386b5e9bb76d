"""`personamine submit` against a real head node started by the test (token auth, free ports, own session)."""

from __future__ import annotations

import io
import json

import pytest
import ray_helpers  # noqa: I001  (first: it configures Ray's token auth before anything imports ray)
from fixtures import mine_kwargs
from ray_helpers import actor_threads, assert_identical_datasets

import personamine
from personamine.errors import PersonamineError
from personamine.jobs.cli import main
from personamine.jobs.submit import follow, submit


@pytest.fixture(scope="module")
def head():
    # personamine_driver: the custom resource the shipped cluster configs give their head, to pin the driver there.
    with ray_helpers.ray_head(num_cpus=2, num_gpus=1, resources={"personamine_driver": 1}) as node:
        yield node


def write_job(path, **fields) -> str:
    """A job file; json.dumps of a str, int, bool or list of ints is also valid TOML."""
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
    return str(path)


def test_submit_wait_succeeds_and_writes_the_same_output(head, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                         tmp_path, capsys):
    fields = mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl, tmp_path, n_shards=3)
    job = write_job(tmp_path / "job.toml", **fields)
    assert main(["submit", job, "--address", head.dashboard_url, "--wait",
                 "--entrypoint-resources", '{"personamine_driver": 1}']) == 0
    out, err = capsys.readouterr()
    assert "submitted Ray job " in out and "wrote " + fields["output"] in out
    assert "SUCCEEDED" in err
    with actor_threads(1):
        local = personamine.mine(**dict(fields, output=str(tmp_path / "local.h5")))
    assert_identical_datasets(local, fields["output"])
    assert personamine.read_results(fields["output"]).attrs["n_shards"] == 3


def test_failing_job_exits_1_and_shows_the_error(head, tiny_model_dir, tiny_sae_dir, tmp_path, capsys):
    work = tmp_path / "work"
    (work / "jobs").mkdir(parents=True)
    job = write_job(work / "jobs" / "job.toml", **mine_kwargs(tiny_model_dir, str(tiny_sae_dir),
                                                             tmp_path / "no-such-corpus.jsonl", tmp_path))
    assert main(["submit", job, "--address", head.dashboard_url, "--wait", "--working-dir", str(work)]) == 1
    out, err = capsys.readouterr()
    assert "personamine: error:" in out and "no-such-corpus" in out  # the driver's own message, from its logs
    assert "FAILED" in err
    assert not (tmp_path / "out.h5").exists()
    job_id = out.split("submitted Ray job ", 1)[1].split(";", 1)[0]
    info = _client(head).get_job_info(job_id)
    assert info.entrypoint == "personamine mine jobs/job.toml --ray"


def test_submit_without_wait_prints_only_the_job_id(head, tiny_model_dir, tiny_sae_dir, tmp_path, capsys):
    job = write_job(tmp_path / "job.toml", **mine_kwargs(tiny_model_dir, str(tiny_sae_dir),
                                                        tmp_path / "no-such-corpus.jsonl", tmp_path))
    assert main(["submit", job, "--address", head.dashboard_url]) == 0
    job_id = capsys.readouterr().out.strip()
    assert job_id.startswith("raysubmit_") and "\n" not in job_id
    logs = io.StringIO()
    assert follow(_client(head), job_id, logs) == "FAILED"
    assert "no-such-corpus" in logs.getvalue()


def _client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(head.dashboard_url)


def test_bad_submissions_fail_before_reaching_a_cluster(tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl, tmp_path,
                                                        capsys):
    job = write_job(tmp_path / "job.toml", **mine_kwargs(tiny_model_dir, str(tiny_sae_dir), tiny_corpus_jsonl,
                                                        tmp_path))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PersonamineError, match="must be inside the working dir"):
        submit(job, "http://127.0.0.1:1", working_dir=tmp_path / "elsewhere")
    unreachable = f"http://127.0.0.1:{ray_helpers.free_port()}"
    assert main(["submit", job, "--address", unreachable]) == 2
    assert f"personamine: error: cannot reach the Ray Jobs API at '{unreachable}'" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text("sae = \n")
    assert main(["submit", str(tmp_path / "bad.toml"), "--address", unreachable]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    assert main(["submit", job, "--address", unreachable, "--entrypoint-resources", "[1]"]) == 2
    assert "must be a JSON object of numbers" in capsys.readouterr().err


def test_mining_on_a_cluster_is_as_quiet_as_a_local_run(head, tiny_model_dir, tiny_sae_dir, tiny_corpus_jsonl,
                                                        tmp_path):
    """No Ray banner, no actor output: the same lines as a local run. --verbose brings Ray's own lines back."""
    from fixtures import SAE_LAYER, personamine_cli

    args = ["mine", "--model", str(tiny_model_dir), "--layer", str(SAE_LAYER), "--sae", str(tiny_sae_dir),
            "--corpus", str(tiny_corpus_jsonl), "--features", "1,2,3", "--ctx-len", "16", "--no-progress",
            "--ray", head.gcs_address, "--num-actors", "1", "--actor-num-gpus", "0", "--actor-num-cpus", "1"]
    quiet = personamine_cli(*args, "--output", str(tmp_path / "ray.h5"))
    assert quiet.returncode == 0, quiet.stderr
    # What a local run prints (tests/jobs/test_cli.py): the output's path, and a count of the fixture's two bad rows.
    assert quiet.stdout == f"wrote {tmp_path / 'ray.h5'}\n", quiet.stdout
    assert quiet.stderr == ("personamine: warning: 2 of 62 rows skipped (1 with nothing in 'text', 1 not a string, 0 "
                            "malformed); counted in the output's rows_skipped / rows_malformed\n"), quiet.stderr
    loud = personamine_cli(*args, "--verbose", "--output", str(tmp_path / "loud.h5"))
    assert loud.returncode == 0 and "Connecting to existing Ray cluster" in loud.stderr, loud.stderr
