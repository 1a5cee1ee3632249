"""SIGTERM mid-work: every command stops cleanly, removes its partial outputs, exits 143.

Issue 18, item 6. Schedulers (SLURM, Kubernetes), ``timeout`` and the Slicer panels'
Cancel send SIGTERM; before, ``build-dataset`` died by the signal and left its hidden
``.NAME.partial-XXXX`` folder, and ``simulate``/``purify`` skipped their cleanup paths.
Each test starts the real command as a child process on small inputs, waits until it is
demonstrably mid-work (a partial folder with files in it, or the line the command prints
just before its long computation), sends SIGTERM and checks: exit status 143 (128 +
SIGTERM, the shell's convention; Ctrl+C keeps 130), exactly one line printed after the
signal (the stop message, no traceback) and an output location left exactly as it was.
A command that finished before the signal fails the test (exit 0), it never passes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ipv2.core.volume import Volume
from ipv2.io.png_layout import write_png_pair
from ipv2.io.volumes import write_volume
from ipv2.phantom import make_phantom
from ipv2.simulation.phantoms import chest_slice

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals")

STOP_LINE = "stopped by SIGTERM; partial outputs removed"
HANG_GUARD_S = 180.0  # only against a hung child; no assertion depends on durations


class Child:
    """A running ``python -m ipv2`` whose stdout and stderr lines are collected live."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        """``args`` after ``python -m ipv2``, or ``["-c", script]`` for a script."""
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "IPV2_THREADS": "2",
            **(env or {}),
        }
        command = args if args[0] == "-c" else ["-m", "ipv2", *args]
        self.proc = subprocess.Popen(
            # faulthandler: a child that hangs is made to print every thread's stack.
            [sys.executable, "-X", "faulthandler", *command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Poll ``ready`` while the child runs; fail if it ends (or hangs) first."""
        deadline = time.monotonic() + HANG_GUARD_S
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(
                    f"the command ended (exit {self.proc.returncode}) before {what}:\n"
                    + "\n".join(self.err[-20:])
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"never saw {what}")
            time.sleep(0.02)

    def terminate(self, times: int = 1, signum: int = signal.SIGTERM) -> tuple[int, list[str]]:
        """Send ``signum``; the exit status and the stderr lines printed after the signal."""
        before = len(self.err)
        for _ in range(times):
            self.proc.send_signal(signum)
        return self.finish(before)

    def finish(self, before: int) -> tuple[int, list[str]]:
        """Wait for the exit; its status and the stderr lines from index ``before`` on."""
        try:
            code = self.proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the command did not exit after the stop:\n" + self.stacks())
        for reader in self._readers:
            reader.join(timeout=10)
        return code, self.err[before:]

    def stacks(self) -> str:
        """Kill a hung child with SIGABRT, which makes faulthandler print every stack."""
        before = len(self.err)
        self.proc.send_signal(signal.SIGABRT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for reader in self._readers:
            reader.join(timeout=10)
        return "\n".join(self.err[before:][-80:])

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in list(self.out) if line.startswith("{")]


def partial_with_files(parent: Path, pattern: str) -> Callable[[], bool]:
    """True once a hidden partial folder under ``parent`` holds a file matching ``pattern``."""

    def ready() -> bool:
        try:
            return any(any(p.rglob(pattern)) for p in parent.glob(".*.partial-*"))
        except OSError:  # the folder went away while being listed
            return False

    return ready


def stderr_has(child: Child, text: str) -> Callable[[], bool]:
    return lambda: any(text in line for line in list(child.err))


def assert_clean_stop(code: int, after: list[str], outputs: Path) -> None:
    assert code == 143, f"exit {code}; stderr after the signal: {after}"
    assert after == [STOP_LINE], after
    leftovers = sorted(p.name for p in outputs.iterdir())
    assert leftovers == [], f"left behind in {outputs}: {leftovers}"


@pytest.fixture(scope="module")
def png_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough one-slice PNG cases that simulating them all takes a few seconds."""
    root = tmp_path_factory.mktemp("pngs")
    case = make_phantom(size=64, slices=4, seed=1)
    for i in range(40):
        k = i % 4
        write_png_pair(root, "train", f"c{i:02d}", u=case.uldct.array[k], n=case.ndct.array[k])
    return root


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """U and N volumes of 48 slices: simulating S for purify takes a few seconds."""
    root = tmp_path_factory.mktemp("pair")
    case = make_phantom(size=64, slices=48, seed=3)
    return {
        "U": write_volume(case.uldct, root / "u.nrrd"),
        "N": write_volume(case.ndct, root / "n.nrrd"),
    }


@pytest.mark.parametrize("events", ["human", "jsonl"])
def test_build_dataset_sigterm_removes_its_partial_folder(
    png_source: Path, tmp_path: Path, events: str
) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    child = Child(
        ["build-dataset", str(png_source), "--out", str(outputs / "ds"), "--strategy", "ipv2",
         "--modules", "1,2", "--resplit", "--events", events, "--quiet"],
        cwd=tmp_path,
    )  # fmt: skip
    child.wait_until(partial_with_files(outputs, "*.npy"), "a case written into the partial folder")
    code, after = child.terminate()
    assert_clean_stop(code, after, outputs)
    if events == "jsonl":  # the --events contract: the last event says it was stopped
        last = child.events()[-1]
        assert last["event"] == "done" and last["status"] == "cancelled", last
        assert last["message"] == STOP_LINE and last["signal"] == "SIGTERM"


def test_simulate_sigterm_stops_cleanly(tmp_path: Path) -> None:
    arr = np.repeat(chest_slice(64)[None], 48, axis=0)
    ndct = write_volume(Volume(arr, spacing=(1.5, 1.5, 2.5)), tmp_path / "ndct.nrrd")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    child = Child(
        ["simulate", "--ndct", str(ndct), "--out", str(outputs / "s.nrrd"), "--batch-size", "1",
         "--device", "cpu", "--quiet"],
        cwd=tmp_path,
    )  # fmt: skip
    child.wait_until(stderr_has(child, "simulating"), "the simulation started")
    code, after = child.terminate()
    assert_clean_stop(code, after, outputs)


def test_purify_sigterm_stops_cleanly(pair: dict[str, Path], tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    child = Child(
        ["purify", "-U", str(pair["U"]), "-N", str(pair["N"]), "--modules", "1,2",
         "--out-dir", str(outputs / "p"), "--quiet"],
        cwd=tmp_path,
    )  # fmt: skip
    child.wait_until(stderr_has(child, "simulating S from N"), "the simulation of S started")
    code, after = child.terminate()
    assert_clean_stop(code, after, outputs)


def test_phantom_sigterm_removes_its_partial_folder(tmp_path: Path) -> None:
    """Also a second SIGTERM right behind the first: it must not cut the cleanup short."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    child = Child(
        ["phantom", "--out", str(outputs / "ph"), "--cases", "6", "--size", "64", "--slices",
         "8", "--quiet"],
        cwd=tmp_path,
    )  # fmt: skip
    child.wait_until(
        partial_with_files(outputs, "*.nrrd"), "a case written into the partial folder"
    )
    code, after = child.terminate(times=2)
    assert_clean_stop(code, after, outputs)


def test_sigterm_during_slice_parallel_work_does_not_wait_for_the_queue(tmp_path: Path) -> None:
    """Threads of the shared slice pool do not keep a stopped process alive.

    The signal lands while the main thread waits on ``map_slices`` with 2000 queued
    half-second tasks (over eight minutes of work on two threads): the queued tasks are
    cancelled, the two running ones finish, and the process exits 143 well before the
    hang guard (which only a process that works through the queue would reach).
    """
    script = (
        "import sys, time\n"
        "from ipv2.cli.termination import Terminated, terminate_as_interrupt\n"
        "from ipv2.core.thread_pool import map_slices\n"
        "try:\n"
        "    with terminate_as_interrupt():\n"
        "        print('ready', file=sys.stderr, flush=True)\n"
        "        map_slices(lambda k: time.sleep(0.5), 2000)\n"
        "except Terminated as exc:\n"
        "    print(exc.message, file=sys.stderr)\n"
        "    sys.exit(exc.exit_status)\n"
    )
    env = {**os.environ, "IPV2_THREADS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == "ready"
    time.sleep(0.2)  # let the pool start on the queue; not an assertion
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the process kept working through the queued slices after SIGTERM")
    assert code == 143
    assert proc.stderr.read().splitlines() == [STOP_LINE]


SLOW_IMPORT = """\
import random, signal, sys, threading, time
print("importing", file=sys.stderr, flush=True)
if {storm}:  # signals 0-2 ms apart: some arrive while the handler handles another
    main = threading.main_thread().ident
    def storm():
        for _ in range(200):
            signal.pthread_kill(main, signal.SIGTERM)
            time.sleep(random.uniform(0, 0.002))
    sender = threading.Thread(target=storm)
    sender.start()
    sender.join()
guard = signal.getsignal(signal.{signal})
end = time.monotonic() + 120  # module code that the stop lands in, as in import torch
while not getattr(guard, "postponed", ()) and time.monotonic() < end:
    time.sleep(0.01)
print("imported", file=sys.stderr, flush=True)
"""

STOPPED_DURING_IMPORT = """\
import signal, sys, time
from ipv2.cli.termination import Terminated, terminate_as_interrupt
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
try:
    with terminate_as_interrupt():
        import slow_module
        time.sleep(600)  # only a real signal wakes this before the hang guard
        print("not stopped", file=sys.stderr)
except Terminated as exc:
    print(exc.message, file=sys.stderr)
    sys.exit(exc.exit_status)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def start_slow_import(
    tmp_path: Path, signal_name: str, env: dict[str, str], storm: bool = False
) -> Child:
    """A child inside an import that lasts until the stop has been postponed.

    The module waits for the handler installed for ``signal_name`` to report the request
    as postponed, so the stop lands inside the import on any machine, however loaded.
    Without the postponing the request raises in the module: "imported" never appears.
    """
    module = SLOW_IMPORT.format(signal=signal_name, storm=storm)
    (tmp_path / "slow_module.py").write_text(module)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), **env}
    child = Child(["-c", STOPPED_DURING_IMPORT], cwd=tmp_path, env=env)
    child.wait_until(stderr_has(child, "importing"), "the import started")
    return child


@pytest.mark.parametrize(
    ("request_kind", "expected_code", "expected_line"),
    [
        ("SIGTERM", 143, STOP_LINE),
        ("SIGINT", 130, "interrupted"),
        ("file", 143, STOP_LINE),
        ("SIGTERM storm", 143, STOP_LINE),
    ],
)
def test_a_stop_during_an_import_waits_for_the_import_to_finish(
    tmp_path: Path, request_kind: str, expected_code: int, expected_line: str
) -> None:
    """A stop never interrupts module code being imported, then stops the command at once.

    torch is imported lazily inside commands, so a stop often lands in ``import torch``;
    an exception raised there leaves a half-initialised C++ extension (seen: SIGABRT, and
    a purify that never exited). The module here stands for it: the stop must wait for
    its last line ("imported") and then end the command instead of its 600 s sleep. A
    storm of signals during the import (an impatient user, a scheduler that repeats
    itself) ends in the same single clean stop; the re-entered handler that once
    deadlocked on such signals is tested in ``test_import_safe_signals.py``.
    """
    stop_file = tmp_path / "stop"
    signal_name = "SIGINT" if request_kind == "SIGINT" else "SIGTERM"
    env = {"IPV2_STOP_FILE": str(stop_file)} if request_kind == "file" else {}
    storm = request_kind == "SIGTERM storm"
    child = start_slow_import(tmp_path, signal_name, env, storm)
    before = len(child.err)
    if request_kind == "file":
        stop_file.touch()
    elif not storm:
        child.proc.send_signal(getattr(signal, signal_name))
    code, after = child.finish(before)
    assert (code, after) == (expected_code, ["imported", expected_line])
