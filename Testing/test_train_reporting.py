"""Training that always reports (issue 16, items 1, 2, 3 and 9): what a user sees.

Real ``ipv2 train`` children on a tiny dataset: the validation bar, the closing summary
with the checkpoint folders and the resume command, the default checkpoint cadence, a
stop that interrupts a validation, loss and validation lines that agree on the epoch and
never share a line with a bar; plus the budget arithmetic and the thread default.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import TINY, child_env, events_of, make_dataset

from ipv2.core.events import ConsoleReporter
from ipv2.training.budget import SHARE, plan_validation


def train_cmd(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ipv2", "train", "--data", str(data), "--output", str(output),
        *TINY, "--batch-size", "2", "--lr", "1e-3", *extra,
    ]  # fmt: skip


def test_human_output_names_the_checkpoints_and_never_mixes_bars_into_lines(
    tmp_path: Path,
) -> None:
    """Items 1, 2, 9: validation progress, whole lines, one epoch count, the summary."""
    data = make_dataset(tmp_path / "ds")  # 8 train slices: 4 steps per epoch
    run = tmp_path / "run"
    out = subprocess.run(
        train_cmd(data, run, "--epochs", "3", "--log-every", "2", "--val-limit", "2",
                  "--threads", "1"),
        capture_output=True, text=True, env=child_env(), timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    err = out.stderr
    # Not a terminal: no carriage returns or redraws between the lines.
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    loss = {}
    for line in lines:
        if line.startswith("loss"):
            m = re.fullmatch(r"loss = \S+ step=(\d+) epoch=(\d+) images_per_s=\S+", line)
            assert m, line
            loss[int(m[1])] = int(m[2])
    val = [re.fullmatch(r"val_mae_hu = \S+ step=(\d+) epoch=(\d+)", x) for x in lines]
    val_steps = {int(m[1]): int(m[2]) for m in val if m}
    assert val_steps, err
    # The loss of an epoch's last step and the validation after it name the same epoch.
    assert all(loss[step] == epoch for step, epoch in val_steps.items()), (loss, val_steps)
    assert loss[4] == 1 and loss[12] == 3
    assert "validate: 2/2 (100%)" in lines
    # Default cadence: the first epoch end, then the clock (10 min), and the end; not
    # one folder per epoch.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000000004",
        "step-000000012",
    ]
    # The summary names the folders and the command that continues the run.
    assert f"final model: {run / 'final'}" in lines
    assert any(x.startswith(f"best checkpoint: {run / 'best'} (validation MAE ") for x in lines)
    assert f"last checkpoint: {run / 'checkpoints' / 'step-000000012'}" in lines
    assert f"to train longer: ipv2 train --resume --output {run} --epochs N (N > 3)" in lines
    # ... and so does the done event, with the validation shown slice by slice.
    events = events_of(run / "events.jsonl")
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "ok"
    assert done["best"] == str(run / "best") and done["checkpoint"] == str(run / "final")
    assert done["last"] == str(run / "checkpoints" / "step-000000012")
    assert done["resume_command"] == f"ipv2 train --resume --output {run}"
    shown = [(e["done"], e["total"]) for e in events if e.get("stage") == "validate"]
    assert shown[:3] == [(0, 2), (1, 2), (2, 2)], shown
    assert all(e.get("parent") == "train" for e in events if e.get("stage") == "validate")


def test_sigterm_during_validation_stops_it_and_checkpoints(tmp_path: Path) -> None:
    """Item 1: a stop no longer waits for a whole validation to finish."""
    data = make_dataset(tmp_path / "ds", size=64, slices=12)  # 24 train, 12 val slices
    run = tmp_path / "run"
    cmd = train_cmd(data, run, "--batch-size", "8", "--epochs", "50", "--val-every", "1",
                    "--val-limit", "0", "--steps", "40", "--threads", "1", "--events", "jsonl")  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env())
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["stage"] == "validate" and event["done"] >= 1:
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) == 130
    events = events_of(run / "events.jsonl")
    shown = [e for e in events if e.get("stage") == "validate"]
    assert shown and shown[-1]["total"] == 12 and max(e["done"] for e in shown) < 12
    assert not [e for e in events if str(e.get("name", "")).startswith("val_")]
    assert any("interrupted after" in str(e.get("message", "")) for e in events)
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "stopped"
    assert str(done["reason"]).startswith("signal SIGTERM")
    saved = sorted((run / "checkpoints").iterdir())
    assert saved[-1].name == f"step-{done['step']:09d}" and done["last"] == str(saved[-1])
    assert done["resume_command"] == f"ipv2 train --resume --output {run}"
    assert "best" not in done  # no validation finished


def test_validation_budget_holds_the_share_and_explicit_values_win() -> None:
    """Item 1: the issue's CPU (16 s per slice, 1 s per step, 6 steps per epoch)."""
    cpu = plan_validation(
        available=24, slice_seconds=16.0, epoch_seconds=6.0, every=None, limit=None,
        epochs_left=24,
    )  # fmt: skip
    assert cpu.share <= SHARE and cpu.slices >= 4 and set(cpu.chosen) == {"every", "slices"}
    gpu = plan_validation(
        available=100, slice_seconds=0.5, epoch_seconds=50.0, every=None, limit=None,
        epochs_left=199,
    )  # fmt: skip
    assert gpu.slices == 32 and gpu.share <= SHARE and gpu.every <= 2
    given_every = plan_validation(
        available=24, slice_seconds=16.0, epoch_seconds=600.0, every=1, limit=None,
        epochs_left=10,
    )  # fmt: skip
    assert (
        given_every.every == 1 and given_every.share <= SHARE and given_every.chosen == ("slices",)
    )
    given_limit = plan_validation(
        available=24, slice_seconds=16.0, epoch_seconds=6.0, every=None, limit=0, epochs_left=10
    )
    assert given_limit.slices == 24 and given_limit.share <= SHARE
    both = plan_validation(
        available=24, slice_seconds=16.0, epoch_seconds=6.0, every=1, limit=3, epochs_left=10
    )
    assert (both.every, both.slices, both.chosen) == (1, 3, ())
    assert "(chosen)" in cpu.describe() and "(as given)" in both.describe()


def test_default_threads_follow_the_cores_this_process_may_use() -> None:
    """Item 3: one core allowed (affinity) means one intra-op and at most one inter-op thread."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity and at least two cores")
    core = min(os.sched_getaffinity(0))
    code = (
        f"import os; os.sched_setaffinity(0, {{{core}}}); import torch; "
        "from ipv2.training.loop import apply_torch_threads; n = apply_torch_threads(0); "
        "print(n, torch.get_num_threads(), torch.get_num_interop_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "IPV2_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
    env["LOCAL_WORLD_SIZE"] = "2"  # torchrun: two ranks share the cores
    code = code.replace(f"{{{core}}}", str(set(sorted(os.sched_getaffinity(0))[:2])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["1", "1"]


def test_console_bars_nest_validation_inside_training() -> None:
    """Item 9 on a terminal: the validation bar opens under the training bar and goes."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with open(slave, "w", closefd=True) as stream:
        reporter = ConsoleReporter(stream=stream)
        assert reporter.bars
        reporter.progress("train", 0, 10)
        reporter.progress("train", 5, 10)
        reporter.metric("loss", 0.5, step=5, epoch=1)
        for done in range(4):
            reporter.progress("validate", done, 3, parent="train")
        reporter.progress("train", 10, 10)
        reporter.close()
    text = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    screen = text.decode()
    assert "loss = 0.5 step=5 epoch=1\r\n" in screen  # a whole line of its own
    first_validate = screen.index("validate")  # (tqdm redraws at most every 0.1 s)
    # The training bar was not closed and restarted from 0 for the validation.
    after = screen[first_validate:]
    assert not re.search(r"\b0/10", after) and "10/10" in after


def test_console_plain_progress_outside_a_terminal(tmp_path: Path) -> None:
    """Item 9 in a log file: whole lines at each tenth, nothing for the bar to redraw."""
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        reporter = ConsoleReporter(stream=stream)
        assert not reporter.bars
        for done in range(0, 21, 2):
            reporter.progress("train", done, 20)
            if done == 10:
                reporter.metric("loss", 0.25, step=10, epoch=1)
                reporter.progress("validate", 0, 2, parent="train")
                reporter.progress("validate", 2, 2, parent="train")
        reporter.close()
    lines = path.read_text().splitlines()
    assert lines[:7] == [
        "train: 0/20 (0%)",
        "train: 2/20 (10%)",
        "train: 4/20 (20%)",
        "train: 6/20 (30%)",
        "train: 8/20 (40%)",
        "train: 10/20 (50%)",
        "loss = 0.25 step=10 epoch=1",
    ]
    assert lines[7:9] == ["validate: 0/2 (0%)", "validate: 2/2 (100%)"]
    assert lines[-1] == "train: 20/20 (100%)"
