"""Real Ray for tests, started and ended safely on a shared machine (`ray stop` would end every Ray on it).

Import this module before anything imports ``ray``: token auth is configured from the environment when Ray is
imported. Every Ray started here lives under its own short temp dir, which also names it: ``leftover_processes``
finds anything of ours still running by that dir, and nothing here ever runs ``ray stop`` (it kills every Ray on
the machine, other people's included).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.pop("RAY_ADDRESS", None)  # else ray.init() would join whatever cluster the shell points at
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

VENV_BIN = Path(sys.executable).parent
_WORKER_PORTS = range(10002, 20000)  # Ray's default worker port range: never hand these out


def free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _WORKER_PORTS:
            return port


def short_temp_dir() -> Path:
    """Unix socket paths under Ray's session dir must stay below ~107 characters."""
    return Path(tempfile.mkdtemp(prefix="pmray-", dir="/tmp"))


def leftover_processes(marker: str | Path) -> list[tuple[int, str]]:
    """Processes whose command line mentions ``marker`` (our temp dir): Ray passes it to every daemon."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(marker) in cmdline:
            found.append((int(entry.name), cmdline[:200]))
    return found


def _kill_leftovers(marker: Path) -> list[tuple[int, str]]:
    left = leftover_processes(marker)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


@contextlib.contextmanager
def local_ray(**init_kwargs) -> Iterator[Path]:
    """``ray.init(**init_kwargs)`` in this process under a private temp dir; shut down and checked on exit."""
    import ray

    temp = short_temp_dir()
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)  # inherited by Ray's daemons only (tempfile here has cached its dir)
    try:
        ray.init(include_dashboard=False, _temp_dir=str(temp / "r"), **init_kwargs)
    finally:
        _restore("TMPDIR", old_tmpdir)
    try:
        yield temp
    finally:
        ray.shutdown()
        left = _wait_gone(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


@dataclass
class Head:
    dashboard_url: str
    gcs_address: str
    temp_dir: Path
    process: subprocess.Popen


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, num_gpus: int = 1, resources: dict[str, float] | None = None,
             timeout: float = 180.0) -> Iterator[Head]:
    """A real head node: ``ray start --head --block`` in its own session, ended through its process group."""
    temp = short_temp_dir()
    port, dash, client, agent = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, TMPDIR=str(temp), PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}",
           f"--num-gpus={num_gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp / 'r'}", "--disable-usage-stats"]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    log = open(temp / "head.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}", temp, proc)
    try:
        _wait_for_jobs_api(head, timeout)
        yield head
    finally:
        _end_process_group(proc)
        log.close()
        left = _wait_gone(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


def _wait_for_jobs_api(head: Head, timeout: float) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}: "
                               f"{(head.temp_dir / 'head.log').read_text()[-2000:]}")
        try:
            JobSubmissionClient(head.dashboard_url).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _end_process_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_gone(marker: Path, timeout: float = 20.0) -> list[tuple[int, str]]:
    """Give Ray's daemons a moment to exit, then SIGKILL (by pid) any of ours still there and report them."""
    deadline = time.monotonic() + timeout
    while leftover_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _kill_leftovers(marker)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def hdf5_datasets(path: str | Path) -> dict[str, bytes]:
    """Every dataset of an HDF5 file as bytes, to compare two outputs for exact identity."""
    out: dict[str, bytes] = {}

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            out[name] = repr(value.tolist()).encode() if value.dtype == object else np.ascontiguousarray(
                value).tobytes()

    with h5py.File(path) as f:
        f.visititems(visit)
    return out


@contextlib.contextmanager
def actor_threads(n: int = 1):
    """Run a local reference with the torch thread count of an ``actor_num_cpus=n`` actor: on some CPUs (MKL with
    AVX-512) the thread count moves the last bit of a few matmul results, and the README promises identical files
    only for equal thread counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def assert_identical_datasets(a: str | Path, b: str | Path) -> None:
    da, db = hdf5_datasets(a), hdf5_datasets(b)
    assert da.keys() == db.keys() and len(da) > 10
    assert [k for k in da if da[k] != db[k]] == []


@contextlib.contextmanager
def simulated_cluster(n_workers: int, connect: bool) -> Iterator[tuple[Any, list, Path]]:
    """A multi-node Ray on this machine (``ray.cluster_utils.Cluster``): a CPU-less head (only a driver connects
    there) and ``n_workers`` worker nodes with one CPU each, under a private short temp dir. ``connect``: this
    process is the driver (TMPDIR is restored once connected); else the nodes are only waited for, and TMPDIR stays
    pointed at the cluster while it runs, so a driver started in a subprocess finds it. Yields (cluster, worker
    nodes, temp dir); on exit every Ray process it started is gone, or the exit fails naming what is left."""
    import ray
    from ray.cluster_utils import Cluster

    temp = short_temp_dir()
    (temp / "ray").mkdir()  # Cluster records its address in $TMPDIR/ray, kept private here
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(temp)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False,
                                                                    temp_dir=str(temp / "r")))
        workers = [cluster.add_node(num_cpus=1) for _ in range(n_workers)]
        if connect:
            cluster.connect()
            _restore("TMPDIR", old)
        else:
            cluster.wait_for_nodes()
        yield cluster, workers, temp
    finally:
        _restore("TMPDIR", old)
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        left = _wait_gone(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"
