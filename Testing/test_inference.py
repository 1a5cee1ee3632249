"""Volume inference: geometry, padding, batching, cancel, out-of-memory fallback, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import tiny_checkpoint, tiny_training_run

from ipv2.core.devices import resolve_device
from ipv2.core.errors import CancelledError
from ipv2.inference.denoise import DenoiseOptions, SliceRunner, denoise_array, denoise_volume
from ipv2.io.checkpoints import load_checkpoint
from ipv2.io.volumes import read_volume, write_volume
from ipv2.phantom import make_phantom


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("m") / "ffm")


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny FFM trained for a few steps by the real training loop on phantom data."""
    from ipv2.training import latest_checkpoint

    root = tmp_path_factory.mktemp("trained")
    tiny_training_run(root, max_steps=4, checkpoint_every_steps=4)
    found = latest_checkpoint(root / "run")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def phantom_volume():  # type: ignore[no-untyped-def]
    return make_phantom(size=64, slices=6, seed=2, padding_value=-3024).uldct


def test_sixteen_slice_phantom_keeps_geometry_with_a_trained_model(
    trained_model: Path, tmp_path: Path
) -> None:
    """Issue #6: 16 slices of 128 x 128, a tiny trained checkpoint, the input untouched."""
    vol = make_phantom(size=128, slices=16, seed=5, padding_value=-2048).uldct
    src = write_volume(vol, tmp_path / "u.nrrd")
    before = src.read_bytes()
    res = _cli(
        "denoise",
        "--input",
        str(src),
        "--model",
        str(trained_model),
        "--out",
        str(tmp_path / "d.nrrd"),
        "--steps",
        "2",
        "--device",
        "cpu",
    )
    assert res.returncode == 0, res.stderr
    out = read_volume(tmp_path / "d.nrrd")
    assert out.shape == (16, 128, 128)
    assert out.spacing == vol.spacing and out.origin == vol.origin
    np.testing.assert_array_equal(out.direction, vol.direction)
    np.testing.assert_array_equal(out.array[vol.array == -2048], -2048)
    assert src.read_bytes() == before


def test_cpu_results_do_not_depend_on_the_batch_and_match_the_plain_form(
    trained_model: Path,
) -> None:
    """The FFM's CPU form runs each slice alone: batch 1 and batch 4 agree bit for bit.

    The plain form (the authors' order of operations) computes the same function: most
    pixels agree within rounding. Not all: the phase branch's atan2 jumps by 2*pi where a
    spectrum bin sits on the negative real axis, and this barely trained model has such
    bins; measured, the plain form itself moves by up to 25 HU between batch 1 and 4
    here, which is why the CPU form computes each slice alone."""
    from ipv2.models.ffm import FFM

    loaded = load_checkpoint(trained_model)
    assert isinstance(loaded.model, FFM)
    hu = make_phantom(size=64, slices=5, seed=3).uldct.array
    one, _ = denoise_array(hu, loaded, DenoiseOptions(steps=2, batch_size=1))
    four, _ = denoise_array(hu, loaded, DenoiseOptions(steps=2, batch_size=4))
    np.testing.assert_array_equal(one, four)
    loaded.model.set_fast(False)
    plain, _ = denoise_array(hu, loaded, DenoiseOptions(steps=2, batch_size=1))
    assert float(np.median(np.abs(one - plain))) < 0.01  # HU


def test_geometry_and_padding_are_kept(model_dir: Path, phantom_volume) -> None:  # type: ignore[no-untyped-def]
    loaded = load_checkpoint(model_dir)
    out, info = denoise_volume(phantom_volume, loaded, DenoiseOptions(steps=2, batch_size=8))
    assert out.shape == phantom_volume.shape
    assert out.grid_differences(phantom_volume) == []
    assert out.origin == phantom_volume.origin
    pad = phantom_volume.array == -3024
    assert pad.any()
    np.testing.assert_array_equal(out.array[pad], -3024)
    assert not np.array_equal(out.array[~pad], phantom_volume.array[~pad])
    assert info.slices == 6 and info.steps == 2 and info.device == "cpu"


def test_out_of_window_values_keep_their_offset(model_dir: Path) -> None:
    """Bone above the window's top gets the network's change added, not clipped."""
    loaded = load_checkpoint(model_dir)
    hu = np.full((1, 32, 32), -800.0, np.float32)
    hu[0, 10:20, 10:20] = 2500.0  # above the model's 1024 HU window
    out, _ = denoise_array(hu, loaded, DenoiseOptions(steps=1))
    assert out[0, 12:18, 12:18].min() > 1024 + 500


def test_progress_counts_steps_and_ends_at_total(model_dir: Path) -> None:
    loaded = load_checkpoint(model_dir)
    seen: list[tuple[int, int]] = []
    denoise_array(
        np.full((5, 32, 32), -700.0),
        loaded,
        DenoiseOptions(steps=3, batch_size=2),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (15, 15)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(set(seen)) == len(seen), f"a progress event repeated: {seen}"


def test_cancel_after_first_batch_returns_nothing(model_dir: Path) -> None:
    loaded = load_checkpoint(model_dir)
    batches: list[int] = []

    def progress(done: int, total: int) -> None:
        batches.append(done)

    with pytest.raises(CancelledError):
        denoise_array(
            np.full((8, 32, 32), -700.0),
            loaded,
            DenoiseOptions(steps=1, batch_size=2),
            progress=progress,
            cancel=lambda: len(batches) >= 2,
        )
    assert max(batches) < 8


class _OomOnceRunner(SliceRunner):
    """Test double for the one path real memory cannot exercise here: CUDA OOM."""

    def __init__(self, *args, limit: int, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.limit = limit
        self.sizes: list[int] = []

    def run(self, unit, start, stop, on_step, cancel):  # type: ignore[no-untyped-def]
        self.sizes.append(stop - start)
        if stop - start > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run(unit, start, stop, on_step=on_step, cancel=cancel)


def test_out_of_memory_halves_the_batch_and_finishes(model_dir: Path) -> None:
    loaded = load_checkpoint(model_dir)
    runner = _OomOnceRunner(loaded, torch.device("cpu"), 1, False, limit=2)
    hu = np.random.default_rng(0).normal(-700, 50, (7, 32, 32)).astype(np.float32)
    out, info = denoise_array(hu, loaded, DenoiseOptions(steps=1, batch_size=8), runner=runner)
    reference, _ = denoise_array(hu, loaded, DenoiseOptions(steps=1, batch_size=7))
    assert runner.sizes[:3] == [7, 4, 2]
    assert info.oom_retries == 2 and info.batch_size == 2
    np.testing.assert_allclose(out, reference, atol=0.05)  # HU; batch-size rounding


def test_cpu_allocator_failure_is_out_of_memory_too(model_dir: Path) -> None:
    """The CPU allocator's "can't allocate memory" halves the batch like CUDA's OOM."""

    class CpuOomRunner(_OomOnceRunner):
        def run(self, unit, start, stop, on_step, cancel):  # type: ignore[no-untyped-def]
            if stop - start > self.limit:
                self.sizes.append(stop - start)
                raise RuntimeError(
                    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                    "allocate memory: you tried to allocate 160000000000 bytes."
                )
            return super().run(unit, start, stop, on_step=on_step, cancel=cancel)

    loaded = load_checkpoint(model_dir)
    runner = CpuOomRunner(loaded, torch.device("cpu"), 1, False, limit=1)
    hu = np.random.default_rng(0).normal(-700, 50, (3, 32, 32)).astype(np.float32)
    _, info = denoise_array(hu, loaded, DenoiseOptions(steps=1, batch_size=4), runner=runner)
    assert info.oom_retries == 2 and info.batch_size == 1


def test_slice_memory_is_estimated_before_any_allocation(model_dir: Path) -> None:
    from ipv2.core.errors import InputError
    from ipv2.inference.denoise import auto_batch_size, check_slice_fits

    model = load_checkpoint(model_dir).model
    cpu = torch.device("cpu")
    check_slice_fits(model, (512, 512), cpu)
    assert auto_batch_size(model, (64, 64), cpu, half=False) == 4
    assert auto_batch_size(model, (512, 512), cpu, half=False) == 1  # cache-bound on a CPU
    # 100000 x 100000 pixels: terabytes of feature maps, refused from the estimate alone.
    assert auto_batch_size(model, (100000, 100000), cpu, half=False) == 1
    with pytest.raises(InputError, match=r"one 100000x100000 slice .* GiB of feature maps"):
        check_slice_fits(model, (100000, 100000), cpu)


def test_unavailable_device_is_refused_clearly() -> None:
    from ipv2.core.errors import InputError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="no usable CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipv2", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_writes_volume_and_sidecar_never_over_input(
    model_dir: Path, phantom_volume, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    src = write_volume(phantom_volume, tmp_path / "u.nrrd")
    before = src.read_bytes()
    res = _cli(
        "denoise",
        "--input",
        str(src),
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "d.nrrd"),
        "--steps",
        "1",
        "--dtype",
        "int16",
    )
    assert res.returncode == 0, res.stderr
    out = read_volume(tmp_path / "d.nrrd")
    assert out.shape == phantom_volume.shape
    np.testing.assert_allclose(out.spacing, phantom_volume.spacing)
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["steps"] == 1 and side["arch"] == "ffm" and side["seconds_per_slice"] > 0
    assert src.read_bytes() == before
    again = _cli(
        "denoise", "--input", str(src), "--model", str(model_dir), "--out", str(tmp_path / "d.nrrd")
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    onto = _cli("denoise", "--input", str(src), "--model", str(model_dir), "--out", str(src))
    assert onto.returncode == 1


def test_cli_refuses_a_pickle_model(tmp_path: Path, phantom_volume) -> None:  # type: ignore[no-untyped-def]
    src = write_volume(phantom_volume, tmp_path / "u.nrrd")
    fake = tmp_path / "model.pth"
    fake.write_bytes(b"\x80\x04\x95 pickle")
    res = _cli(
        "denoise", "--input", str(src), "--model", str(fake), "--out", str(tmp_path / "d.nrrd")
    )
    assert res.returncode == 1
    assert not (tmp_path / "d.nrrd").exists()


def test_cli_cancel_leaves_no_partial_output(trained_model: Path, tmp_path: Path) -> None:
    from ipv2.runtime.jobs import Job

    vol = make_phantom(size=128, slices=16, seed=1).uldct
    src = write_volume(vol, tmp_path / "u.nrrd")
    out = tmp_path / "d.nrrd"
    job = Job.engine(
        [
            "denoise",
            "--input",
            str(src),
            "--model",
            str(trained_model),
            "--out",
            str(out),
            "--steps",
            "10",
            "--batch-size",
            "4",
            "--device",
            "cpu",
        ]
    ).start()
    end = time.monotonic() + 60
    while time.monotonic() < end and not any(
        e["event"] == "progress" and e["done"] >= 4 * 10
        for e in job.poll()  # first batch done
    ):
        time.sleep(0.05)
    job.cancel(grace=20, block=True)
    events = job.poll()
    assert job.result is not None and job.result["status"] == "cancelled", (job.log_tail(), events)
    assert job.returncode == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.nrrd"]


def test_cli_png_folder_in_png_folder_out(model_dir: Path, tmp_path: Path) -> None:
    from ipv2.io.png_layout import write_png_slice

    vol = make_phantom(size=64, slices=3, seed=1).uldct
    folder = tmp_path / "lq"
    folder.mkdir()
    for k in range(3):
        write_png_slice(vol.array[k], folder / f"s{k:02d}.png")
    res = _cli(
        "denoise",
        "--input",
        str(folder),
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path / "den"),
        "--steps",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "den").iterdir()) == [
        "denoise.json",
        "s00.png",
        "s01.png",
        "s02.png",
    ]
