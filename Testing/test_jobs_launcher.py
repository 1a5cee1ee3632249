"""Stop, Kill and Resume through a launcher that forwards no signal (issue 13, item 1).

Inside Slicer a training Job runs ``PythonSlicer``, a CTK launcher that starts
``python-real`` as its child and forwards no signal (commontk/AppLauncher
``Base/ctkAppLauncher.cpp``). The stand-in launcher here is stricter still: it ignores
SIGTERM and SIGINT and starts the real engine (``python -m ipv2 train``) in a session of
its own, so nothing the Job sends to the launcher or its process group reaches the
engine, as on Windows, where a console-less Slicer cannot send CTRL_BREAK. The panel's
Qt-free logic (``TrainLogicMixin``) drives real Jobs, as the IPv2Train module does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ipv2.io.checkpoints import load_checkpoint
from ipv2.runtime.processes import process_alive
from ipv2.runtime.run_lock import RunFolderBusy
from ipv2.runtime.runs import TrainingRun
from ipv2.slicer.selftest import write_phantom_pairs
from ipv2.slicer.train_logic import TrainLogicMixin
from ipv2.training import latest_checkpoint

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="the stand-in launcher is a POSIX script (shebang, sessions); the Windows path "
    "uses the same stop file and taskkill",
)

STAND_IN = textwrap.dedent(
    """\
    #!{python}
    # A launcher like PythonSlicer, but deaf: it ignores SIGTERM/SIGINT, runs its
    # arguments with the real Python as a child in a session of its own, and waits.
    import signal, subprocess, sys
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen([{python!r}, *sys.argv[1:]], start_new_session=True)
    with open({pid_file!r}, "w") as fh:
        fh.write(str(child.pid))
    sys.exit(child.wait())
    """
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ipv2.data.build import BuildConfig, build_dataset
    from ipv2.purification.recipe import Recipe

    root = tmp_path_factory.mktemp("pairs")
    pairs = write_phantom_pairs(root, ("train", "train", "val", "test"), size=64, slices=3, seed=31)
    out = root / "ds"
    build_dataset(pairs, out, BuildConfig(recipe=Recipe.for_strategy("ipv1")))
    return out


@pytest.fixture()
def launcher(tmp_path: Path) -> tuple[Path, Path]:
    """The stand-in launcher script and the file where it records its engine child's pid."""
    pid_file = tmp_path / "engine-child.pid"
    script = tmp_path / "FakePythonSlicer"
    script.write_text(STAND_IN.format(python=sys.executable, pid_file=str(pid_file)))
    script.chmod(0o755)
    return script, pid_file


def _panel(dataset: Path, output: Path) -> SimpleNamespace:
    return SimpleNamespace(
        datasetFolder=str(dataset),
        outputFolder=str(output),
        architecture="redcnn",
        epochs=500,  # far more than the test lets it run: only a stop ends it
        batchSize=2,
        learningRate=1e-3,
        cropSize=32,
        device="cpu",
        gpus=1,
        baseChannels=8,
        samplerSteps=0,
        maxSteps=0,
    )


def _wait_for(run: TrainingRun, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
    seen: list[dict[str, Any]] = []
    end = time.monotonic() + 120
    while time.monotonic() < end:
        seen += run.poll()
        if predicate(seen):
            return
        if not run.running:
            break
        time.sleep(0.05)
    raise AssertionError(f"not reached; last events: {seen[-5:]}, log: {run.job.log_tail(10)}")


def _first_loss(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "metric" and e.get("name") == "loss" for e in events)


def _child_pid(pid_file: Path) -> int:
    return int(pid_file.read_text())


def _gone(pid: int) -> bool:
    """Wait (bounded) until ``pid`` has ended: SIGKILL is delivered asynchronously."""
    end = time.monotonic() + 30
    while process_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not process_alive(pid)


@contextlib.contextmanager
def _no_orphans(pid_file: Path) -> Iterator[None]:
    """Whatever the outcome, leave no trainer running behind a failed test."""
    try:
        yield
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(_child_pid(pid_file), signal.SIGKILL)


@pytest.mark.slow
def test_stop_makes_the_trainer_behind_a_deaf_launcher_checkpoint_and_exit(
    dataset: Path, tmp_path: Path, launcher: tuple[Path, Path]
) -> None:
    script, pid_file = launcher
    out = tmp_path / "run"
    logic = TrainLogicMixin()
    with _no_orphans(pid_file):
        run = logic.startTraining(_panel(dataset, out), python=str(script))
        _wait_for(run, _first_loss)
        engine = _child_pid(pid_file)
        run.stop()
        assert run.job.wait(timeout=90) == 0, run.job.log_tail(20)
        run.poll()
        assert run.result is not None, run.job.log_tail(20)
        assert run.result["status"] == "stopped" and run.result["reason"] == "stop request"
        saved = latest_checkpoint(out)
        assert saved is not None and load_checkpoint(saved).meta["step"] == run.result["step"]
        assert not process_alive(engine)  # the launcher ended only after its engine did
        assert not run.running


@pytest.mark.slow
def test_a_reattached_panel_stops_the_trainer_through_its_stop_file(
    dataset: Path, tmp_path: Path, launcher: tuple[Path, Path]
) -> None:
    """Slicer restarted while a run trains: the new panel re-attaches by the run folder
    and its Stop uses the stop-request file recorded in process.json, not a signal
    (which a console-less Windows Slicer cannot send: taskkill without /F asks a window
    to close, and the trainer has none)."""
    script, pid_file = launcher
    out = tmp_path / "run"
    logic = TrainLogicMixin()
    with _no_orphans(pid_file):
        started = logic.startTraining(_panel(dataset, out), python=str(script))
        _wait_for(started, _first_loss)
        again = TrainingRun.reattach(out)
        assert again.job is None and again.pid == _child_pid(pid_file)
        again.stop()
        assert started.job.wait(timeout=90) == 0, started.job.log_tail(20)
        started.poll()
        assert started.result is not None and started.result["status"] == "stopped"
        assert started.result["reason"] == "stop request"  # the file, not SIGTERM
        assert not again.running


@pytest.mark.slow
def test_resume_is_refused_while_the_trainer_runs_and_kill_ends_the_engine(
    dataset: Path, tmp_path: Path, launcher: tuple[Path, Path]
) -> None:
    script, pid_file = launcher
    out = tmp_path / "run"
    logic = TrainLogicMixin()
    p = _panel(dataset, out)
    with _no_orphans(pid_file):
        run = logic.startTraining(p, python=str(script))
        _wait_for(run, _first_loss)
        engine = _child_pid(pid_file)
        # Resume while it trains: refused at once, in one line naming the live trainer.
        with pytest.raises(RunFolderBusy) as refused:
            logic.startTraining(p, resume=True, python=str(script))
        message = str(refused.value)
        assert "\n" not in message and f"pid {engine}" in message
        assert run.pid == engine != run.job.pid  # the panel follows the trainer, not the launcher
        # Kill reaches the engine although the launcher ignores signals and the engine
        # is outside the launcher's process group.
        run.kill()
        run.job.wait(timeout=60)
        assert not run.running
        assert _gone(engine), "the trainer survived Kill"
