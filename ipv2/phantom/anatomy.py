"""A randomised but plausible chest: its parameters and its rendering at any coordinates.

Coordinates are normalised: ``u`` runs left to right across the image and ``v`` top to
bottom (anterior to posterior), both in [-1, 1] over the field of view; ``z`` is the
height in the chest, 0 at the lung apices and 1 at the diaphragm, and ``zu`` the same
height in the in-plane units (so 3D distances are isotropic).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from ipv2.phantom.shapes import segment_distance, superellipse

F = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

# HU of each tissue (typical literature values for contrast-free chest CT).
AIR, LUNG, FAT, SKIN, MUSCLE, BLOOD, LIVER = -1000.0, -850.0, -100.0, 30.0, 55.0, 45.0, 60.0
VESSEL, CORTICAL, TRABECULAR, TABLE, AIRWAY_WALL = 40.0, 900.0, 250.0, 150.0, -50.0

FOV_MM = 400.0  # field of view across the image
CHEST_HEIGHT_MM = 250.0  # apex to diaphragm
TEXTURE_HU = 35.0  # amplitude of the fine parenchymal texture


@dataclass(frozen=True)
class Tube:
    """A vessel or airway segment (3D, normalised units)."""

    a: npt.NDArray[np.float64]
    b: npt.NDArray[np.float64]
    radius: float


@dataclass(frozen=True)
class Chest:
    """Everything random about one phantom case, drawn once from its seed."""

    body_c: tuple[float, float]
    body_ax: tuple[float, float]
    fat: float
    lungs: tuple[tuple[float, float, float, float], ...]  # (cx, cy, ax, ay) per lung
    heart: tuple[float, float, float, float]
    ribs: tuple[tuple[float, float, float], ...]  # (cu, cv, angle)
    vessels: tuple[Tube, ...]
    airways: tuple[Tube, ...]
    texture: F  # (nz, ny, nx) smooth noise in [-1, 1] over the chest block
    table_v: float


def draw_chest(seed: int, texture_shape: tuple[int, int, int]) -> Chest:
    rng = np.random.default_rng(seed)
    j = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731  (jitter)
    body_ax = (0.76 + j(0.04), 0.50 + j(0.03))
    body_c = (j(0.02), 0.02 + j(0.02))
    lungs = (
        (-0.36 + j(0.02), -0.02 + j(0.02), 0.27 + j(0.02), 0.36 + j(0.02)),
        (0.37 + j(0.02), -0.02 + j(0.02), 0.26 + j(0.02), 0.35 + j(0.02)),
    )
    heart = (0.07 + j(0.02), -0.12 + j(0.02), 0.22 + j(0.02), 0.19 + j(0.02))
    ribs = []
    for side in (-1, 1):
        for k in range(5):
            ang = np.deg2rad(-70 + 32 * k + j(5))
            ribs.append((side * 0.70 * np.cos(ang), 0.44 * np.sin(ang) + body_c[1], side * ang))
    vessels = _tree(rng, lungs, leaves=900, leaf_radius=0.0042)
    airways = _tree(rng, lungs, leaves=24, leaf_radius=0.01)
    noise = rng.standard_normal(texture_shape)
    texture = ndimage.gaussian_filter(noise, sigma=(0.7, 1.0, 1.0))
    texture /= max(float(np.abs(texture).max()), 1e-6)
    return Chest(
        body_c=body_c,
        body_ax=body_ax,
        fat=0.045 + j(0.01),
        lungs=lungs,
        heart=heart,
        ribs=tuple(ribs),
        vessels=tuple(vessels),
        airways=tuple(airways),
        texture=texture,
        table_v=body_c[1] + body_ax[1] + 0.035,
    )


def _tree(
    rng: np.random.Generator,
    lungs: tuple[tuple[float, float, float, float], ...],
    leaves: int,
    *,
    leaf_radius: float,
) -> list[Tube]:
    """A space-filling branching tree from each hilum to points spread through the lung.

    Each node moves halfway towards the centroid of the targets it serves, then splits
    them in two along their principal axis; radii follow Murray's law (r ~ n^(1/3)),
    so trunks are thick at the hilum and branches thin out towards the pleura.
    """
    height = CHEST_HEIGHT_MM / (FOV_MM / 2)
    tubes: list[Tube] = []
    for cx, cy, ax, ay in lungs:
        side = np.sign(cx)
        root = np.array([cx - side * ax * 0.6, cy, 0.55 * height])
        pts = _points_in_lung(rng, cx, cy, ax=ax, ay=ay, n=leaves, height=height)
        stack = [(root, pts)]
        while stack:
            p, group = stack.pop()
            r = leaf_radius * len(group) ** (1 / 3)
            if len(group) <= 2:
                tubes.extend(Tube(p, q, leaf_radius) for q in group)
                continue
            branch = p + 0.5 * (group.mean(axis=0) - p)
            tubes.append(Tube(p, branch, r))
            centred = group - group.mean(axis=0)
            axis = np.linalg.svd(centred, full_matrices=False)[2][0]
            proj = centred @ axis
            half = proj < np.median(proj)
            stack.extend([(branch, group[half]), (branch, group[~half])])
    return tubes


def _points_in_lung(
    rng: np.random.Generator, cx: float, cy: float, *, ax: float, ay: float, n: int, height: float
) -> npt.NDArray[np.float64]:
    out: list[npt.NDArray[np.float64]] = []
    while sum(len(o) for o in out) < n:
        z = rng.uniform(0.02, 0.98, 4 * n)
        a, b = rng.uniform(-1, 1, (2, 4 * n))
        keep = a * a + b * b <= 0.85
        s = np.array([lung_scale(float(t)) for t in z])
        u = cx + a * ax * s
        v = cy + (1 - s) * 0.08 + b * ay * s
        out.append(np.stack([u, v, z * height], axis=1)[keep])
    return np.concatenate(out)[:n]


def lung_scale(z: float) -> float:
    """Lungs are small at the apex and widest above the diaphragm."""
    return 0.45 + 0.55 * float(np.sin(min(z / 0.7, 1.0) * np.pi / 2))


def render(chest: Chest, u: F, v: F, *, z: float, zu: float, tex: F) -> tuple[F, B, B, B]:
    """HU, body, lung and table masks of the chest at points (u, v) and height z.

    ``tex`` is the parenchymal texture already sampled at the same points, so that a
    deformed phase samples the texture where the tissue moved to.
    """
    hu = np.full(u.shape, AIR)
    bc, ba = chest.body_c, chest.body_ax
    body = superellipse(u, v, bc[0], cy=bc[1], ax=ba[0], ay=ba[1], power=2.4)
    table = (v > chest.table_v) & (v < chest.table_v + 0.03) & (np.abs(u) < 0.95)
    hu[table] = TABLE
    hu[body] = SKIN
    inner = superellipse(u, v, bc[0], cy=bc[1], ax=ba[0] - 0.012, ay=ba[1] - 0.012, power=2.4)
    hu[inner] = FAT
    muscle = superellipse(
        u, v, bc[0], cy=bc[1], ax=ba[0] - chest.fat, ay=ba[1] - chest.fat, power=2.4
    )
    hu[muscle] = MUSCLE
    for cu, cv, ang in chest.ribs:
        hu[superellipse(u, v, cu, cy=cv, ax=0.045, ay=0.022, angle=ang)] = CORTICAL
    hu[superellipse(u, v, 0.0, cy=bc[1] - ba[1] + 0.05, ax=0.07, ay=0.025)] = CORTICAL  # sternum
    spine_v = bc[1] + ba[1] - 0.2
    hu[superellipse(u, v, 0.0, cy=spine_v, ax=0.1, ay=0.09)] = CORTICAL
    hu[superellipse(u, v, 0.0, cy=spine_v, ax=0.085, ay=0.075)] = TRABECULAR
    hu[superellipse(u, v, 0.0, cy=spine_v + 0.13, ax=0.03, ay=0.05)] = CORTICAL  # spinous process
    hu[superellipse(u, v, 0.13, cy=spine_v - 0.02, ax=0.06, ay=0.06)] = BLOOD  # descending aorta

    s = lung_scale(z)
    lung = np.zeros(u.shape, dtype=bool)
    for cx, cy, ax, ay in chest.lungs:
        lung |= superellipse(u, v, cx, cy=cy + (1 - s) * 0.08, ax=ax * s, ay=ay * s, power=2.2)
    hx, hy, hax, hay = chest.heart
    heart = superellipse(u, v, hx, cy=hy, ax=hax * (0.6 + 0.4 * z), ay=hay * (0.6 + 0.4 * z))
    lung &= ~heart & ~superellipse(u, v, 0.0, cy=spine_v, ax=0.16, ay=0.12)
    if z > 0.7:  # diaphragm domes rising into the lung bases (liver on the image left)
        dome = 0.45 * (z - 0.7) / 0.3
        liver = superellipse(u, v, -0.36, cy=0.1, ax=0.3 * dome + 1e-3, ay=0.38 * dome + 1e-3)
        lung &= ~liver
        hu[liver & muscle] = LIVER
    hu[lung] = LUNG + TEXTURE_HU * tex[lung]
    if z > 0.25:
        hu[heart & muscle] = BLOOD
    if z < 0.4:  # trachea
        trachea = superellipse(u, v, 0.0, cy=-0.1, ax=0.06, ay=0.055)
        hu[trachea] = AIRWAY_WALL
        hu[superellipse(u, v, 0.0, cy=-0.1, ax=0.045, ay=0.04)] = AIR
        lung_or_airway = lung | trachea
    else:
        lung_or_airway = lung
    _tubes(hu, u, v, zu=zu, tubes=chest.vessels, inside=lung, value=VESSEL, wall=False)
    _tubes(hu, u, v, zu=zu, tubes=chest.airways, inside=lung, value=AIR, wall=True)
    return hu, body & ~table, lung_or_airway & body, table & ~body


def _tubes(
    hu: F, u: F, v: F, *, zu: float, tubes: tuple[Tube, ...], inside: B, value: float, wall: bool
) -> None:
    """Paint tubes crossing height ``zu``; only the bounding box of each is evaluated."""
    if u.ndim != 2:
        raise ValueError("tube painting expects 2D coordinate grids")
    for t in tubes:
        lo_z, hi_z = min(t.a[2], t.b[2]) - t.radius * 1.5, max(t.a[2], t.b[2]) + t.radius * 1.5
        if not lo_z <= zu <= hi_z:
            continue
        pad = t.radius * 1.5
        lo_u, hi_u = min(t.a[0], t.b[0]) - pad, max(t.a[0], t.b[0]) + pad
        lo_v, hi_v = min(t.a[1], t.b[1]) - pad, max(t.a[1], t.b[1]) + pad
        rows = np.nonzero((v[:, 0] >= lo_v) & (v[:, 0] <= hi_v))[0] if _is_grid(u, v) else None
        if rows is not None:
            cols = np.nonzero((u[0] >= lo_u) & (u[0] <= hi_u))[0]
            if rows.size == 0 or cols.size == 0:
                continue
            sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        else:
            box = (u >= lo_u) & (u <= hi_u) & (v >= lo_v) & (v <= hi_v)
            if not box.any():
                continue
            r_idx, c_idx = np.nonzero(box)
            sl = (slice(r_idx.min(), r_idx.max() + 1), slice(c_idx.min(), c_idx.max() + 1))
        d = segment_distance(u[sl], v[sl], zu, a=t.a, b=t.b)
        region = hu[sl]
        inside_sl = inside[sl]
        if wall:
            ring = (d <= t.radius) & inside_sl
            region[ring] = AIRWAY_WALL
            region[(d <= t.radius * 0.6) & inside_sl] = value
        else:
            region[(d <= t.radius) & inside_sl] = value


def _is_grid(u: F, v: F) -> bool:
    """True for an undeformed meshgrid (rows share v, columns share u): faster boxes."""
    return bool(np.all(u[0] == u[-1]) and np.all(v[:, 0] == v[:, -1]))
