"""Per-patient anatomy: parameter dataclasses (mm, HU), their random sampling and the derived geometry.

``sample_anatomy`` consumes a fixed sequence of draws from the anatomy stream; findings that change the anatomy
(e.g. cardiomegaly) edit the parameters afterwards, then ``finish_anatomy`` derives the geometry that depends on
them (heart size and position, great-vessel paths). Coordinates follow ``geometry`` (ap, rl, si) in mm.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from .constants import SIDE_SIGN, SIDES
from .geometry import Grid, catmull_rom, superellipse_radius, unit

Point = tuple[float, float, float]


@dataclass
class Trunk:
    """Outer body outline (axial superellipse, constant along SI) and the body-wall layers."""

    center_ap: float
    center_rl: float
    half_ap: float
    half_rl: float
    exponent: float
    fat_mm: float  # subcutaneous fat
    muscle_mm: float  # chest-wall muscle
    rib_mm: float  # rib band thickness
    back_mm: float  # extra posterior wall (paraspinal muscles)


@dataclass
class Outline:
    """Axial superellipse centred on the midline (rib surface, thoracic cavity)."""

    center_ap: float
    half_ap: float
    half_rl: float
    exponent: float


@dataclass
class TissueHU:
    """Per-patient attenuation (HU) of the tissues and the CT noise level."""

    fat: float
    muscle: float
    mediastinal_fat: float
    liver: float
    abdomen: float
    lung: float
    bone: float
    cortex: float
    marrow: float
    soft_tissue: float
    noise_sd: float
    blood: float = 0.0


@dataclass
class Lung:
    """One lung: an axial superellipse from a domed base up to a rounded apex."""

    sign: float  # SIDE_SIGN of its side
    center_rl: float
    half_rl: float
    center_ap: float
    half_ap: float
    exponent: float
    base_si: float  # lowest point of the base
    dome_mm: float  # diaphragm dome height above the base
    apex_si: float
    shoulder_si: float  # the cross-section narrows from here to the apex
    collapse: float = 1.0  # pneumothorax: < 1 shrinks the lung towards its medial border
    diaphragm_raise_mm: float = 0.0  # atelectasis: how far base_si was raised (recorded for the finding's region)


@dataclass
class MediastinalWidening:
    width_mm: float
    si_lo: float
    si_hi: float


@dataclass
class Spine:
    """Vertebral body (axial ellipse) with discs every `level_mm`, posterior arch drawn around the canal."""

    radius_ap: float
    radius_rl: float
    center_ap: float
    level_mm: float
    level_offset: float
    disc_mm: float


@dataclass
class Ribs:
    """Rib k occupies the band |si - slope * ap_norm - offset_si - k * pitch| <= height / 2 of the rib ring."""

    pitch_mm: float
    offset_si: float
    slope_mm: float
    height_mm: float


@dataclass
class Trachea:
    center_ap: float
    radius: float
    carina_si: float


@dataclass
class Airway:
    """Airway segment: lumen of `radius` inside a wall of thickness `wall`; generation 0 trachea .. 3."""

    start: Point
    end: Point
    radius: float
    wall: float
    generation: int


@dataclass
class Vessel:
    start: Point
    end: Point
    radius: float


@dataclass
class Heart:
    """Heart ellipsoid sized from the cardiothoracic ratio, rotated by `axis_angle` in the axial plane."""

    cardiothoracic_ratio: float
    axis_angle: float
    ap_ratio: float  # AP radius / long (RL) radius
    si_ratio: float  # SI radius / long radius
    rl_offset: float  # centre offset towards the left, fraction of the cavity half-width
    ap_offset: float  # centre offset anteriorly, fraction of the cavity half-depth
    fat_mm: float  # epicardial fat
    pericardial_hu: float
    pericardial_effusion_mm: float = 0.0
    # derived by finish_anatomy
    radius_rl: float = 0.0
    radius_ap: float = 0.0
    radius_si: float = 0.0
    center: Point = (0.0, 0.0, 0.0)


@dataclass
class Anatomy:
    """All per-patient parameters; the fields after `esophagus_radius` are derived by ``finish_anatomy``."""

    trunk: Trunk
    midline_rl: float
    rib_surface: Outline
    cavity: Outline
    hu: TissueHU
    contrast: bool
    mediastinum_width: float
    lungs: dict[str, Lung]
    spine: Spine
    ribs: Ribs
    trachea: Trachea
    hila: dict[str, Point]
    airways: list[Airway]
    pulmonary_vessels: list[Vessel]
    heart: Heart
    aorta_root_radius: float
    aorta_descending_radius: float
    svc_radius: float
    esophagus_radius: float
    mediastinal_widening: MediastinalWidening | None = None
    aorta_path: list[Point] = field(default_factory=list)
    aorta_radii: list[float] = field(default_factory=list)
    svc_top: Point = (0.0, 0.0, 0.0)
    svc_bottom: Point = (0.0, 0.0, 0.0)
    pulmonary_arteries: list[Vessel] = field(default_factory=list)
    esophagus_ap: float = 0.0
    esophagus_rl: float = 0.0


# ----------------------------------------------------------------------------------------------- lung geometry
def apex_scale(lung: Lung, si):
    """Cross-section scale of `lung` at heights `si`: 1 below the shoulder, -> 0 at the apex."""
    t = np.clip((np.asarray(si, np.float32) - lung.shoulder_si) / (lung.apex_si - lung.shoulder_si), 0.0, None)
    return np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))


def lung_point(lung: Lung, height, ap, lateral) -> Point:
    """Point inside `lung` from relative height (0 base .. 1 apex), AP (-1..1) and lateral (-1..1) position."""
    si = lung.base_si + height * (lung.apex_si - lung.base_si)
    scale = float(apex_scale(lung, si))
    return (lung.center_ap + ap * lung.half_ap * scale, lung.center_rl + lung.sign * lateral * lung.half_rl * scale,
            si)


def effective_lung(lung: Lung) -> Lung:
    """The lung after a pneumothorax collapse (medial border kept, apex lowered); `lung` itself if not collapsed."""
    k = lung.collapse
    if k >= 1.0:
        return lung
    drop = (1.0 - k) * 0.6 * (lung.apex_si - lung.shoulder_si)
    return dataclasses.replace(
        lung, center_rl=lung.center_rl - lung.sign * lung.half_rl * (1.0 - k), half_rl=lung.half_rl * k,
        half_ap=lung.half_ap * (0.5 + 0.5 * k), apex_si=lung.apex_si - drop, shoulder_si=lung.shoulder_si - 0.5 * drop,
        base_si=lung.base_si + (1.0 - k) * 20.0)


def lung_shape(grid: Grid, lung: Lung, cavity_2d, midline_rl, halfgap):
    """Boolean (H, W, D) lung inside the cavity (H, W), lateral to the mediastinal half-gap (D,) mm."""
    rho = superellipse_radius(grid, lung.center_ap, lung.center_rl, lung.half_ap, lung.half_rl, lung.exponent)
    dome = lung.base_si + lung.dome_mm * np.clip(1.0 - rho * rho, 0.0, 1.0)  # diaphragm height (H, W)
    scale = apex_scale(lung, grid.axes[2])  # (D,)
    si = grid.axes[2][None, None, :]
    inside = (rho[:, :, None] <= scale[None, None, :]) & (si >= dome[:, :, None]) & cavity_2d[:, :, None]
    inside &= np.abs(grid.axes[1][None, :, None] - midline_rl) >= halfgap[None, None, :]
    return inside


# ----------------------------------------------------------------------------------------------- sampling
def sample_anatomy(rng: np.random.Generator, grid: Grid) -> Anatomy:
    """Per-patient anatomy parameters (mm); consumes a fixed number of draws (their order is the contract)."""
    u = rng.uniform
    trunk = Trunk(center_ap=u(0, 12), center_rl=u(-6, 6), half_ap=u(102, 124), half_rl=u(148, 172),
                  exponent=u(2.2, 2.8), fat_mm=u(8, 22), muscle_mm=u(9, 14), rib_mm=u(8, 10), back_mm=u(14, 24))
    mid = trunk.center_rl
    # rib outer surface / thoracic cavity: thicker posterior wall (paraspinal muscles)
    wall = trunk.fat_mm + trunk.muscle_mm
    rib_surface = Outline(center_ap=trunk.center_ap - trunk.back_mm / 2,
                          half_ap=trunk.half_ap - wall - trunk.back_mm / 2, half_rl=trunk.half_rl - wall,
                          exponent=trunk.exponent)
    cavity = Outline(center_ap=rib_surface.center_ap, half_ap=rib_surface.half_ap - trunk.rib_mm,
                     half_rl=rib_surface.half_rl - trunk.rib_mm, exponent=trunk.exponent)
    hu = TissueHU(fat=u(-115, -85), muscle=u(35, 55), mediastinal_fat=u(-100, -75), liver=u(52, 65),
                  abdomen=u(30, 45), lung=u(-875, -830), bone=u(550, 700), cortex=u(700, 850), marrow=u(380, 480),
                  soft_tissue=u(30, 45), noise_sd=u(10, 20))
    contrast = bool(rng.random() < 0.3)
    hu.blood = u(150, 230) if contrast else u(35, 50)

    # lungs
    top_si = grid.axes[2][-1]
    mediastinum_width = u(34, 46)
    apex_si = min(u(105, 125), float(top_si) + 40)
    right_base_si = u(-105, -85)
    left_base_drop, dome_mm, apex_len, lung_exponent = u(8, 16), u(35, 50), u(65, 85), u(2.1, 2.5)
    lungs = {}
    for side in SIDES:
        sign = SIDE_SIGN[side]
        inner, outer = mid + sign * mediastinum_width / 2, mid + sign * cavity.half_rl * 1.04
        lungs[side] = Lung(sign=sign, center_rl=(inner + outer) / 2, half_rl=abs(outer - inner) / 2,
                           center_ap=cavity.center_ap + 0.02 * cavity.half_ap, half_ap=cavity.half_ap,
                           exponent=lung_exponent, base_si=right_base_si - (left_base_drop if sign > 0 else 0.0),
                           dome_mm=dome_mm, apex_si=apex_si, shoulder_si=apex_si - apex_len)

    # spine, sternum, ribs
    vertebra_r = u(16, 21)
    spine = Spine(radius_ap=vertebra_r, radius_rl=1.15 * vertebra_r,
                  center_ap=cavity.center_ap + cavity.half_ap - 0.55 * vertebra_r, level_mm=u(25, 30),
                  level_offset=u(0, 30), disc_mm=u(5, 7))
    ribs = Ribs(pitch_mm=u(24, 30), offset_si=u(0, 30), slope_mm=u(25, 40),
                height_mm=max(u(9, 12), 1.0 * grid.spacing[2]))

    # airways
    trachea_ap = spine.center_ap - vertebra_r - u(22, 30)
    carina_si = apex_si - u(45, 60)
    trachea = Trachea(center_ap=trachea_ap, radius=u(8, 10), carina_si=carina_si)
    hila = {}
    for side in SIDES:
        lung = lungs[side]
        hila[side] = (cavity.center_ap + 0.08 * cavity.half_ap,
                      mid + lung.sign * (mediastinum_width / 2 + 0.22 * lung.half_rl), carina_si - 25.0)
    airways = _sample_airways(rng, lungs, hila, trachea, mid, float(top_si))
    vessels = _sample_pulmonary_vessels(rng, lungs, hila)

    # heart (its size is set from the cardiothoracic ratio)
    heart = Heart(cardiothoracic_ratio=u(0.40, 0.48), axis_angle=u(0.45, 0.7), ap_ratio=u(0.72, 0.85),
                  si_ratio=u(0.8, 0.95), rl_offset=u(0.16, 0.24), ap_offset=u(0.22, 0.32), fat_mm=u(3, 5),
                  pericardial_hu=u(5, 18))
    aorta_root_radius, aorta_descending_radius = u(13, 17), u(10, 13)
    return Anatomy(trunk=trunk, midline_rl=mid, rib_surface=rib_surface, cavity=cavity, hu=hu, contrast=contrast,
                   mediastinum_width=mediastinum_width, lungs=lungs, spine=spine, ribs=ribs, trachea=trachea,
                   hila=hila, airways=airways, pulmonary_vessels=vessels, heart=heart,
                   aorta_root_radius=aorta_root_radius, aorta_descending_radius=aorta_descending_radius,
                   svc_radius=u(8, 10), esophagus_radius=u(6, 8))


def _sample_airways(rng, lungs, hila, trachea, mid, top_si) -> list[Airway]:
    """Trachea, main bronchi to the hila, 3 lobar bronchi per side with 2 segmental branches each."""
    u = rng.uniform
    ap = trachea.center_ap
    airways = [Airway((ap, mid, top_si + 10), (ap, mid, trachea.carina_si), trachea.radius, 2.0, 0)]
    for side in SIDES:
        lung, hilum = lungs[side], hila[side]
        hilum_bronchus = (hilum[0] - 4, hilum[1], hilum[2] + 8)
        airways.append(Airway((ap, mid, trachea.carina_si), hilum_bronchus, 6.0, 1.5, 1))
        lobar_targets = [(0.72, -0.1, 0.2), (0.38, -0.45, 0.3), (0.2, 0.35, 0.3)]
        for height, ap_pos, lateral in lobar_targets:
            target = np.asarray(lung_point(lung, height + u(-0.04, 0.04), ap_pos + u(-0.1, 0.1), lateral))
            lobar_end = np.asarray(hilum_bronchus) + 0.45 * (target - np.asarray(hilum_bronchus))
            airways.append(Airway(hilum_bronchus, tuple(lobar_end), 3.5, 1.2, 2))
            for _ in range(2):
                branch_target = target + rng.normal(0, 14, 3)
                airways.append(Airway(tuple(lobar_end), tuple(lobar_end + 0.55 * (branch_target - lobar_end)),
                                      2.2, 1.0, 3))
    return airways


def _sample_pulmonary_vessels(rng, lungs, hila) -> list[Vessel]:
    """Per side 8 trunks from the hilum, each with 2 branches of 2 twigs (radii 4.5, 3, 2 mm)."""
    u = rng.uniform
    targets = [(0.92, -0.1, 0.0), (0.72, -0.5, 0.4), (0.72, 0.45, 0.4), (0.48, -0.6, 0.65), (0.48, 0.55, 0.6),
               (0.22, 0.45, 0.5), (0.22, -0.35, 0.6), (0.3, 0.75, 0.05)]
    vessels = []
    for side in SIDES:
        lung, hilum = lungs[side], np.asarray(hila[side])
        for height, ap_pos, lateral in targets:
            target = np.asarray(lung_point(lung, height + u(-0.05, 0.05), ap_pos + u(-0.12, 0.12),
                                           lateral + u(-0.1, 0.1)))
            trunk_end = hilum + u(0.45, 0.6) * (target - hilum)
            vessels.append(Vessel(tuple(hilum), tuple(trunk_end), 4.5))
            for _ in range(2):
                branch_target = target + rng.normal(0, 16, 3)
                branch_end = trunk_end + 0.7 * (branch_target - trunk_end)
                vessels.append(Vessel(tuple(trunk_end), tuple(branch_end), 3.0))
                for _ in range(2):
                    step = unit(branch_end - trunk_end) * 25.0 + rng.normal(0, 9, 3)
                    vessels.append(Vessel(tuple(branch_end), tuple(branch_end + step), 2.0))
    return vessels


# ----------------------------------------------------------------------------------------------- derived
def finish_anatomy(anatomy: Anatomy) -> None:
    """Derive (in place) the geometry that depends on findings applied to the parameters: heart size and
    position, aorta path, SVC, pulmonary arteries, oesophagus."""
    heart, cavity, mid = anatomy.heart, anatomy.cavity, anatomy.midline_rl
    lateral_width = math.sqrt(math.cos(heart.axis_angle) ** 2 + (heart.ap_ratio * math.sin(heart.axis_angle)) ** 2)
    long_r = heart.cardiothoracic_ratio * cavity.half_rl / lateral_width
    heart.radius_rl, heart.radius_ap, heart.radius_si = long_r, long_r * heart.ap_ratio, long_r * heart.si_ratio
    dome_si = max(lung.base_si + lung.dome_mm for lung in anatomy.lungs.values())
    heart.center = (cavity.center_ap - heart.ap_offset * cavity.half_ap + 0.15 * (heart.radius_ap - 45.0),
                    mid + heart.rl_offset * cavity.half_rl + 0.3 * (long_r - 60.0), dome_si + 0.65 * heart.radius_si)
    center = heart.center
    trachea, spine = anatomy.trachea, anatomy.spine
    r_root, r_desc = anatomy.aorta_root_radius, anatomy.aorta_descending_radius
    root = (center[0] - 0.3 * heart.radius_ap, mid + 2.0, center[2] + 0.55 * heart.radius_si)
    arch_si = min(trachea.carina_si + 22.0, anatomy.lungs["left"].apex_si - 25.0)
    descending = (spine.center_ap - 0.75 * spine.radius_ap, mid + 0.8 * spine.radius_rl + 0.6 * r_desc)
    lowest_base = min(lung.base_si for lung in anatomy.lungs.values())
    knots = [root, (root[0] - 4, mid - 12, arch_si - 28), ((root[0] + descending[0]) / 2, mid + 4, arch_si),
             (descending[0], descending[1], arch_si - 24), (descending[0] + 3, descending[1] - 3, lowest_base - 30)]
    path = catmull_rom(knots, 5)
    anatomy.aorta_path = [tuple(map(float, p)) for p in path]
    anatomy.aorta_radii = [float(r) for r in np.interp(np.arange(len(path)), [0, 10, len(path) - 1],
                                                       [r_root, r_root, r_desc])]
    svc_ap, svc_rl = root[0] + 2.0, mid - (r_root + anatomy.svc_radius + 6.0)
    anatomy.svc_top = (svc_ap, svc_rl, arch_si + 60.0)
    anatomy.svc_bottom = (svc_ap + 4, svc_rl + 4, center[2] + 0.45 * heart.radius_si)
    bifurcation = (trachea.center_ap + 10.0, mid + 8.0, trachea.carina_si - 14.0)
    trunk_start = (center[0] - 0.5 * heart.radius_ap, center[1] - 0.1 * long_r, center[2] + 0.6 * heart.radius_si)
    anatomy.pulmonary_arteries = [Vessel(trunk_start, bifurcation, 12.0),
                                  Vessel(bifurcation, anatomy.hila["right"], 9.0),
                                  Vessel(bifurcation, anatomy.hila["left"], 9.0)]
    anatomy.esophagus_ap, anatomy.esophagus_rl = spine.center_ap - spine.radius_ap - 8.0, mid + 5.0
