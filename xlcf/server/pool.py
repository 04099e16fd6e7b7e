"""A small pool of worker processes that ``xlcf serve`` runs every fit-like call in.

Why processes the server owns (not threads, not ``concurrent.futures``): a fit that overruns the time cap must
be *stopped*, and only a process can be killed from outside; the server's event loop meanwhile keeps answering
the cheap calls (meta routes, ``CF_RMSE``, ``CF_PREDICT``, ``GET /``) without waiting behind a fit.

- ``size`` workers, started at once and warmed up (:mod:`xlcf.server.worker`);
- admission: at most ``size + queue_limit`` jobs at a time; beyond that :class:`PoolBusy` (the app answers 503
  with ``Retry-After``: within one time cap at least one running job ends);
- a job runs under ``time_limit`` seconds from the moment a worker takes it; a worker that overruns it, dies or
  breaks its pipe is killed and replaced, and the job ends with :class:`PoolTimeout` / :class:`WorkerFailed`;
- :meth:`WorkerPool.close` terminates every worker (server shutdown, SIGTERM): blocked jobs end at once.

Methods block (the app calls them in threads); admission (:meth:`admit`) never blocks.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from xlcf.server.worker import WorkerConfig, serve

logger = logging.getLogger("xlcf.server")

RESTART_BACKOFF = 5.0  # seconds before a worker that failed to start is tried again


class PoolBusy(Exception):
    """Too many jobs admitted; ``retry_after`` seconds is when a slot is sure to have freed."""

    def __init__(self, retry_after: int):
        super().__init__("busy")
        self.retry_after = retry_after


class PoolTimeout(Exception):
    """The job ran past the time cap; its worker was killed."""


class WorkerFailed(Exception):
    """No worker could run the job (it died, did not start, or the server is stopping). The message is one line
    for the client."""


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess | None = None  # set by the thread that starts it
    conn: Connection | None = None
    started: float = field(default_factory=time.monotonic)
    pid: int | None = None


@dataclass(frozen=True)
class PoolStatus:
    size: int
    ready: int
    busy: int
    starting: int
    queued: int


class WorkerPool:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        size: int = 1,
        queue_limit: int = 8,
        time_limit: float = 25.0,
        start_timeout: float = 180.0,
    ):
        if size < 1 or queue_limit < 0:
            raise ValueError("size must be >= 1 and queue_limit >= 0")
        self.config = config
        self.size = size
        self.queue_limit = queue_limit
        self.time_limit = time_limit
        self.start_timeout = start_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting: set[_Worker] = set()
        self._admitted = 0
        self._closing = False
        self._last_start_failure = -math.inf

    # ------------------------------------------------------------------------------------------------ life

    def start(self) -> None:
        """Start the workers; returns at once (they warm up in the background)."""
        with self._cond:
            while self._live() < self.size:
                self._spawn_locked()

    def _live(self) -> int:
        return len(self._idle) + len(self._busy) + len(self._starting)

    def _spawn_locked(self) -> None:
        """Count a new worker in and start it in a thread (starting a process takes a while: never under the
        lock, never in a job's way)."""
        worker = _Worker()
        self._starting.add(worker)
        threading.Thread(target=self._start, args=(worker,), daemon=True, name="xlcf-serve-worker-start").start()

    def _start(self, worker: _Worker) -> None:
        message = None
        try:
            parent, child = self._ctx.Pipe()
            process = self._ctx.Process(target=serve, args=(child, self.config), daemon=True, name="xlcf-serve-worker")
            process.start()
            child.close()
            with self._cond:
                worker.process, worker.conn = process, parent
                closing = self._closing
            if not closing and parent.poll(self.start_timeout):
                message = parent.recv()
        except (EOFError, OSError):
            message = None
        with self._cond:
            self._starting.discard(worker)
            if isinstance(message, tuple) and message[0] == "ready" and not self._closing:
                worker.pid = message[1]
                self._idle.append(worker)
                logger.info("fit worker %s ready in %.1f s", worker.pid, time.monotonic() - worker.started)
            else:
                if not self._closing:
                    self._last_start_failure = time.monotonic()
                    logger.error("a fit worker did not start (see its log lines above)")
                self._kill_later(worker)
            self._cond.notify_all()

    def ready(self, timeout: float) -> bool:
        """Wait until every worker is warm (tests, the benchmark)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._idle) + len(self._busy) < self.size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closing:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        """Stop every worker now (idempotent; safe from any thread)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            workers = list(self._idle) + list(self._busy) + list(self._starting)
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            _terminate(worker)

    def pids(self) -> list[int]:
        """Process ids of the live workers (tests, logs)."""
        with self._cond:
            return [
                w.process.pid
                for w in (*self._idle, *self._busy, *self._starting)
                if w.process is not None and w.process.pid
            ]

    def status(self) -> PoolStatus:
        with self._cond:
            busy = len(self._busy)
            return PoolStatus(self.size, len(self._idle), busy, len(self._starting), max(self._admitted - busy, 0))

    # ------------------------------------------------------------------------------------------------ jobs

    def retry_after(self) -> int:
        return max(1, math.ceil(self.time_limit))

    def admit(self) -> None:
        """Count a job in, or raise PoolBusy (never blocks). Every admit() is followed by run() or release()."""
        with self._cond:
            if self._closing:
                raise WorkerFailed("the server is shutting down")
            if self._admitted >= self.size + self.queue_limit:
                raise PoolBusy(self.retry_after())
            self._admitted += 1

    def release(self) -> None:
        with self._cond:
            self._admitted -= 1

    def run(self, kind: str, name: str, data, started: float):
        """Run an admitted job; the worker's reply ``(status, value)``. Raises PoolTimeout, WorkerFailed."""
        try:
            worker = self._acquire()
            conn = worker.conn
            assert conn is not None  # a worker is idle only once started
            try:
                conn.send((kind, name, data, started))
            except (OSError, ValueError):
                self._discard(worker)
                raise WorkerFailed("the fit worker stopped unexpectedly; see the server log") from None
            try:
                answered = conn.poll(self.time_limit)
                reply = conn.recv() if answered else None
            except (EOFError, OSError):
                self._discard(worker)
                if self._closing:
                    raise WorkerFailed("the server is shutting down") from None
                logger.error("fit worker %s died during %s %s", worker.pid, kind, name)
                raise WorkerFailed("the fit worker stopped unexpectedly (out of memory?); see the server log") from None
            if not answered:
                logger.warning(
                    "%s %s ran past the %g s time cap: fit worker %s stopped", kind, name, self.time_limit, worker.pid
                )
                self._discard(worker)
                raise PoolTimeout()
            with self._cond:
                self._busy.discard(worker)
                if self._closing:
                    self._kill_later(worker)
                else:
                    self._idle.append(worker)
                self._cond.notify_all()
            return reply
        finally:
            self.release()

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.start_timeout
        with self._cond:
            while True:
                if self._closing:
                    raise WorkerFailed("the server is shutting down")
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                if self._live() < self.size and time.monotonic() - self._last_start_failure > RESTART_BACKOFF:
                    self._spawn_locked()
                if self._live() == 0:
                    raise WorkerFailed("the fit worker could not start; see the server log")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerFailed("no fit worker became free in time; try again")
                self._cond.wait(min(remaining, 1.0))

    def _discard(self, worker: _Worker) -> None:
        """Kill a worker that failed or overran, and start its replacement."""
        with self._cond:
            self._busy.discard(worker)
            self._kill_later(worker)
            if not self._closing and self._live() < self.size:
                self._spawn_locked()
            self._cond.notify_all()

    @staticmethod
    def _kill_later(worker: _Worker) -> None:
        threading.Thread(target=_terminate, args=(worker,), daemon=True, name="xlcf-serve-worker-stop").start()


def _terminate(worker: _Worker) -> None:
    process = worker.process
    if process is None:  # not started yet: its starter sees the pool closing and stops it
        return
    try:
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
    except (OSError, ValueError, AssertionError):
        pass
    try:
        if worker.conn is not None:
            worker.conn.close()
    except OSError:
        pass
