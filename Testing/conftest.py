"""Shared fixtures: the real TCIA series (skipped when absent) and output folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TCIA_DICOM = Path(
    os.environ.get("IPV2_TCIA_DIR", REPO.parent / "shared/data/tcia-lung-pet-ct-dx-A0001/dicom")
)
# Credit: The Cancer Imaging Archive, Lung-PET-CT-Dx collection, subject Lung_Dx-A0001
# (Li P. et al., 2020, doi:10.7937/TCIA.2020.NNC2-0461), CC BY 4.0.
TCIA_CREDIT = "TCIA Lung-PET-CT-Dx, Lung_Dx-A0001 (Li et al. 2020, CC BY 4.0)"

# Tests share the cores with whatever else runs, and pytest-xdist runs one worker per
# core (pyproject.toml): one thread per worker keeps torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.fixture(scope="session")
def tcia_dir() -> Path:
    """The real chest CT DICOM folder; tests that need it skip with the reason when absent."""
    if not TCIA_DICOM.is_dir() or not any(TCIA_DICOM.glob("*.dcm")):
        pytest.skip(
            f"real-data test: {TCIA_CREDIT} DICOM series not found at {TCIA_DICOM} "
            "(set IPV2_TCIA_DIR to its dicom folder to run it)"
        )
    return TCIA_DICOM


@pytest.fixture(scope="session")
def tcia_volume(tcia_dir: Path):  # type: ignore[no-untyped-def]
    from ipv2.io.volumes import read_volume

    return read_volume(tcia_dir)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave images worth looking at (montages, previews)."""
    path = Path(os.environ.get("IPV2_TEST_ARTIFACTS", REPO / "test-output"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture()
def scene():  # type: ignore[no-untyped-def]
    """A real, empty MRML scene (slicer-core) set as ``slicer.mrmlScene``."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)
