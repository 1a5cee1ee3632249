"""Random byte damage to a valid NRRD and a valid model folder (issue 18).

Whatever the damage, reading either must end in a value or a one-line input error:
never a crash of the process (a signal such as SIGSEGV from a native reader), never a
traceback, never a new file. Hypothesis draws batches of corruptions; each batch is read
by one child process (interpreter start-up is the costly part), which reports one line
per file, so a crash still names the file that caused it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipv2.core.volume import Volume
from ipv2.io.volumes import write_volume
from ipv2.slicer.selftest import tiny_checkpoint

# One child per batch; it prints "<index> ok" or "<index> error: <one line>" per file
# ("BUG" for a traceback, an empty or a multi-line message).
READER = r"""
import sys, traceback
from ipv2.core.errors import IPv2Error
kind, paths = sys.argv[1], sys.argv[2:]
if kind == "volume":
    from ipv2.io.volumes import read_volume as read
else:
    from ipv2.io.checkpoints import load_checkpoint as read
for i, path in enumerate(paths):
    print(i, "start", flush=True)
    try:
        read(path)
    except IPv2Error as exc:
        message = str(exc)
        tag = "error:" if message.strip() and "\n" not in message else "BUG"
        print(i, tag, message.replace("\n", "\\n"), flush=True)
    except Exception:
        print(i, "BUG", traceback.format_exc().replace("\n", "\\n"), flush=True)
    else:
        print(i, "ok", flush=True)
"""

# (how, in the header only?, where as a fraction in 1/1000, a byte or a length)
Damage = tuple[str, bool, int, int]

damage = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "zero-run", "digit"]),
    st.booleans(),
    st.integers(0, 999),
    st.integers(0, 255),
)


def header_length(data: bytes) -> int:
    """Bytes of the part that describes the rest: NRRD's text header, safetensors' JSON."""
    if data.startswith(b"NRRD"):
        return data.index(b"\n\n") + 2
    if not data.lstrip().startswith(b"{"):  # safetensors: u64 length, then JSON
        return 8 + int.from_bytes(data[:8], "little")
    return len(data)


def damaged(data: bytes, damage: Damage) -> bytes:
    how, in_header, where, value = damage
    span = header_length(data) if in_header else len(data)
    pos = min(len(data) - 1, span * where // 1000)
    if how == "flip":
        return data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1 :]
    if how == "truncate":
        return data[:pos]
    if how == "insert":
        return data[:pos] + bytes([value]) * (1 + value % 7) + data[pos:]
    if how == "zero-run":
        return data[:pos] + bytes(value + 1) + data[pos + value + 1 :]
    # "digit": make a number in a text header larger (sizes, counts, offsets)
    return data[:pos] + b"9" * (1 + value % 9) + data[pos:]


def read_in_child(kind: str, paths: list[Path], cwd: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", READER, kind, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "nothing"
    assert out.returncode == 0, f"reader crashed ({out.returncode}) at: {last}\n{out.stderr}"
    assert out.stderr == "", f"the reader wrote to stderr:\n{out.stderr[-2000:]}"
    results = [line for line in out.stdout.splitlines() if line.split()[1] != "start"]
    bugs = [line for line in results if line.split()[1] == "BUG"]
    assert not bugs, "\n".join(b.replace("\\n", "\n") for b in bugs)
    assert len(results) == len(paths)
    return results


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(damage, min_size=40, max_size=40))
def test_damaged_nrrd_reads_or_fails_in_one_line(tmp_path_factory, batch: list[Damage]) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("nrrd")
    rng = np.random.default_rng(0)
    original = folder / "valid.nrrd"
    volume = Volume(
        rng.normal(-500, 300, (4, 16, 16)).astype(np.float32),
        spacing=(0.7, 0.7, 2.5),
    )
    write_volume(volume, original)
    data = original.read_bytes()
    paths = []
    for i, one in enumerate(batch):
        path = folder / f"case{i}.nrrd"
        path.write_bytes(damaged(data, one))
        paths.append(path)
    before = tree(folder)
    results = read_in_child("volume", paths, folder)
    assert tree(folder) == before
    assert any(r.split()[1] == "error:" for r in results)  # the damage did reach the reader


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(st.tuples(st.sampled_from(["model.json", "model.safetensors"]), damage),
                      min_size=20, max_size=20))  # fmt: skip
def test_damaged_model_folder_loads_or_fails_in_one_line(tmp_path_factory, batch) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("models")
    valid = tiny_checkpoint(folder / "valid", arch="redcnn")
    paths = []
    for i, (name, one) in enumerate(batch):
        copy = folder / f"case{i}"
        copy.mkdir()
        for f in valid.iterdir():
            body = f.read_bytes()
            (copy / f.name).write_bytes(damaged(body, one) if f.name == name else body)
        paths.append(copy)
    before = tree(folder)
    results = read_in_child("model", paths, folder)
    assert tree(folder) == before
    assert any(r.split()[1] == "error:" for r in results)
    json.loads((valid / "model.json").read_text())  # the original stays intact
