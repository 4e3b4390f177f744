"""Ending a multi-process (DDP) bundle run so that every process exits 0: ``multi_gpu_train.json``'s ``finalize``.

Why not just ``dist.destroy_process_group()``: with the gloo backend (DDP on CPU, the 2-process CI test) a process
could abort at exit after a finished run ("terminate called without an active exception", exit code -6; torchrun then
fails the whole run). The backtrace of the core (gdb, torch 2.13): ``ProcessGroupGloo::runLoop`` ->
``~AsyncBarrierWork`` -> ``~AsyncAllgatherWork`` -> ``TensorImpl::decref_pyobject`` -> ``gil_scoped_acquire`` ->
``take_gil`` -> ``PyThread_exit_thread``, while the main thread was in ``Py_FinalizeEx``. A gloo worker thread drops
its reference to a finished collective *after* ``wait()`` has returned in Python; when that reference is the last one
to a tensor whose Python object is gone (the evaluator's all-gather of the metric), dropping it takes the GIL, and a
thread that takes the GIL during interpreter finalization is ended by ``pthread_exit``, whose forced unwind through a
``noexcept`` destructor calls ``std::terminate``. A barrier alone does not help: it holds the works still in progress
and is itself released on a worker thread the same way (a 2-process DDP script with an all-gather, a barrier and
``destroy_process_group()`` aborted in 6 of 29 runs on a 2-core machine; with this grace in 0 of 40).

So :func:`finish_process_group` waits for every process (barrier), then sleeps with the GIL released, which lets the
worker threads drop what they hold while the interpreter is fully alive, then destroys the process group. The grace is
a second at the end of a training run.
"""

from __future__ import annotations

import time

import torch.distributed as dist

__all__ = ["finish_process_group", "GRACE_SECONDS"]

#: how long the main thread yields the GIL to the backend's worker threads before the group is destroyed
GRACE_SECONDS = 1.0


def finish_process_group(grace_seconds: float = GRACE_SECONDS) -> None:
    """Barrier, a grace of ``grace_seconds`` (module docstring: why), then ``destroy_process_group()``; nothing
    when no process group is initialised (a single-process run)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    time.sleep(grace_seconds)
    dist.destroy_process_group()
