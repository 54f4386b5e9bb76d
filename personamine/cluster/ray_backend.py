"""Ray backend: N long-lived actors run the same per-shard function as the local backend (the task's: mining's
``run_shard``, screening's ``run_screen_shard``); the driver owns the schedule.

The driver hands the schedule's next shard of work to whichever actor is free, checkpoints each result through
``on_result`` (so a rerun of a killed driver resumes) and is the reducer. Actors read their units straight from the
corpus (a shard names its units' files and offsets), so documents never pass through the driver. Actors are started
before the corpus is planned, so their model loading overlaps the planning. ``max_task_retries=0``: Ray never
replays a shard behind our back; a shard whose actor died is requeued here, on a replacement actor, a bounded number
of times.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from personamine.cluster.backend import Backend
from personamine.cluster.tasks import ShardTask
from personamine.config import MineConfig, ScreenConfig
from personamine.errors import PersonamineError
from personamine.shards.plan import Schedule, Shard
from personamine.shards.readouts import ReadoutSpec
from personamine.verbosity import ENV, verbose

log = logging.getLogger(__name__)

# Test-only fault injection, read inside the actor. The driver forwards every PERSONAMINE_TEST_* variable of its
# own environment to its actors (runtime_env env_vars), so a test only sets os.environ before calling mine().
TEST_ENV_PREFIX = "PERSONAMINE_TEST_"
KILL_ONCE_ENV = "PERSONAMINE_TEST_KILL_ONCE"  # "/path/to/marker:UNIT": SIGKILL the actor once, mid-shard
FAIL_UNIT_ENV = "PERSONAMINE_TEST_FAIL_UNIT"  # "UNIT": the shard that starts with that unit raises every time
BATCH_DELAY_ENV = "PERSONAMINE_TEST_BATCH_DELAY"  # seconds to sleep after each batch: keeps actors mid-shard
# "/marker/dir;UNIT@BATCH,UNIT@BATCH,...": SIGKILL the actor running the shard that starts with UNIT after its
# BATCH-th batch, once per entry (a marker file in the dir), whichever actor and driver runs it: a seeded chaos run
KILL_PLAN_ENV = "PERSONAMINE_TEST_KILL_PLAN"

_WAIT_WARNING_S = 60.0  # no actor placed after this long: say what one needs and what the cluster has
_SLOW_START_S = 300.0  # placed actors still loading after this long


@dataclass(frozen=True)
class ActorSpec:
    count: int
    num_gpus: float
    num_cpus: float


def actor_spec(config: MineConfig | ScreenConfig, cluster: dict[str, float], n_shards: int) -> ActorSpec:
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
    """One per actor: builds the task's engine (model, targeted encoder) once, then runs shards."""

    def __init__(self, task: ShardTask) -> None:
        self.task = task
        self.engine = task.engine()

    def ready(self) -> str:
        return self.task.device(self.engine)

    def run(self, shard: Shard) -> Any:
        return self.task.run(self.engine, shard, _test_fault_hook(shard))

    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float):
        return self.task.preflight(self.engine, shards, n_tokens, min_fve)


def _kill_once(marker: str) -> None:
    try:  # O_EXCL: exactly one process ever creates the marker, so the kill happens once
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _test_fault_hook(shard: Shard) -> Callable[[int, int, int], None] | None:
    """Test-only: after the shard's first batch, die by SIGKILL (once per marker file) or raise (every time); or
    die after the batch a kill plan names."""
    kill, fail = os.environ.get(KILL_ONCE_ENV), os.environ.get(FAIL_UNIT_ENV)
    delay = float(os.environ.get(BATCH_DELAY_ENV, 0))
    plan = os.environ.get(KILL_PLAN_ENV)
    if not kill and not fail and not delay and not plan:
        return None
    first = shard.units[0].index
    kills: dict[int, str] = {}  # batch number -> marker
    if plan:
        where, entries = plan.split(";", 1)
        for entry in filter(None, entries.split(",")):
            unit, batch = (int(x) for x in entry.split("@"))
            if unit == first:
                kills[batch] = os.path.join(where, f"kill-{unit}@{batch}")
    batches = 0

    def after_batch(*_counts: int) -> None:
        nonlocal batches
        batches += 1
        time.sleep(delay)
        if batches in kills:
            _kill_once(kills[batches])
        if fail and int(fail) == first:
            raise RuntimeError(f"injected failure in {shard.name} ({FAIL_UNIT_ENV})")
        if kill:
            marker, index = kill.rsplit(":", 1)
            if int(index) == first:
                _kill_once(marker)

    return after_batch


@cache
def _remote_worker():
    import ray

    return ray.remote(ShardWorker)


def _actor_env() -> dict[str, str]:
    """What an actor inherits from the driver's environment wherever it runs: --verbose, and test-only faults."""
    return {k: v for k, v in os.environ.items() if k.startswith(TEST_ENV_PREFIX) or k == ENV}


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


class RayBackend(Backend):
    """Mining actors on a Ray cluster: ``start`` connects and starts them (their model loading overlaps the driver's
    corpus planning), ``run`` hands out a schedule's shards, ``close`` ends the actors (and a connection made here).

    Unless Ray is already initialised, ``start`` calls ``ray.init(address=config.ray_address)``; with no address Ray
    picks ``RAY_ADDRESS``, else a cluster ``ray start`` started on this machine, else a new local Ray. Only a
    connection made here is shut down here.
    """

    def __init__(self, config: MineConfig | ScreenConfig, readouts: list[ReadoutSpec] | None = None,
                 task: ShardTask | None = None) -> None:
        super().__init__(config, readouts, task)
        self.connected = False
        self.driver: _Driver | None = None

    def start(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise PersonamineError("the Ray backend needs Ray: pip install 'personamine[ray]'") from exc
        if not ray.is_initialized():
            loud = verbose()  # quiet as a local run: no Ray banner, and actors' own output only with --verbose
            try:
                ray.init(address=self.config.ray_address or None, logging_level=logging.INFO if loud else logging.ERROR,
                         log_to_driver=loud)
            except ConnectionError as exc:
                raise PersonamineError(f"cannot connect to Ray at {self.config.ray_address!r}: {exc}") from exc
            self.connected = True
        self.driver = _Driver(self.config, self.task)
        self.driver.spawn_all()

    def run(self, schedule: Schedule, on_result: Callable[[Any], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        assert self.driver is not None, "start() first"
        self.driver.run(schedule, on_result, on_batch)

    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float):
        """The SAE's pre-flight check, run by the first actor that is up (the driver never loads the model)."""
        assert self.driver is not None, "start() first"
        return self.driver.preflight(shards, n_tokens, min_fve)

    def close(self) -> None:
        import ray

        if self.driver is not None:
            self.driver.kill_all()
            self.driver = None
        if self.connected:
            ray.shutdown()
            self.connected = False


class _Driver:
    def __init__(self, config: MineConfig | ScreenConfig, task: ShardTask) -> None:
        import ray

        self.config, self.task = config, task
        self.failures: dict[str, int] = {}
        self.spec = actor_spec(config, ray.cluster_resources(), 1 << 30)
        self.idle: list[Any] = []
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor; no shard goes to an actor before it is up
        self.busy: dict[Any, tuple[Any, Shard]] = {}  # run() ref -> (actor, shard)
        self.n_tokens = 0
        self.lost_starting = 0
        self.began = time.perf_counter()

    def _spawn(self) -> None:
        options: dict[str, Any] = dict(num_gpus=self.spec.num_gpus, num_cpus=self.spec.num_cpus, max_restarts=0,
                                       max_task_retries=0, scheduling_strategy="SPREAD")
        if env := _actor_env():
            options["runtime_env"] = {"env_vars": env}
        actor = _remote_worker().options(**options).remote(self.task)
        self.starting[actor.ready.remote()] = actor

    def spawn_all(self) -> None:
        for _ in range(self.spec.count):
            self._spawn()

    def kill_all(self) -> None:
        import ray

        for actor in [*self.idle, *self.starting.values(), *(a for a, _ in self.busy.values())]:
            ray.kill(actor, no_restart=True)
        self.idle, self.starting, self.busy = [], {}, {}

    def preflight(self, shards: list[Shard], n_tokens: int, min_fve: float):
        import ray

        while not self.idle:
            done, _ = ray.wait(list(self.starting), num_returns=1)
            self._started(done[0])
        try:
            return ray.get(self.idle[0].preflight.remote(shards, n_tokens, min_fve))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PersonamineError):
                raise PersonamineError(str(exc.cause)) from None
            raise

    def run(self, schedule: Schedule, on_result: Callable[[Any], None],
            on_batch: Callable[[int, int, int], None]) -> None:
        self.schedule, self.on_result, self.on_batch = schedule, on_result, on_batch
        # An actor without a unit would only hold resources: the corpus may have fewer units than actors.
        surplus = len(self.starting) + len(self.idle) - len(schedule.manifest)
        for ref in list(self.starting)[:max(0, surplus)]:
            import ray

            ray.kill(self.starting.pop(ref), no_restart=True)
        log.info("ray: %d actor(s), num_gpus=%g num_cpus=%g each, %d unit(s)",
                 len(self.starting) + len(self.idle) + len(self.busy), self.spec.num_gpus, self.spec.num_cpus,
                 len(schedule.manifest))
        self._loop()
        seconds = time.perf_counter() - self.began
        if self.config.progress:
            print(f"ray: {self.n_tokens:,} tokens in {seconds:.1f} s ({self.n_tokens / max(seconds, 1e-9):,.0f} "
                  f"tokens/s) on {self.spec.count} actor(s)", file=sys.stderr)

    def _loop(self) -> None:
        import ray

        waiting_since = time.monotonic()
        warned = False
        while not self.schedule.finished():
            while self.idle and (shard := self.schedule.next()) is not None:
                actor = self.idle.pop()
                self.busy[actor.run.remote(shard)] = (actor, shard)
            if not self.busy and not self.starting:
                raise RuntimeError("the schedule is not finished but has no shard to run")
            done, _ = ray.wait([*self.busy, *self.starting], num_returns=1, timeout=_WAIT_WARNING_S / 4)
            if not done:
                waited = time.monotonic() - waiting_since
                if not self.busy and not warned and waited > _WAIT_WARNING_S:
                    cluster = ray.cluster_resources()
                    fits = cluster.get("GPU", 0.0) >= self.spec.num_gpus and \
                        cluster.get("CPU", 0.0) >= self.spec.num_cpus
                    # An actor the cluster can hold is placed and loading its model: say so only when slow.
                    if not fits:
                        log.warning("ray: still waiting for a mining actor to start (each needs num_gpus=%g, "
                                    "num_cpus=%g; cluster has %s)", self.spec.num_gpus, self.spec.num_cpus,
                                    cluster)
                        warned = True
                    elif waited > _SLOW_START_S:
                        log.warning("ray: no mining actor has started after %.0f s (each loads the model and SAE: "
                                    "is the model downloading on every node?)", waited)
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
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # a Python exception inside run_shard; the actor lives on
            if isinstance(exc.cause, PersonamineError):
                raise PersonamineError(f"{shard.describe()} failed: {exc.cause}") from None
            self.idle.append(actor)
            self._requeue(shard, _cause(exc))
            return
        except ray.exceptions.RayError as exc:  # actor died (killed, OOM, node lost) or its result was lost
            ray.kill(actor, no_restart=True)
            self._spawn()
            self._requeue(shard, _cause(exc))
            return
        self.idle.append(actor)
        counts = self.task.counts(result)
        self.n_tokens += counts[0]
        self.on_batch(*counts)
        self.on_result(result)

    def _requeue(self, shard: Shard, cause: str) -> None:
        n = self.failures[shard.name] = self.failures.get(shard.name, 0) + 1
        self.schedule.requeue(shard)
        if n > self.config.max_shard_retries:
            raise PersonamineError(f"{shard.describe()} failed {n} time(s), giving up (max_shard_retries="
                                   f"{self.config.max_shard_retries}); last cause: {cause}")
        log.warning("ray: %s failed (attempt %d), requeued: %s", shard.describe(), n, cause)
