"""Jobs: real child processes, real signals, real process trees."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ipv2.runtime.jobs import Job, read_event_log

CHILD = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    mode = sys.argv[1]
    def emit(**kw):
        print(json.dumps(kw), flush=True)
    if mode == "events":
        emit(event="progress", stage="work", done=1, total=2)
        print("not json at all", flush=True)
        print('{"broken": ', flush=True)
        print("a warning on stderr", file=sys.stderr, flush=True)
        emit(event="metric", name="loss", value=0.5, step=1)
        emit(event="done", status="ok", out="x")
    elif mode == "tree":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        emit(event="log", level="info", message=f"grandchild {grandchild.pid}")
        time.sleep(60)
    elif mode == "graceful":
        def on_term(signum, frame):
            emit(event="done", status="stopped")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        emit(event="log", level="info", message="ready")
        time.sleep(60)
    elif mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        emit(event="log", level="info", message="ready")
        time.sleep(60)
    elif mode == "fail":
        emit(event="error", message="bad input: missing file")
        sys.exit(1)
    """
)


@pytest.fixture()
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def _until(job: Job, predicate, timeout: float = 20.0) -> list[dict]:  # type: ignore[no-untyped-def]
    seen: list[dict] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        seen += job.poll()
        if predicate(seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"condition not reached; events so far: {seen}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state where /proc exists.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_events_parse_and_malformed_lines_become_logs(child: Path) -> None:
    job = Job([sys.executable, str(child), "events"]).start()
    assert job.wait(timeout=30) == 0
    events = job.poll()
    kinds = [e["event"] for e in events]
    assert kinds.count("log") == 3  # the plain line, the broken JSON, the stderr line
    assert {"progress", "metric", "done"} <= set(kinds)
    assert job.result == {"event": "done", "status": "ok", "out": "x"}
    assert job.last_progress is not None and job.last_progress["done"] == 1
    tail = job.log_tail()
    assert "not json at all" in tail and "a warning on stderr" in tail
    assert job.poll() == []  # drained


def test_poll_never_blocks(child: Path) -> None:
    job = Job([sys.executable, str(child), "graceful"]).start()
    t0 = time.monotonic()
    job.poll()
    assert time.monotonic() - t0 < 0.5
    job.cancel(grace=5, block=True)


@pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX process groups")
def test_cancel_kills_the_whole_process_tree(child: Path) -> None:
    job = Job([sys.executable, str(child), "tree"]).start()
    events = _until(job, lambda ev: any("grandchild" in str(e.get("message")) for e in ev))
    grandchild = int(
        next(e for e in events if "grandchild" in str(e.get("message")))["message"].split()[1]
    )
    assert _alive(grandchild)
    job.cancel(grace=2, block=True)
    assert not job.running
    end = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(grandchild), "grandchild survived the cancel"


@pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")
def test_stop_is_graceful_when_the_child_handles_it(child: Path) -> None:
    job = Job([sys.executable, str(child), "graceful"]).start()
    _until(job, lambda ev: any(e.get("message") == "ready" for e in ev))
    job.stop()
    assert job.wait(timeout=20) == 0
    assert job.result is not None and job.result["status"] == "stopped"


@pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")
def test_cancel_escalates_to_kill_after_grace(child: Path) -> None:
    job = Job([sys.executable, str(child), "stubborn"]).start()
    _until(job, lambda ev: any(e.get("message") == "ready" for e in ev))
    t0 = time.monotonic()
    job.cancel(grace=0.5, block=True)
    assert job.returncode is not None and job.returncode < 0  # killed by a signal
    assert time.monotonic() - t0 < 10


def test_error_event_and_exit_status_are_kept(child: Path) -> None:
    job = Job([sys.executable, str(child), "fail"]).start()
    assert job.wait(timeout=30) == 1
    job.poll()
    assert job.error_message == "bad input: missing file"
    assert job.log_tail()[-1] == "error: bad input: missing file"


def test_engine_job_runs_the_real_cli(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    job = Job.engine(["phantom", "--out", str(out), "--size", "32", "--slices", "1"]).start()
    assert job.wait(timeout=120) == 0, job.log_tail()
    events = job.poll()
    assert events[-1]["event"] == "done" and events[-1]["status"] == "ok"
    assert (out / "case000" / "uldct.nrrd").exists()


def test_event_log_replay_skips_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    lines = [json.dumps({"event": "metric", "name": "loss", "value": v}) for v in (3.0, 2.0)]
    log.write_text("\n".join(lines) + '\n{"event": "metr')
    events = read_event_log(log)
    assert [e["value"] for e in events] == [3.0, 2.0]
    assert read_event_log(tmp_path / "absent.jsonl") == []


def test_detached_job_keeps_draining_without_queuing(tmp_path: Path) -> None:
    script = tmp_path / "chatty.py"
    script.write_text(
        "import json, time\n"
        "for i in range(3000):\n"
        "    print(json.dumps({'event': 'progress', 'stage': 's', 'done': i, 'total': 3000}), flush=True)\n"
    )
    job = Job([sys.executable, str(script)]).start()
    job.detach()
    assert job.wait(timeout=60) == 0  # would hang on a full pipe if nobody read it
    assert job.poll() == []
    assert job.last_progress is not None and job.last_progress["done"] == 2999


def test_jobs_open_no_console_window_on_windows() -> None:
    """Issue 13, item 11: each job was a console window on Windows. The flags are the
    Win32 values (0x08000000 CREATE_NO_WINDOW, 0x200 CREATE_NEW_PROCESS_GROUP)."""
    from ipv2.runtime.jobs import popen_options

    windows = popen_options(windows=True)
    assert windows["creationflags"] & 0x08000000 and windows["creationflags"] & 0x200
    assert "start_new_session" not in windows
    assert popen_options(windows=False) == {"start_new_session": True}
