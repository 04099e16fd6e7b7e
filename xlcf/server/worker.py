"""The worker process of ``xlcf serve``: the side of :mod:`xlcf.server.pool` that runs the fits.

Started with the ``spawn`` method (a fresh interpreter: no state copied from the server's threads), it imports
torch and the fitting code and runs one tiny fit before it reports ready, so a call pays no start-up. Then it
answers jobs, one at a time, until its pipe closes:

- job: ``(kind, name, data, started)`` with kind ``"script"`` (a book payload), ``"function"`` (a custom
  functions call) or ``"solve"`` (the task pane's "Solve this sheet": :mod:`xlcf.server.sheet_solve`),
  ``started`` the wall-clock time the request reached the server;
- reply: ``("ok", result)``, ``("bad", message)`` (the payload is not what xlwings expects),
  ``("refused", message)`` (a Solver model that cannot be solved: the solver's one line naming ``sheet!cell``) or
  ``("error", exception class name)`` (a bug: the traceback goes to this process's log, never to the client).

Fits stop themselves at ``fit_seconds`` (a soft cap below the server's hard cap, leaving time to write the
results); a worker that overruns the hard cap is killed by the pool and replaced.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

logger = logging.getLogger("xlcf.server.worker")


@dataclass(frozen=True)
class WorkerConfig:
    fit_seconds: float  # the fits' own stop (soft cap)
    data_dir: str | None
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    log_level: str = "warning"


def soft_cap(time_limit: float) -> float:
    """Seconds a fit may train inside a ``time_limit`` request: the rest is for writing the results
    (a movielens training computes its output blocks after training)."""
    return max(0.75 * time_limit, time_limit - 5.0)


def warm_up(config: WorkerConfig):
    """Import what every call needs and run one tiny fit (the first torch op of a process is slow)."""
    import numpy as np
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    from xlcf.actions.fit import fit_sheet_arrays
    from xlcf.excel.remote import RemoteExcel

    excel = RemoteExcel(time_limit=config.fit_seconds, data_dir=config.data_dir, server=True)
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, (4, 4)).astype(np.float64)
    fit_sheet_arrays(
        ratings, rng.random((4, 2)), rng.random((2, 4)), None, None, {"optimizer": "adam", "epochs": 3}, init="keep"
    )
    from xlcf.server import sheet_solve

    try:
        sheet_solve.warm_up()
    except Exception:  # the first "Solve this sheet" then pays its start-up; fits are unaffected
        logger.warning("the solver's warm-up failed", exc_info=True)
    return excel


def serve(conn, config: WorkerConfig) -> None:
    """The process's main function (the target of ``multiprocessing.Process``)."""
    # Ctrl-C in the server's terminal reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=config.log_level.upper(), format=f"xlcf serve worker {os.getpid()}: %(levelname)s %(message)s"
    )
    try:
        excel = warm_up(config)
    except Exception:  # the pool logs that the worker did not start and answers 503
        logger.exception("start-up failed")
        try:
            conn.send(("failed", None))
        except OSError:
            pass
        return
    conn.send(("ready", os.getpid()))
    from xlcf.errors import BadPayload, XlcfError
    from xlcf.server.sheet_solve import solve_sheet

    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the server is gone
            return
        if job is None:
            return
        kind, name, data, started = job
        begun = time.perf_counter()
        try:
            if kind == "script":
                reply = ("ok", excel.run_script(name, data, started=started))
            elif kind == "solve":
                reply = ("ok", solve_sheet(data, time_limit=config.fit_seconds))
            else:
                reply = ("ok", excel.call_function(data))
        except BadPayload as err:
            reply = ("bad", str(err))
        except XlcfError as err:  # only a solve gets here: scripts answer their own errors in the status cell
            reply = ("refused", str(err))
        except Exception as err:  # logged here; the client gets the class name only
            logger.exception("%s %s failed", kind, name)
            reply = ("error", type(err).__name__)
        logger.info("%s %s: %.3f s", kind, name, time.perf_counter() - begun)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
