"""The worker pool of `xlcf serve` on its own: a job that overruns the hard cap is stopped and its worker
replaced, a worker killed from outside is replaced, a job whose worker dies ends with a clear error, admission
beyond the queue is refused, and close() ends a running job at once. Real worker processes (spawned, warm)."""

from __future__ import annotations

import os

os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import signal
import threading
import time

import pytest

from xlcf.server.pool import PoolBusy, PoolTimeout, WorkerFailed, WorkerPool
from xlcf.server.worker import WorkerConfig, soft_cap

pytestmark = pytest.mark.slow


def _call(name, args):
    import xlwings

    if "remote" not in [e.name for e in xlwings.engines]:
        pytest.skip("xlwings' remote engine is unavailable (XLWINGS_LICENSE_KEY unset when xlwings was imported)")
    return {
        "func_name": name,
        "args": args,
        "caller_address": "Sheet1!A1",
        "version": xlwings.__version__,
        "client": "Office.js",
        "runtime": "1.4",
        "culture_info_name": "en-US",
        "date_format": "M/d/yyyy",
    }


def endless_fit():
    ratings = [[float((i * 7 + j * 3) % 5 + 1) if (i + j) % 3 else None for j in range(40)] for i in range(40)]
    return _call("cf_fit", [ratings, None, [["sgd"]], [[1e9]], None, None, None])


def quick_fit(seed=0):
    ratings = [[5.0, 4.0, None], [4.0, None, 2.0], [None, 2.0, 1.0]]
    return _call("cf_fit", [ratings, [[2]], [["als"]], [[10]], None, [[seed]], None])


def run(pool, data):
    pool.admit()
    return pool.run("function", "cf_fit", data, time.time())


@pytest.fixture(scope="module")
def pool():
    # The fits' own stop is far away: only the pool's hard cap can end the endless fit.
    pool = WorkerPool(WorkerConfig(fit_seconds=1000.0, data_dir=None, threads=1), size=1, queue_limit=1, time_limit=3.0)
    pool.start()
    assert pool.ready(180), "the worker did not start"
    yield pool
    pool.close()


def test_soft_cap_leaves_time_to_write_the_results():
    assert soft_cap(25) == 20 and soft_cap(4) == 3 and soft_cap(100) == 95


def test_a_job_past_the_hard_cap_is_stopped_and_the_worker_replaced(pool):
    before = pool.pids()
    job = endless_fit()
    begun = time.monotonic()
    with pytest.raises(PoolTimeout):
        run(pool, job)
    assert time.monotonic() - begun < 3.0 + 1.5
    assert pool.ready(180)
    after = pool.pids()
    assert after and set(after).isdisjoint(before)
    status, result = run(pool, quick_fit())
    assert status == "ok" and isinstance(result[0][0], float)


def test_a_worker_killed_from_outside_is_replaced(pool):
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    # the next job finds the dead worker, is told so, and the one after runs on its replacement
    try:
        status, _ = run(pool, quick_fit(1))
    except WorkerFailed as err:
        assert "stopped unexpectedly" in str(err)
    assert pool.ready(180)
    status, result = run(pool, quick_fit(2))
    assert status == "ok" and pid not in pool.pids()


def test_a_job_whose_worker_dies_ends_at_once_with_a_clear_error(pool):
    errors = []

    def job():
        try:
            run(pool, endless_fit())
        except (WorkerFailed, PoolTimeout) as err:
            errors.append(err)

    runner = threading.Thread(target=job)
    runner.start()
    deadline = time.monotonic() + 10
    while pool.status().busy == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    runner.join(5)
    assert not runner.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], WorkerFailed)
    assert pool.ready(180)


def test_admission_beyond_workers_and_queue_is_refused(pool):
    pool.admit()
    pool.admit()  # one worker + a queue of one
    try:
        with pytest.raises(PoolBusy) as refused:
            pool.admit()
        assert refused.value.retry_after == 3
    finally:
        pool.release()
        pool.release()


def test_close_ends_a_running_job_at_once():
    pool = WorkerPool(
        WorkerConfig(fit_seconds=1000.0, data_dir=None, threads=1), size=1, queue_limit=0, time_limit=60.0
    )
    pool.start()
    assert pool.ready(180)
    errors = []

    def job():
        try:
            run(pool, endless_fit())
        except WorkerFailed as err:
            errors.append(err)

    runner = threading.Thread(target=job)
    runner.start()
    while pool.status().busy == 0:
        time.sleep(0.02)
    pids = pool.pids()
    begun = time.monotonic()
    pool.close()
    runner.join(5)
    assert time.monotonic() - begun < 3.0
    assert errors and "shutting down" in str(errors[0])
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(WorkerFailed):
        pool.admit()
