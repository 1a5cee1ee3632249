"""Hostile cases around training run folders (issue 18: C, 4, 7, 8, 9).

Every case runs the real ``ipv2 train`` in a child process on a tiny dataset and checks
what a user sees (exit status, one line on stderr) and what is left on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_train import child_env, cli, events_of, make_dataset

from ipv2.io.checkpoints import load_checkpoint
from ipv2.runtime.run_lock import RunLock, holder_pid


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


def human(cmd: list[str]) -> list[str]:
    """The same command with human output (errors as one line on stderr)."""
    out = list(cmd)
    if "--events" in out:
        i = out.index("--events")
        del out[i : i + 2]
    return out


def resume_cmd(output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ipv2", "train", "--resume", "--output", str(output), *extra]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_resume_of_a_live_run_is_refused(tmp_path: Path) -> None:
    """C: a --resume beside a trainer that is still running must not start a second writer."""
    data = make_dataset(tmp_path / "ds")
    live = subprocess.Popen(
        cli(data, tmp_path / "run", "--epochs", "500", "--checkpoint-every-steps", "2"),
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert live.stdout is not None
        for line in live.stdout:
            if json.loads(line)["event"] == "checkpoint":
                break
        assert live.poll() is None, "the first trainer ended before the test could race it"
        second = run(resume_cmd(tmp_path / "run", "--max-steps", "100000"))
        assert live.poll() is None
        holder = holder_pid(tmp_path / "run")
    finally:
        live.terminate()
        live.communicate(timeout=120)
    assert second.returncode == 1, second.stderr
    message = one_line(second.stderr)
    assert "in use by another ipv2 process" in message and str(live.pid) in message
    assert holder == live.pid
    # Only the first trainer wrote: its log has one start, and one done.
    events = events_of(tmp_path / "run" / "events.jsonl")
    assert sum(e["event"] == "done" for e in events) == 1
    assert holder_pid(tmp_path / "run") is None  # released when the trainer ended


def test_new_run_into_a_folder_another_process_holds_is_refused(tmp_path: Path) -> None:
    """C: the gap between "the folder is empty" and "config.json is written" is locked."""
    data = make_dataset(tmp_path / "ds")
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(folder):  # another trainer that has just claimed the (still empty) folder
        out = run(human(cli(data, folder, "--max-steps", "2")))
        assert sorted(p.name for p in folder.iterdir()) == [".ipv2-run.lock"]
    assert out.returncode == 1, out.stderr
    assert "in use by another ipv2 process" in one_line(out.stderr)


def test_crop_larger_than_the_slices_leaves_no_run_folder(tmp_path: Path) -> None:
    """7: refused before anything is created, so the same folder can be used right after."""
    data = make_dataset(tmp_path / "ds")
    out = run(human(cli(data, tmp_path / "run", "--crop", "100000")))
    assert out.returncode == 1, out.stderr
    assert "--crop 100000 is larger than the training slices (32 x 32)" in one_line(out.stderr)
    assert not (tmp_path / "run").exists()


def test_resume_names_a_damaged_newest_checkpoint_and_uses_the_one_before(
    tmp_path: Path,
) -> None:
    """8: a resume from an older checkpoint than the newest is said, never silent."""
    data = make_dataset(tmp_path / "ds")
    first = run(cli(data, tmp_path / "run", "--max-steps", "4", "--checkpoint-every-steps", "2"))
    assert first.returncode == 0, first.stderr
    steps = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in steps] == ["step-000000002", "step-000000004"]
    state = steps[-1] / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])  # cut short, as by a failing disk
    out = run(resume_cmd(tmp_path / "run", "--max-steps", "6"))
    assert out.returncode == 0, out.stderr
    assert f"not resuming from {steps[-1]}" in out.stderr
    resumed = [line for line in out.stderr.splitlines() if line.startswith("resumed from")]
    assert resumed and "step-000000002 (step 2" in resumed[0]
    assert "skipped newer damaged step-000000004" in resumed[0]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "step-000000006").meta["step"] == 6


def test_resume_refuses_options_it_would_ignore(tmp_path: Path) -> None:
    """8: --lr, --batch-size, --model with --resume used to be dropped without a word."""
    data = make_dataset(tmp_path / "ds")
    assert run(cli(data, tmp_path / "run", "--max-steps", "2")).returncode == 0
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    out = run(resume_cmd(tmp_path / "run", "--lr", "0.5", "--batch-size", "4", "--model", "unet"))
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert "--model, --batch-size, --lr cannot change mid-run" in message
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before
    # Budgets may change: that is what a resume is for.
    assert run(resume_cmd(tmp_path / "run", "--max-steps", "3")).returncode == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "is not valid JSON (line 1, column 2"),
        (b"\xff\xfe\x00garbage", "is not UTF-8 text"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (b'{"data": "ds", "output": "run", "epochs": "many"}', "field 'epochs' is 'many'"),
        (b'{"data": "ds"}', "lacks ['output']"),
    ],
)
def test_a_damaged_config_is_one_line_naming_the_file(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """4: config.json that is not the engine's JSON: no JSONDecodeError traceback."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_bytes(content)
    out = run(resume_cmd(folder))
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert str(folder / "config.json") in message and expected in message, message
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


@contextlib.contextmanager
def tiny_filesystem(path: Path, kib: int) -> Iterator[list[str]]:
    """Mount a ``kib`` KiB tmpfs at ``path``; yields the command prefix to run inside it.

    As root a plain mount works (prefix ``[]``, visible to the test too); otherwise a user
    and mount namespace (``unshare``) gives a private one to the child alone.
    """
    path.mkdir()
    if os.geteuid() == 0:
        mount = ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)]
        if subprocess.run(mount, capture_output=True).returncode != 0:
            pytest.skip("mounting a small tmpfs is not permitted here")
        try:
            yield []
        finally:
            for _ in range(5):
                if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
        return
    unshare = shutil.which("unshare")
    script = f'mount -t tmpfs -o size={kib}k tmpfs {path} && exec "$@"'
    prefix = [str(unshare), "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    if unshare is None or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs (needs root or unprivileged user namespaces)")
    yield prefix


def test_disk_full_during_training_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    """9: a full disk mid-run: "disk full" in one line, the last good checkpoint loads."""
    data = make_dataset(tmp_path / "ds")
    small = tmp_path / "small"
    # 3 MB: room for two checkpoints of the tiny FFM, not for the third.
    with tiny_filesystem(small, 3000) as prefix:
        cmd = human(cli(data, small / "run", "--epochs", "500", "--checkpoint-every-steps", "1"))
        out = run([*prefix, *cmd])
        assert out.returncode == 1, out.stderr[-2000:]
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: disk full"), last
        if not prefix:  # the tmpfs is visible to this process only when mounted directly
            kept = sorted((small / "run" / "checkpoints").glob("step-*"))
            assert kept, "no checkpoint fitted at all: the test filesystem is too small"
            load_checkpoint(kept[-1])
            leftovers = [
                p for p in (small / "run" / "checkpoints").iterdir() if ".partial" in p.name
            ]
            assert not leftovers


def test_disk_full_during_build_dataset_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """9: build-dataset on a full disk: "disk full" in one line, no partial dataset left."""
    from ipv2.io.volumes import write_volume
    from ipv2.phantom import make_phantom

    rows = []
    for i in range(2):
        case = make_phantom(size=64, slices=8, seed=30 + i)
        files = {}
        for kind, vol in (("uldct", case.uldct), ("ndct", case.ndct)):
            files[kind] = str(tmp_path / f"{kind}{i}.nrrd")
            write_volume(vol, files[kind])
        rows.append({**files, "patient": f"P{i}", "case": f"case{i}"})
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    small = tmp_path / "small"
    with tiny_filesystem(small, 120) as prefix:
        cmd = [sys.executable, "-m", "ipv2", "build-dataset", str(tmp_path / "pairs.json"),
               "--out", str(small / "ds"), "--strategy", "ipv1"]  # fmt: skip
        out = run([*prefix, *cmd])
        assert out.returncode == 1, out.stderr[-2000:]
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        assert out.stderr.strip().splitlines()[-1].startswith("error: disk full"), out.stderr
        if not prefix:
            assert list(small.iterdir()) == []


def test_a_run_started_by_the_previous_version_resumes(tmp_path: Path) -> None:
    """config.json written before the weak denoiser's rename (field "weak") still loads."""
    data = make_dataset(tmp_path / "ds")
    assert run(cli(data, tmp_path / "run", "--max-steps", "2")).returncode == 0
    config = tmp_path / "run" / "config.json"
    fields = json.loads(config.read_text())
    fields["weak"] = fields.pop("weak_denoiser")
    config.write_text(json.dumps(fields))
    out = run(resume_cmd(tmp_path / "run", "--max-steps", "3"))
    assert out.returncode == 0, out.stderr
