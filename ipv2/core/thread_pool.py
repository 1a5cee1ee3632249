"""Slice-parallel work on a shared thread pool.

Purification treats axial slices (or blocks of them) independently, and the libraries
it calls (numpy, OpenCV, scipy.ndimage) release the GIL inside their loops, so threads
use every core without copying volumes into worker processes. ``IPV2_THREADS`` caps the pool (1 turns it
off); by default it uses the cores this process may run on. A task that itself calls
:func:`map_slices` runs its inner loop serially instead of waiting on its own pool. A
forked child (a DataLoader worker, say) starts a pool of its own, since the parent's
threads do not exist in it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

# One pool per worker count, never shut down: a call already holding a pool must be able
# to use it even if another thread changes IPV2_THREADS meanwhile.
_pools: dict[int, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()
_inside = threading.local()


def _forget_pool_after_fork() -> None:
    global _pools, _pool_lock
    _pools, _pool_lock = {}, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def worker_count() -> int:
    """``IPV2_THREADS`` if set (at least 1), else the number of usable cores."""
    env = os.environ.get("IPV2_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError as exc:
            raise ValueError(f"IPV2_THREADS must be a whole number, got {env!r}") from exc
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    with _pool_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="ipv2-slices")
        return _pools[workers]


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
    return list(pool.map(lambda k: _run_marked(fn, k), range(count)))
