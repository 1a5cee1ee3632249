"""The slice thread pool: order, errors, nesting, the IPV2_THREADS setting, and masks
that do not depend on how many threads made them."""

from __future__ import annotations

import multiprocessing
import os
import threading
from typing import Any

import numpy as np
import pytest

from ipv2.core.errors import InputError
from ipv2.core.thread_pool import map_slices, worker_count
from ipv2.phantom import make_phantom
from ipv2.purification.masks import purification_masks


def test_results_keep_their_order_and_use_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPV2_THREADS", "2")
    names: set[str] = set()

    def square(k: int) -> int:
        names.add(threading.current_thread().name)
        return k * k

    assert map_slices(square, 20) == [k * k for k in range(20)]
    assert all(n.startswith("ipv2-slices") for n in names)


def test_one_thread_runs_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPV2_THREADS", "1")
    assert worker_count() == 1
    names = map_slices(lambda k: threading.current_thread().name, 3)
    assert names == [threading.current_thread().name] * 3


def test_errors_reach_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPV2_THREADS", "2")

    def fail_on_three(k: int) -> int:
        if k == 3:
            raise InputError("slice 3 is bad")
        return k

    with pytest.raises(InputError, match="slice 3"):
        map_slices(fail_on_three, 8)


def test_nested_maps_do_not_wait_on_their_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPV2_THREADS", "2")
    out = map_slices(lambda k: sum(map_slices(lambda j: j + k, 4)), 6)
    assert out == [6 + 4 * k for k in range(6)]


def _square_sum_in_child(queue: Any) -> None:
    queue.put(sum(map_slices(lambda k: k * k, 10)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_a_forked_child_gets_a_pool_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent's pool threads do not exist after fork; the child must not wait on them."""
    monkeypatch.setenv("IPV2_THREADS", "2")
    assert map_slices(lambda k: k, 4) == [0, 1, 2, 3]  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_square_sum_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the forked child hung or failed"
    assert queue.get(timeout=5) == sum(k * k for k in range(10))


def test_bad_thread_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPV2_THREADS", "many")
    with pytest.raises(ValueError, match="IPV2_THREADS"):
        worker_count()


def test_masks_do_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_phantom(size=96, slices=7, seed=3)
    u, n = case.uldct.array, case.ndct.array
    monkeypatch.setenv("IPV2_THREADS", "1")
    serial = purification_masks(u, n)
    monkeypatch.setenv("IPV2_THREADS", "3")
    threaded = purification_masks(u, n)
    for name in ("lung", "background", "body", "common"):
        np.testing.assert_array_equal(getattr(serial, name), getattr(threaded, name))


def test_nan_error_names_the_slice() -> None:
    case = make_phantom(size=64, slices=5, seed=0)
    u = case.uldct.array.copy()
    u[3, 10, 10] = np.nan
    with pytest.raises(InputError, match="slice 3"):
        purification_masks(u, case.ndct.array)
