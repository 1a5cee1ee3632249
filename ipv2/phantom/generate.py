"""Assemble a phantom case: render both phases, add noise, collect masks and geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.core.errors import InputError
from ipv2.core.volume import Volume
from ipv2.phantom.anatomy import CHEST_HEIGHT_MM, FOV_MM, Chest, draw_chest, render
from ipv2.phantom.breathing import Breathing
from ipv2.phantom.noise import NoiseModel, add_scan_noise
from ipv2.simulation.params import check_dose_fraction

B = npt.NDArray[np.bool_]
F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PhantomMasks:
    """True regions of one breathing phase, bool arrays (z, y, x)."""

    body: B
    lung: B
    background: B
    table: B

    def label_map(self) -> npt.NDArray[np.uint8]:
        """0 background/table, 1 body, 2 lung: the purify label-map convention."""
        out = np.zeros(self.body.shape, dtype=np.uint8)
        out[self.body] = 1
        out[self.lung] = 2
        return out


@dataclass(frozen=True)
class PhantomCase:
    """One paired case with its ground truth."""

    clean_ref: Volume
    clean_ld: Volume
    ndct: Volume
    uldct: Volume
    masks_ref: PhantomMasks
    masks_ld: PhantomMasks
    displacement: npt.NDArray[np.float32]  # (2, z, y, x): (dy, dx) in pixels, pull-back
    seed: int
    params: dict[str, object] = field(default_factory=dict)


def make_phantom(
    size: int = 128,
    slices: int = 16,
    seed: int = 0,
    *,
    uldct_dose: float = 0.02,
    ndct_dose: float = 1.0,
    breathing_mm: float = 8.0,
    padding_value: float | None = None,
    supersample: int = 2,
    noise: NoiseModel | None = None,
) -> PhantomCase:
    """Render a paired case; the same arguments always give the same arrays.

    ``padding_value`` fills the corners outside the reconstruction circle like a real
    scanner (e.g. -2048 or -3024); None leaves a full square field of view.
    """
    if not 32 <= size <= 1024 or size % 2:
        raise InputError(f"phantom size must be an even number of pixels in 32..1024, got {size}")
    if not 1 <= slices <= 512:
        raise InputError(f"phantom slices must be in 1..512, got {slices}")
    check_dose_fraction(uldct_dose)  # the simulation's one bound and message
    check_dose_fraction(ndct_dose)
    rng = np.random.default_rng(seed)
    chest = draw_chest(int(rng.integers(2**31)), texture_shape=(max(slices, 8), size, size))
    top_v = chest.body_c[1] - chest.body_ax[1]
    breathing = Breathing.draw(
        rng, chest.lungs, chest.table_v, top_v=top_v, amplitude_mm=breathing_mm, fov_mm=FOV_MM
    )

    n = size * supersample
    centres = (np.arange(n) + 0.5) / n * 2.0 - 1.0
    v, u = np.meshgrid(centres, centres, indexing="ij")
    ref = np.empty((slices, size, size), np.float32)
    ld = np.empty_like(ref)
    masks: dict[str, dict[str, B]] = {"ref": {}, "ld": {}}
    for key in ("body", "lung", "table"):
        masks["ref"][key] = np.zeros(ref.shape, bool)
        masks["ld"][key] = np.zeros(ref.shape, bool)
    disp = np.empty((2, slices, size, size), np.float32)
    unit_per_px = 2.0 / size

    for k in range(slices):
        z = (k + 0.5) / slices
        zu = z * CHEST_HEIGHT_MM / (FOV_MM / 2)
        hu, body, lung, table = _render_phase(chest, u, v, z=z, zu=zu)
        ref[k] = _block_mean(hu, supersample)
        for key, m in (("body", body), ("lung", lung), ("table", table)):
            masks["ref"][key][k] = _block_mean(m.astype(np.float64), supersample) >= 0.5
        du, dv = breathing.displacement(u, v, z)
        hu, body, lung, table = _render_phase(chest, u + du, v + dv, z=z, zu=zu)
        ld[k] = _block_mean(hu, supersample)
        for key, m in (("body", body), ("lung", lung), ("table", table)):
            masks["ld"][key][k] = _block_mean(m.astype(np.float64), supersample) >= 0.5
        pc = (np.arange(size) + 0.5) / size * 2.0 - 1.0
        pv, pu = np.meshgrid(pc, pc, indexing="ij")
        pdu, pdv = breathing.displacement(pu, pv, z)
        disp[0, k] = pdv / unit_per_px
        disp[1, k] = pdu / unit_per_px

    pixel_mm = FOV_MM / size
    spacing = (pixel_mm, pixel_mm, CHEST_HEIGHT_MM / slices)
    origin = (-FOV_MM / 2 + pixel_mm / 2, -FOV_MM / 2 + pixel_mm / 2, 0.0)
    padding = _outside_circle(size) if padding_value is not None else None
    model = noise or NoiseModel()
    ndct = add_scan_noise(ref, pixel_mm, ndct_dose, seed=seed * 2 + 1, model=model, size=size)
    uldct = add_scan_noise(ld, pixel_mm, uldct_dose, seed=seed * 2 + 2, model=model, size=size)
    if padding is not None:
        for arr in (ref, ld, ndct, uldct):
            arr[:, padding] = np.float32(padding_value)

    def vol(a: npt.NDArray[np.float32]) -> Volume:
        return Volume(a, spacing, origin)

    def phase_masks(key: str) -> PhantomMasks:
        m = masks[key]
        outside = ~(m["body"] | m["table"])
        return PhantomMasks(body=m["body"], lung=m["lung"], background=outside, table=m["table"])

    return PhantomCase(
        clean_ref=vol(ref),
        clean_ld=vol(ld),
        ndct=vol(ndct),
        uldct=vol(uldct),
        masks_ref=phase_masks("ref"),
        masks_ld=phase_masks("ld"),
        displacement=disp,
        seed=seed,
        params={
            "size": size,
            "slices": slices,
            "seed": seed,
            "uldct_dose": uldct_dose,
            "ndct_dose": ndct_dose,
            "breathing_mm": breathing_mm,
            "padding_value": padding_value,
            "pixel_mm": pixel_mm,
            "noise": model.describe(),
        },
    )


def _render_phase(chest: Chest, u: F, v: F, *, z: float, zu: float) -> tuple[F, B, B, B]:
    tex = _sample_texture(chest.texture, u, v, z=z)
    return render(chest, u, v, z=z, zu=zu, tex=tex)


def _sample_texture(texture: F, u: F, v: F, *, z: float) -> F:
    nz, ny, nx = texture.shape
    coords = np.stack(
        [
            np.full(u.shape, z * nz - 0.5),
            (v + 1.0) / 2.0 * ny - 0.5,
            (u + 1.0) / 2.0 * nx - 0.5,
        ]
    )
    return np.asarray(ndimage.map_coordinates(texture, coords, order=1, mode="nearest"))


def _block_mean(a: F, factor: int) -> npt.NDArray[np.float64]:
    if factor == 1:
        return a
    h, w = a.shape
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _outside_circle(size: int) -> B:
    c = (np.arange(size) + 0.5) - size / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return np.asarray(yy * yy + xx * xx > (size / 2) ** 2)
