"""Slice-parallel work on a shared thread pool.

Purification treats axial slices (or blocks of them) independently, and the libraries
it calls (numpy, OpenCV, scipy.ndimage) release the GIL inside their loops, so threads
use every core without copying volumes into worker processes. A command's ``--threads``
(:func:`set_worker_count`) sets the pool's size; otherwise ``IPV2_THREADS`` caps it (1
turns it off), and by default it uses the cores this process may run on
(:func:`available_cores`). A task that itself calls
:func:`map_slices` runs its inner loop serially instead of waiting on its own pool. A
forked child (a DataLoader worker, say) starts a pool of its own, since the parent's
threads do not exist in it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# One pool per worker count, never shut down: a call already holding a pool must be able
# to use it even if another thread changes IPV2_THREADS meanwhile.
_pools: dict[int, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()
_inside = threading.local()
_override: int | None = None  # set by a command's --threads; wins over IPV2_THREADS


def _forget_pool_after_fork() -> None:
    global _pools, _pool_lock
    _pools, _pool_lock = {}, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota.

    ``os.cpu_count()`` counts the host's cores, so a container or a ``taskset`` limited
    to 2 of 64 would start 64 threads that fight over 2 cores (system time as high as
    user time). The affinity mask (Linux) and the cgroup v2 quota (``cpu.max``, what
    ``docker --cpus`` sets) say what is really usable; elsewhere ``os.cpu_count()``.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_quota() -> int | None:
    """Whole CPUs allowed by ``/sys/fs/cgroup/cpu.max`` (rounded up), or None when unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="ascii").split()
        limit, period = text[0], float(text[1])
    except (OSError, IndexError, ValueError):
        return None
    if limit == "max" or period <= 0:
        return None
    try:
        return max(1, -(-int(limit) // int(period)))
    except ValueError:
        return None


def default_worker_count() -> int:
    """``IPV2_THREADS`` if set (at least 1), else :func:`available_cores`."""
    env = os.environ.get("IPV2_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise ValueError(f"IPV2_THREADS must be a whole number, got {env!r}") from exc
    return available_cores()


def set_worker_count(count: int | None) -> None:
    """Fix the pool's size for this process (a command's ``--threads``); None restores the default."""
    global _override
    if count is not None and count < 1:
        raise ValueError(f"the thread count must be at least 1, got {count}")
    _override = count


def worker_override() -> int | None:
    """The count :func:`set_worker_count` fixed, or None."""
    return _override


@contextmanager
def threads_restored() -> Iterator[None]:
    """Put the pool size and torch's thread count back after a command that set them.

    The CLI also runs in-process (tests, notebooks, Slicer self-tests): one command's
    ``--threads`` must not become the next caller's setting. torch is only consulted
    when it is already imported, so commands that never load it stay torch-free.
    """
    override = _override
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        set_worker_count(override)
        torch = sys.modules.get("torch")
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)


def worker_count() -> int:
    """The pool's size: the command's ``--threads`` if set, else :func:`default_worker_count`."""
    return _override if _override is not None else default_worker_count()


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if workers not in _pools:
            _pools[workers] = _started_pool(workers)
        return _pools[workers]


def _started_pool(workers: int) -> ThreadPoolExecutor:
    """A pool whose threads all run already; an interrupted start leaves no thread behind.

    ThreadPoolExecutor starts a thread inside ``submit`` and registers it for the
    interpreter's exit only after ``Thread.start`` returns. A Ctrl+C or SIGTERM (which the
    CLI turns into an exception, :mod:`ipv2.cli.termination`) handled in between, likely
    on a loaded machine where starting a thread is slow, left a non-daemon thread that
    nobody told to stop: the process hung at exit after its cleanup. So all threads are
    started here at once (each waits at a barrier, so every ``submit`` finds none idle
    and starts a new one); if that is interrupted, the barrier is broken and the pool
    shut down, which reaches every thread it started, registered or not.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ipv2-slices")
    barrier = threading.Barrier(workers)
    try:
        for future in [pool.submit(barrier.wait) for _ in range(workers)]:
            future.result()
    except BaseException:
        barrier.abort()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return pool


def _run_marked(fn: Callable[[int], T], k: int) -> T:
    _inside.active = True
    try:
        return fn(k)
    finally:
        _inside.active = False


def map_slices(fn: Callable[[int], T], count: int) -> list[T]:
    """``[fn(0), ..., fn(count - 1)]``, run on the pool; the first error is raised."""
    workers = worker_count()
    if workers <= 1 or count <= 1 or getattr(_inside, "active", False):
        return [fn(k) for k in range(count)]
    pool = _shared_pool(workers)
    # Not pool.map: an interrupt (Ctrl+C, SIGTERM) while it is still submitting leaves
    # the tasks queued so far uncancelled, and the process then works through all of
    # them at exit. Here every submitted task is cancelled on any way out.
    futures = []
    try:
        for k in range(count):
            futures.append(pool.submit(_run_marked, fn, k))
        return [future.result() for future in futures]
    except BaseException:
        for future in futures:
            future.cancel()
        raise
