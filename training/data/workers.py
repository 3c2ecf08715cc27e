"""Process pools of the data commands: each worker process runs one BLAS/OpenMP thread, since the
processes are the parallelism; an interrupted command stops its workers at once."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_thread_per_worker() -> Iterator[None]:
    """Set the thread variables to 1 for the processes started inside the block; restore them after."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stop_workers(pool: ProcessPoolExecutor, grace_seconds: float = 5.0) -> None:
    """Cancel `pool`'s queued work and end its worker processes now, waiting until they are gone.

    For an interrupted caller (Ctrl-C, SIGTERM, a failed task): a signal sent to the caller alone
    reaches no worker, and leaving the pool's block would otherwise wait for every queued task.
    Workers get SIGTERM, then SIGKILL after `grace_seconds`; what they were writing is the caller's
    to remove (emo_rt.io.files.remove_partials)."""
    # the live processes (Python 3.14's terminate_workers() reads the same attribute)
    processes: list[multiprocessing.Process] = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(grace_seconds)
        if process.is_alive():
            process.kill()
            process.join()


def quiet_when_the_trainer_is_gone(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a worker whose trainer stopped (Ctrl-C, SIGTERM) while taking a
    batch's shared-memory handle gets a broken pipe in multiprocessing's resource-sharer thread,
    which reports it through `sys.excepthook` as a traceback after the trainer's one-line exit.
    That connection error is expected there and is not printed; every other error still is."""
    default_hook = sys.excepthook

    def hook(kind, value, trace):
        if not issubclass(kind, (BrokenPipeError, ConnectionResetError)):
            default_hook(kind, value, trace)

    sys.excepthook = hook
