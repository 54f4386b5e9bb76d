"""Ray backend: N long-lived actors run the same ``run_shard`` as the local backend; the driver owns the queue.

The driver hands the next shard to whichever actor is free, checkpoints each result through ``on_result`` (so a
rerun of a killed driver resumes) and is the reducer. Actors read their shard straight from the corpus, so
documents never pass through the driver. ``max_task_retries=0``: Ray never replays a shard behind our back; a
shard whose actor died is requeued here, on a replacement actor, a bounded number of times.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from personamine.config import MineConfig
from personamine.errors import PersonamineError
from personamine.shards.plan import Shard
from personamine.shards.run import ShardResult

log = logging.getLogger(__name__)

# Test-only fault injection, read inside the actor. The driver forwards every PERSONAMINE_TEST_* variable of its
# own environment to its actors (runtime_env env_vars), so a test only sets os.environ before calling mine().
TEST_ENV_PREFIX = "PERSONAMINE_TEST_"
KILL_ONCE_ENV = "PERSONAMINE_TEST_KILL_ONCE"  # "/path/to/marker:SHARD_INDEX": SIGKILL the actor once, mid-shard
FAIL_SHARD_ENV = "PERSONAMINE_TEST_FAIL_SHARD"  # "SHARD_INDEX": that shard raises every time
BATCH_DELAY_ENV = "PERSONAMINE_TEST_BATCH_DELAY"  # seconds to sleep after each batch: keeps actors mid-shard

_WAIT_WARNING_S = 60.0


@dataclass(frozen=True)
class ActorSpec:
    count: int
    num_gpus: float
    num_cpus: float


def actor_spec(config: MineConfig, cluster: dict[str, float], n_shards: int) -> ActorSpec:
    """How many actors with which resources: by default one per GPU in the cluster, or one CPU actor without GPUs."""
    gpus = float(cluster.get("GPU", 0.0))
    num_gpus = config.actor_num_gpus if config.actor_num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if num_gpus < 0 or config.actor_num_cpus < 0:
        raise PersonamineError("actor_num_gpus and actor_num_cpus must not be negative")
    if config.num_actors is not None:
        if config.num_actors < 1:
            raise PersonamineError(f"num_actors must be at least 1, got {config.num_actors}")
        count = config.num_actors
    elif num_gpus > 0:
        count = max(1, int(gpus // num_gpus))
    else:
        count = 1
    # An actor without a shard would only load the model for nothing.
    return ActorSpec(min(count, n_shards), float(num_gpus), float(config.actor_num_cpus))


class ShardWorker:
    """One per actor: builds the engine (model, targeted encoder, corpus handle) once, then runs shards."""

    def __init__(self, config: MineConfig, features: np.ndarray) -> None:
        from personamine.shards.run import MiningEngine

        self.engine = MiningEngine(config, features)

    def ready(self) -> str:
        return str(self.engine.device)

    def run(self, shard: Shard) -> ShardResult:
        from personamine.shards.run import run_shard

        return run_shard(self.engine, shard, on_batch=_test_fault_hook(shard))


def _test_fault_hook(shard: Shard) -> Callable[[int], None] | None:
    """Test-only: after the shard's first batch, die by SIGKILL (once per marker file) or raise (every time)."""
    kill, fail = os.environ.get(KILL_ONCE_ENV), os.environ.get(FAIL_SHARD_ENV)
    delay = float(os.environ.get(BATCH_DELAY_ENV, 0))
    if not kill and not fail and not delay:
        return None

    def after_batch(_tokens: int) -> None:
        time.sleep(delay)
        if fail and int(fail) == shard.index:
            raise RuntimeError(f"injected failure in {shard.name} ({FAIL_SHARD_ENV})")
        if kill:
            marker, index = kill.rsplit(":", 1)
            if int(index) != shard.index:
                return
            try:  # O_EXCL: exactly one process ever creates the marker, so the kill happens once
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
            os.kill(os.getpid(), signal.SIGKILL)

    return after_batch


@cache
def _remote_worker():
    import ray

    return ray.remote(ShardWorker)


def _test_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(TEST_ENV_PREFIX)}


def _cause(exc: BaseException) -> str:
    """One line: the original exception of a failed task, or the last line of Ray's actor-death message."""
    import ray.exceptions

    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        text = f"{type(exc.cause).__name__}: {exc.cause}"
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = lines[-1] if lines else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def run_ray(config: MineConfig, features: np.ndarray, shards: list[Shard],
            on_result: Callable[[ShardResult], None], on_tokens: Callable[[int], None]) -> None:
    """Run ``shards`` on Ray actors; call ``on_result`` for each finished shard (in completion order).

    Unless Ray is already initialised, calls ``ray.init(address=config.ray_address)``; with no address Ray picks
    ``RAY_ADDRESS``, else a cluster ``ray start`` started on this machine, else a new local Ray. Only a connection
    made here is shut down here.
    """
    if not shards:
        return
    try:
        import ray
    except ImportError as exc:
        raise PersonamineError("the Ray backend needs Ray: pip install 'personamine[ray]'") from exc
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=config.ray_address or None)
        except ConnectionError as exc:
            raise PersonamineError(f"cannot connect to Ray at {config.ray_address!r}: {exc}") from exc
    try:
        _Driver(config, features, shards, on_result, on_tokens).run()
    finally:
        if started:
            ray.shutdown()


class _Driver:
    def __init__(self, config: MineConfig, features: np.ndarray, shards: list[Shard],
                 on_result: Callable[[ShardResult], None], on_tokens: Callable[[int], None]) -> None:
        import ray

        self.config, self.features = config, features
        self.on_result, self.on_tokens = on_result, on_tokens
        self.queue: deque[Shard] = deque(shards)
        self.failures: dict[int, int] = {}
        self.spec = actor_spec(config, ray.cluster_resources(), len(shards))
        self.idle: list[Any] = []
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor; no shard goes to an actor before it is up
        self.busy: dict[Any, tuple[Any, Shard]] = {}  # run() ref -> (actor, shard)
        self.n_tokens = 0
        self.lost_starting = 0

    def _spawn(self) -> None:
        options: dict[str, Any] = dict(num_gpus=self.spec.num_gpus, num_cpus=self.spec.num_cpus, max_restarts=0,
                                       max_task_retries=0, scheduling_strategy="SPREAD")
        if env := _test_env():
            options["runtime_env"] = {"env_vars": env}
        actor = _remote_worker().options(**options).remote(self.config, self.features)
        self.starting[actor.ready.remote()] = actor

    def run(self) -> None:
        import ray

        log.info("ray: %d actor(s), num_gpus=%g num_cpus=%g each, %d shard(s)", self.spec.count,
                 self.spec.num_gpus, self.spec.num_cpus, len(self.queue))
        began = time.perf_counter()
        try:
            for _ in range(self.spec.count):
                self._spawn()
            self._loop()
        finally:
            for actor in [*self.idle, *self.starting.values(), *(a for a, _ in self.busy.values())]:
                ray.kill(actor, no_restart=True)
        seconds = time.perf_counter() - began
        if self.config.progress:
            print(f"ray: {self.n_tokens:,} tokens in {seconds:.1f} s ({self.n_tokens / max(seconds, 1e-9):,.0f} "
                  f"tokens/s) on {self.spec.count} actor(s)", file=sys.stderr)

    def _loop(self) -> None:
        import ray

        waiting_since = time.monotonic()
        warned = False
        while self.queue or self.busy:
            while self.queue and self.idle:
                actor, shard = self.idle.pop(), self.queue.popleft()
                self.busy[actor.run.remote(shard)] = (actor, shard)
            done, _ = ray.wait([*self.busy, *self.starting], num_returns=1, timeout=_WAIT_WARNING_S / 4)
            if not done:
                if not self.busy and not warned and time.monotonic() - waiting_since > _WAIT_WARNING_S:
                    log.warning("ray: still waiting for a mining actor to start (each needs num_gpus=%g, "
                                "num_cpus=%g; cluster has %s)", self.spec.num_gpus, self.spec.num_cpus,
                                ray.cluster_resources())
                    warned = True
                continue
            waiting_since = time.monotonic()
            ref = done[0]
            if ref in self.starting:
                self._started(ref)
            else:
                self._finished(ref)

    def _started(self, ref: Any) -> None:
        import ray

        actor = self.starting.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            if exc.actor_init_failed:  # the engine could not be built: the same on any node, so stop
                raise PersonamineError(f"a Ray mining actor failed to start: {_cause(exc)}") from None
            self.lost_starting += 1
            # Same bound as for a shard, per actor slot: a node that keeps dying must not loop forever.
            if self.lost_starting > self.spec.count * (self.config.max_shard_retries + 1):
                raise PersonamineError(f"Ray mining actors died while starting {self.lost_starting} times; "
                                       f"last cause: {_cause(exc)}") from None
            log.warning("ray: an actor was lost while starting (%s); starting another", _cause(exc))
            self._spawn()
            return
        self.idle.append(actor)

    def _finished(self, ref: Any) -> None:
        import ray

        actor, shard = self.busy.pop(ref)
        try:
            result: ShardResult = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # a Python exception inside run_shard; the actor lives on
            if isinstance(exc.cause, PersonamineError):
                raise PersonamineError(f"{_where(shard)} failed: {exc.cause}") from None
            self.idle.append(actor)
            self._requeue(shard, _cause(exc))
            return
        except ray.exceptions.RayError as exc:  # actor died (killed, OOM, node lost) or its result was lost
            ray.kill(actor, no_restart=True)
            self._spawn()
            self._requeue(shard, _cause(exc))
            return
        self.idle.append(actor)
        self.n_tokens += result.stats.counters["tokens_fed"]
        self.on_tokens(result.stats.counters["tokens_fed"])
        self.on_result(result)

    def _requeue(self, shard: Shard, cause: str) -> None:
        n = self.failures[shard.index] = self.failures.get(shard.index, 0) + 1
        if n > self.config.max_shard_retries:
            raise PersonamineError(f"{_where(shard)} failed {n} time(s), giving up (max_shard_retries="
                                   f"{self.config.max_shard_retries}); last cause: {cause}")
        log.warning("ray: %s failed (attempt %d), requeued: %s", _where(shard), n, cause)
        self.queue.appendleft(shard)


def _where(shard: Shard) -> str:
    return f"{shard.name} (documents {shard.doc_start}-{shard.doc_end - 1})"
