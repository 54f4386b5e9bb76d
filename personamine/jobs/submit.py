"""`personamine submit`: run a mining job on a Ray cluster through its Jobs API.

The job's entrypoint is ``personamine mine JOB.toml --ray``: the driver runs on the cluster (one CPU, never a GPU,
which the mining actors need), plans the shards, checkpoints each one and writes the HDF5 file there. The plain
Ray equivalent is::

    ray job submit --address http://HEAD:8265 --entrypoint-num-cpus 1 --working-dir . -- \\
        personamine mine job.toml --ray
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from personamine.config import MineConfig
from personamine.errors import PersonamineError


@dataclass(frozen=True)
class Submission:
    job_id: str
    status: str | None = None  # the final status with wait=True, e.g. "SUCCEEDED"; None without waiting

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def submit(job_toml: str | Path, address: str, *, wait: bool = False, working_dir: str | Path | None = None,
           pip: list[str] | None = None, output: str | None = None,
           entrypoint_resources: dict[str, float] | None = None, stream: TextIO | None = None) -> Submission:
    """Submit ``personamine mine JOB_TOML --ray`` as a Ray job to the cluster whose dashboard is at ``address``.

    ``working_dir``: a local dir uploaded as the job's working dir; ``job_toml`` must be inside it and relative
    paths in it resolve there on the cluster. Without it, only the TOML file is uploaded. ``pip``: requirements
    installed for the job (e.g. ``["personamine[ray]==0.1.0"]``) when the cluster's image lacks personamine.
    ``output``: overrides the TOML's output path; make it a path on the head (or shared storage), since a relative
    one lands inside the job's temporary working dir. ``entrypoint_resources``: custom resources the driver needs,
    e.g. ``{"personamine_driver": 1}`` to pin it to the head of the shipped ``cluster/`` configs (with any
    entrypoint resource, Ray may place the driver on any node that has it; without, on the head). With ``wait``,
    the job's logs are followed to ``stream`` (stdout by default) until it ends, and the final status is returned.
    """
    stream = stream or sys.stdout
    toml = Path(job_toml).resolve()
    config = MineConfig.from_toml(toml)  # fail here, not minutes later on the cluster
    if output is None and not Path(config.output).is_absolute():
        print(f"personamine: warning: output {config.output!r} is relative: it will be written inside the job's "
              "working dir on the head; pass output=/path (--output) to choose where", file=sys.stderr)
    root = Path(working_dir).resolve() if working_dir is not None else None
    if root is not None:
        if not root.is_dir():
            raise PersonamineError(f"working dir {str(working_dir)!r} is not a directory")
        if not toml.is_relative_to(root):
            raise PersonamineError(f"job file {str(job_toml)!r} must be inside the working dir {str(root)!r}, "
                                   "which is all the cluster sees")
    client = _client(address)
    with tempfile.TemporaryDirectory(prefix="personamine-submit-") as scratch:
        if root is not None:
            entry = toml.relative_to(root).as_posix()
        else:
            root = Path(scratch)
            shutil.copyfile(toml, root / toml.name)
            entry = toml.name
        runtime_env: dict = {"working_dir": str(root)}
        if pip:
            runtime_env["pip"] = list(pip)
        entrypoint = f"personamine mine {shlex.quote(entry)} --ray"
        if output is not None:
            entrypoint += f" --output {shlex.quote(output)}"
        try:
            # entrypoint_num_gpus stays unset: a GPU held by the driver is one no mining actor can use.
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, entrypoint_num_cpus=1,
                                       entrypoint_resources=entrypoint_resources or None)
        except (RuntimeError, ValueError, OSError) as exc:
            raise PersonamineError(f"Ray refused the job: {_one_line(exc)}") from exc
    if not wait:
        return Submission(job_id)
    stream.write(f"submitted Ray job {job_id}; following its logs\n")
    return Submission(job_id, follow(client, job_id, stream))


def follow(client, job_id: str, stream: TextIO) -> str:
    """Copy the job's logs to ``stream`` until it ends; return its final status."""
    try:
        asyncio.get_running_loop()
        in_event_loop = True  # a notebook: asyncio.run() is not allowed here, so poll instead
    except RuntimeError:
        in_event_loop = False
    if not in_event_loop:
        try:
            asyncio.run(_tail(client, job_id, stream))
        except RuntimeError as exc:  # the log stream broke; the job itself may be fine
            print(f"personamine: warning: lost the log stream ({_one_line(exc)}); polling", file=sys.stderr)
    return _poll(client, job_id, stream, echo=in_event_loop)


async def _tail(client, job_id: str, stream: TextIO) -> None:
    async for chunk in client.tail_job_logs(job_id):
        stream.write(chunk)
        stream.flush()


def _poll(client, job_id: str, stream: TextIO, echo: bool, interval: float = 2.0) -> str:
    printed = 0
    while True:
        status = client.get_job_status(job_id)
        if echo:
            logs = client.get_job_logs(job_id)
            stream.write(logs[printed:])
            stream.flush()
            printed = len(logs)
        if status.is_terminal():
            return str(status.value)
        time.sleep(interval)


def _client(address: str):
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:
        raise PersonamineError("submitting jobs needs Ray: pip install 'personamine[ray]'") from exc
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PersonamineError(f"cannot reach the Ray Jobs API at {address!r}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
