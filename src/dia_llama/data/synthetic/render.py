"""The canvas of one case and the drawing of the normal anatomy onto it (no random draws here)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .anatomy import Anatomy, Vessel, effective_lung, lung_shape
from .constants import LUNG_TISSUES, SIDES, Tissue, tissue_in
from .geometry import Grid, ellipsoid, segment_distance, superellipse_radius

EVERYWHERE = (slice(None),) * 3  # the whole volume as a box
# tissues that mediastinal structures may replace
MEDIASTINUM_OR_LUNG = (Tissue.MEDIASTINAL_FAT, Tissue.LUNG, Tissue.PULMONARY_VESSEL)
_AIRWAY_SURROUNDINGS = MEDIASTINUM_OR_LUNG + (Tissue.SOFT_TISSUE, Tissue.GREAT_VESSEL)


class Canvas:
    """One case being drawn: HU volume, tissue label map, lung side map, anatomy and per-kind painted regions.

    ``records[kind]`` is the boolean (H, W, D) union of the voxels painted for that finding kind; ``lung_field``
    the aerated lung (set by ``render_anatomy``; effusions remove what they fill). The remaining attributes are
    2D / 1D maps of the rendered anatomy that finding painters reuse.
    """

    def __init__(self, grid: Grid, anatomy: Anatomy):
        self.grid, self.anatomy = grid, anatomy
        self.hu = np.full(grid.shape, -1000.0, np.float32)  # (H, W, D)
        self.tissue = np.zeros(grid.shape, np.uint8)  # (H, W, D) Tissue codes
        self.lung_side = np.zeros(grid.shape, np.uint8)  # 1 right lung, 2 left lung (shape before structures)
        self.records: dict[str, np.ndarray] = {}
        self.cardiac_silhouette: np.ndarray | None = None  # (H, W, D) bool: heart, pericardium, epicardial fat
        self.heart: np.ndarray | None = None  # (H, W, D) bool: the blood-filled heart as drawn
        self.lung_field: np.ndarray | None = None  # (H, W, D) bool
        self.cavity_2d: np.ndarray | None = None  # (H, W) bool, thoracic cavity
        self.cavity_radius_2d: np.ndarray | None = None  # (H, W) normalised cavity superellipse radius
        self.diaphragm_si_2d: np.ndarray | None = None  # (H, W) height of the diaphragm surface (mm)
        self.mediastinal_halfgap: np.ndarray | None = None  # (D,) mm from the midline to the lungs
        self.rib_band_2d: np.ndarray | None = None  # (H, W) bool, ring between cavity and rib surface

    def paint(self, box, mask, hu, tissue, allowed=None, record=None, within=None):
        """Set HU `hu` (scalar or array broadcastable to the box) and `tissue` where `mask` (& current tissue in
        `allowed`) (& `within`) over `box` (slices); record the painted voxels under finding kind `record`.
        Returns the painted mask (box-shaped)."""
        hu_box, tissue_box = self.hu[box], self.tissue[box]
        painted = mask if allowed is None else mask & tissue_in(tissue_box, allowed)
        if within is not None:
            painted = painted & within
        if np.ndim(hu):
            hu_box[painted] = np.broadcast_to(hu, painted.shape)[painted]
        else:
            hu_box[painted] = hu
        tissue_box[painted] = tissue
        if record is not None:
            self.record(record, box, painted)
        return painted

    def record(self, kind: str, box, mask) -> None:
        """Add `mask` (shaped like `box`) to the painted region of finding `kind`."""
        if kind not in self.records:
            self.records[kind] = np.zeros(self.grid.shape, bool)
        self.records[kind][box] |= mask

    def lung_fraction(self, point, radius) -> float:
        """Fraction of the ball (point, radius) inside the lung field (centre voxel if the ball has no voxel)."""
        found = ellipsoid(self.grid, point, (radius, radius, radius))
        if found is not None:
            box, q = found
            inside = q <= 1.0
            if inside.any():
                return float(self.lung_field[box][inside].mean())
        return float(self.lung_field[self.grid.nearest_index(point)])


def render_anatomy(canvas: Canvas) -> None:
    """Draw the body wall, cavity, ribs, lungs (with a pneumothorax rim), vessels, heart, airways, spine."""
    grid, anatomy = canvas.grid, canvas.anatomy
    hu, trunk, cavity, mid = anatomy.hu, anatomy.trunk, anatomy.cavity, anatomy.midline_rl
    vol, tissue = canvas.hu, canvas.tissue
    shape_2d = grid.shape[:2]
    # body wall layers (constant along SI): fat, muscle, rib band, cavity
    body_2d = superellipse_radius(grid, trunk.center_ap, trunk.center_rl, trunk.half_ap, trunk.half_rl,
                                  trunk.exponent) <= 1
    muscle_2d = superellipse_radius(grid, trunk.center_ap, trunk.center_rl, trunk.half_ap - trunk.fat_mm,
                                    trunk.half_rl - trunk.fat_mm, trunk.exponent) <= 1
    ribs = anatomy.rib_surface
    rib_surface_2d = superellipse_radius(grid, ribs.center_ap, mid, ribs.half_ap, ribs.half_rl, trunk.exponent) <= 1
    cavity_radius = superellipse_radius(grid, cavity.center_ap, mid, cavity.half_ap, cavity.half_rl, cavity.exponent)
    cavity_2d = cavity_radius <= 1
    canvas.cavity_2d, canvas.cavity_radius_2d = cavity_2d, cavity_radius
    tissue_2d = np.zeros(shape_2d, np.uint8)
    hu_2d = np.full(shape_2d, -1000.0, np.float32)
    tissue_2d[body_2d], hu_2d[body_2d] = Tissue.FAT, hu.fat
    tissue_2d[muscle_2d], hu_2d[muscle_2d] = Tissue.MUSCLE, hu.muscle
    vol[:] = hu_2d[:, :, None]
    tissue[:] = tissue_2d[:, :, None]
    # cavity: mediastinal fat above the diaphragm, liver / upper abdomen below
    diaphragm = np.full(shape_2d, -1e9, np.float32)  # (H, W)
    for lung in anatomy.lungs.values():
        rho = superellipse_radius(grid, lung.center_ap, lung.center_rl, lung.half_ap, lung.half_rl, lung.exponent)
        diaphragm = np.maximum(diaphragm, lung.base_si + lung.dome_mm * np.clip(1.0 - rho * rho, 0.0, 1.0))
    base_heights = [lung.base_si for lung in anatomy.lungs.values()]
    dome_mm = anatomy.lungs["right"].dome_mm
    r2 = (((grid.axes[1][None, :] - mid) / cavity.half_rl) ** 2
          + ((grid.axes[0][:, None] - cavity.center_ap) / cavity.half_ap) ** 2)
    diaphragm = np.maximum(diaphragm, np.mean(base_heights) + 0.75 * dome_mm * np.clip(1.0 - r2, 0.0, 1.0))
    canvas.diaphragm_si_2d = diaphragm
    above = grid.axes[2][None, None, :] >= diaphragm[:, :, None]
    abdomen_hu = np.where(grid.axes[1][None, :] < mid + 30.0, hu.liver, hu.abdomen).astype(np.float32)  # (1, W)
    cavity_3d = np.broadcast_to(cavity_2d[:, :, None], grid.shape)
    m = cavity_3d & above
    vol[m], tissue[m] = hu.mediastinal_fat, Tissue.MEDIASTINAL_FAT
    m = cavity_3d & ~above
    vol[m] = np.broadcast_to(abdomen_hu[:, :, None], grid.shape)[m]
    tissue[m] = Tissue.ABDOMEN
    # ribs in the band between the cavity and the rib surface
    _draw_ribs(canvas, rib_surface_2d & ~cavity_2d)
    _draw_lungs(canvas)
    # pulmonary vessels (only inside aerated lung)
    for vessel in anatomy.pulmonary_vessels:
        found = segment_distance(grid, vessel.start, vessel.end, max(vessel.radius, grid.min_radius))
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= max(vessel.radius, grid.min_radius * 0.8), 40.0, Tissue.PULMONARY_VESSEL,
                         allowed=(Tissue.LUNG,))
    _draw_heart(canvas, cavity_3d & above)
    _draw_mediastinal_tubes(canvas, min(base_heights))
    _draw_spine_sternum(canvas)
    canvas.lung_field = (canvas.lung_side > 0) & tissue_in(tissue, LUNG_TISSUES)


def _draw_lungs(canvas: Canvas) -> None:
    """Both lungs lateral to the mediastinal half-gap; a collapsed lung leaves a pneumothorax air rim."""
    grid, anatomy = canvas.grid, canvas.anatomy
    hu, cavity = anatomy.hu, anatomy.cavity
    vol, tissue = canvas.hu, canvas.tissue
    normal_halfgap = np.full(grid.shape[2], anatomy.mediastinum_width / 2.0, np.float32)  # (D,)
    halfgap = normal_halfgap
    widening = anatomy.mediastinal_widening
    if widening is not None:
        si = grid.axes[2]
        ramp = np.clip(np.minimum(si - widening.si_lo, widening.si_hi - si) / 15.0, 0.0, 1.0)
        halfgap = halfgap + 0.5 * widening.width_mm * ramp
    canvas.mediastinal_halfgap = halfgap
    lung_hu_ap = (grid.axes[0] - cavity.center_ap) / cavity.half_ap * 25.0  # denser posteriorly (H,)
    for i, side in enumerate(SIDES):
        lung = anatomy.lungs[side]
        full = lung_shape(grid, lung, canvas.cavity_2d, anatomy.midline_rl, halfgap)
        collapsed = effective_lung(lung)
        aerated = full if collapsed is lung else lung_shape(grid, collapsed, canvas.cavity_2d, anatomy.midline_rl,
                                                            halfgap)
        m = aerated & (tissue != Tissue.BONE)
        vol[m] = np.broadcast_to((hu.lung + lung_hu_ap)[:, None, None], grid.shape)[m]
        tissue[m] = Tissue.LUNG
        canvas.lung_side[aerated] = i + 1
        if collapsed is not lung:
            rim = full & ~aerated & (tissue != Tissue.BONE)
            vol[rim], tissue[rim] = -1000.0, Tissue.PNEUMOTHORAX
            canvas.record("pneumothorax", EVERYWHERE, rim)
            # the collapsed outline bulges past the normal one at the medial base: that lung is moved too
            canvas.record("pneumothorax", EVERYWHERE, aerated & ~full & (tissue != Tissue.BONE))
        # regions of the findings that changed the lung's shape (no draws): the lung given up to them
        if widening is not None:
            normal = lung_shape(grid, lung, canvas.cavity_2d, anatomy.midline_rl, normal_halfgap)
            canvas.record("mediastinum", EVERYWHERE, normal & ~full & (tissue != Tissue.BONE))
        if lung.diaphragm_raise_mm > 0:
            unraised = dataclasses.replace(collapsed, base_si=collapsed.base_si - lung.diaphragm_raise_mm)
            normal = lung_shape(grid, unraised, canvas.cavity_2d, anatomy.midline_rl, halfgap)
            canvas.record("atelectasis", EVERYWHERE, normal & ~aerated & (tissue != Tissue.BONE))


def _draw_heart(canvas: Canvas, thorax_3d) -> None:
    """Epicardial fat, optional pericardial effusion, then the blood-filled heart, inside the thorax (H, W, D)."""
    grid, anatomy = canvas.grid, canvas.anatomy
    heart, hu = anatomy.heart, anatomy.hu
    layers = ((heart.fat_mm + heart.pericardial_effusion_mm, hu.mediastinal_fat, Tissue.MEDIASTINAL_FAT, None),
              (heart.pericardial_effusion_mm, heart.pericardial_hu, Tissue.FLUID, "pericardial_effusion"),
              (0.0, hu.blood, Tissue.HEART, None))
    canvas.cardiac_silhouette, canvas.heart = np.zeros(grid.shape, bool), np.zeros(grid.shape, bool)
    for extra, layer_hu, code, record in layers:
        if code == Tissue.FLUID and heart.pericardial_effusion_mm <= 0:
            continue
        radii = (heart.radius_ap + extra, heart.radius_rl + extra, heart.radius_si + extra)
        found = ellipsoid(grid, heart.center, radii, heart.axis_angle)
        if found is not None:
            box, q = found
            painted = canvas.paint(box, (q <= 1.0) & thorax_3d[box], layer_hu, code,
                                   allowed=MEDIASTINUM_OR_LUNG + (Tissue.FLUID,), record=record)
            canvas.cardiac_silhouette[box] |= painted
            if code == Tissue.HEART:
                canvas.heart[box] |= painted


def _draw_mediastinal_tubes(canvas: Canvas, lowest_base_si: float) -> None:
    """Aorta, SVC, pulmonary arteries, oesophagus, then the airways (wall, lumen)."""
    grid, anatomy = canvas.grid, canvas.anatomy
    hu = anatomy.hu
    for p0, p1, r in zip(anatomy.aorta_path[:-1], anatomy.aorta_path[1:], anatomy.aorta_radii[1:], strict=True):
        found = segment_distance(grid, p0, p1, r)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= r, hu.blood, Tissue.GREAT_VESSEL,
                         allowed=MEDIASTINUM_OR_LUNG + (Tissue.ABDOMEN, Tissue.FLUID))
    for vessel in [Vessel(anatomy.svc_top, anatomy.svc_bottom, anatomy.svc_radius), *anatomy.pulmonary_arteries]:
        found = segment_distance(grid, vessel.start, vessel.end, vessel.radius)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= vessel.radius, hu.blood if vessel.radius > 9.5 else 45.0, Tissue.GREAT_VESSEL,
                         allowed=MEDIASTINUM_OR_LUNG)
    top = (anatomy.esophagus_ap, anatomy.esophagus_rl, float(grid.axes[2][-1]) + 10)
    bottom = (anatomy.esophagus_ap, anatomy.esophagus_rl + 4, lowest_base_si)
    found = segment_distance(grid, top, bottom, anatomy.esophagus_radius)
    if found is not None:
        box, dist = found
        canvas.paint(box, dist <= anatomy.esophagus_radius, hu.soft_tissue, Tissue.SOFT_TISSUE,
                     allowed=MEDIASTINUM_OR_LUNG)
    for airway in anatomy.airways:
        r, wall = airway.radius, airway.wall
        found = segment_distance(grid, airway.start, airway.end, r + wall)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= r + wall, 0.0 if airway.generation < 2 else -300.0, Tissue.AIRWAY_WALL,
                         allowed=_AIRWAY_SURROUNDINGS)
            lumen = max(r, 0.6 * grid.min_radius if airway.generation < 3 else 0.0)
            canvas.paint(box, dist <= lumen, -1000.0, Tissue.AIRWAY,
                         allowed=_AIRWAY_SURROUNDINGS + (Tissue.AIRWAY_WALL,))


def rib_geometry(grid: Grid, anatomy: Anatomy, band_2d):
    """Rib-band pixels (rows, cols) (n,), rib index (n, D), bone mask (n, D), azimuth (n,) (0 lateral,
    > 0 posterior) and side sign (n,) (-1 right, +1 left)."""
    cavity, ribs, mid = anatomy.cavity, anatomy.ribs, anatomy.midline_rl
    rows, cols = np.nonzero(band_2d)
    ap_norm = (grid.axes[0][rows] - cavity.center_ap) / cavity.half_ap
    rl = grid.axes[1][cols] - mid
    t = (grid.axes[2][None, :] - ribs.slope_mm * ap_norm[:, None] - ribs.offset_si) / ribs.pitch_mm
    index = np.rint(t)
    bone = np.abs(t - index) * ribs.pitch_mm <= ribs.height_mm / 2
    # no ribs at the sternum and the spine
    excluded = ((np.abs(rl) < 18) & (ap_norm < 0)) | ((np.abs(rl) < anatomy.spine.radius_rl + 14) & (ap_norm > 0))
    bone &= ~excluded[:, None]
    azimuth = np.arctan2(ap_norm, np.abs(rl) / cavity.half_rl)
    return rows, cols, index.astype(np.int32), bone, azimuth, np.sign(rl)


def _draw_ribs(canvas: Canvas, band_2d) -> None:
    canvas.rib_band_2d = band_2d
    rows, cols, _, bone, _, _ = rib_geometry(canvas.grid, canvas.anatomy, band_2d)
    band_hu, band_tissue = canvas.hu[rows, cols, :], canvas.tissue[rows, cols, :]  # (n, D)
    band_hu = np.where(bone, canvas.anatomy.hu.bone, band_hu)
    band_tissue = np.where(bone, Tissue.BONE, band_tissue)
    canvas.hu[rows, cols, :], canvas.tissue[rows, cols, :] = band_hu, band_tissue


def _draw_spine_sternum(canvas: Canvas) -> None:
    """Vertebral bodies with discs, posterior arch / spinous / transverse processes, spinal canal, sternum."""
    grid, anatomy = canvas.grid, canvas.anatomy
    spine, hu, mid, cavity = anatomy.spine, anatomy.hu, anatomy.midline_rl, anatomy.cavity
    si = grid.axes[2]
    ap = grid.axes[0][:, None]  # (H, 1)
    d_ap = ap - spine.center_ap
    d_rl = grid.axes[1][None, :] - mid  # (1, W)
    body = (d_ap / spine.radius_ap) ** 2 + (d_rl / spine.radius_rl) ** 2 <= 1  # (H, W)
    body_inner = (d_ap / (spine.radius_ap - 3)) ** 2 + (d_rl / (spine.radius_rl - 3)) ** 2 <= 1
    disc = (np.mod(si - spine.level_offset, spine.level_mm) < spine.disc_mm)[None, None, :]  # (1, 1, D)
    canal_ap = spine.center_ap + spine.radius_ap + 9.0
    canal = (ap - canal_ap) ** 2 + d_rl ** 2 <= 8.0 ** 2
    arch = ((ap - canal_ap) ** 2 + d_rl ** 2 <= 14.0 ** 2) & (ap > canal_ap - 4) & ~canal
    spinous = (np.abs(d_rl) <= max(4.0, grid.min_radius)) & (ap > canal_ap) & (ap < canal_ap + 38)
    transverse = (np.abs(ap - canal_ap + 2) <= max(4.0, grid.min_radius)) & (np.abs(d_rl) < 32) & (np.abs(d_rl) > 8)
    posterior_2d = (arch | spinous | transverse)
    body_hu_2d = np.where(body_inner, hu.marrow, hu.cortex).astype(np.float32)
    for mask_2d, value, code in ((posterior_2d, hu.bone, Tissue.BONE), (canal, 20.0, Tissue.SOFT_TISSUE)):
        m = np.broadcast_to(mask_2d[:, :, None], grid.shape) & (canvas.tissue != Tissue.AIR)
        canvas.hu[m], canvas.tissue[m] = value, code
    body_3d = np.broadcast_to(body[:, :, None], grid.shape)
    body_hu = np.where(disc, 90.0, body_hu_2d[:, :, None])
    canvas.hu[body_3d] = np.broadcast_to(body_hu, grid.shape)[body_3d]
    canvas.tissue[body_3d] = Tissue.BONE
    # sternum: anterior midline bar along the chest
    sternum_ap = cavity.center_ap - cavity.half_ap - 6.0
    sternum_2d = ((ap - sternum_ap) / 7.0) ** 2 + (d_rl / 14.0) ** 2 <= 1
    lowest_base = min(lung.base_si for lung in anatomy.lungs.values())
    rows_si = (si > lowest_base + 10) & (si < anatomy.lungs["right"].apex_si - 20)
    m = sternum_2d[:, :, None] & rows_si[None, None, :]
    canvas.hu[m], canvas.tissue[m] = hu.marrow, Tissue.BONE
