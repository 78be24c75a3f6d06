"""Findings outside the lung parenchyma: anatomy modifiers (applied before the anatomy is drawn) and painters of
the pleura, mediastinum, heart and vessels, bones and devices. Same contract as ``lung_findings``."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import Anatomy, Heart, MediastinalWidening, apex_scale, effective_lung
from .constants import SIDE_SIGN, SIDES, Tissue
from .finding_params import (
    AorticCalcificationParams,
    AtelectasisParams,
    CardiomegalyParams,
    CoronaryCalcificationParams,
    DeviceParams,
    EffusionParams,
    FractureParams,
    HiatalHerniaParams,
    LymphadenopathyParams,
    MediastinumParams,
    PericardialEffusionParams,
    PleuralPlaqueParams,
    PneumothoraxParams,
)
from .geometry import ellipsoid, rounded, segment_distance, unit
from .lung_findings import choose_location
from .render import EVERYWHERE, MEDIASTINUM_OR_LUNG, Canvas, rib_geometry


# ----------------------------------------------------------------------------------------------- anatomy modifiers
def enlarge_heart(anatomy: Anatomy, rng) -> CardiomegalyParams:
    """Cardiomegaly: cardiothoracic ratio 0.58-0.68 (normal 0.40-0.48)."""
    anatomy.heart.cardiothoracic_ratio = rng.uniform(0.58, 0.68)
    return CardiomegalyParams(ctr=rounded(anatomy.heart.cardiothoracic_ratio, 2))


def add_pericardial_effusion(anatomy: Anatomy, rng) -> PericardialEffusionParams:
    """A 10-22 mm fluid layer around the heart (inside the epicardial fat)."""
    anatomy.heart.pericardial_effusion_mm = rng.uniform(10, 22)
    return PericardialEffusionParams(thickness_mm=int(round(anatomy.heart.pericardial_effusion_mm)))


def widen_mediastinum(anatomy: Anatomy, rng) -> MediastinumParams:
    """Widen the upper mediastinum by 30-50 mm from below the carina up to the apices."""
    widening = rng.uniform(30, 50)
    carina_si = anatomy.trachea.carina_si
    anatomy.mediastinal_widening = MediastinalWidening(widening, carina_si - 35.0,
                                                       anatomy.lungs["right"].apex_si - 15.0)
    return MediastinumParams(width_mm=int(round(anatomy.mediastinum_width + widening)),
                             widening_mm=int(round(widening)))


def raise_diaphragm(anatomy: Anatomy, rng) -> AtelectasisParams:
    """Atelectasis, volume loss: choose the lobe and raise that side's diaphragm by 10-20 mm."""
    side, lobe = choose_location(rng, lobes=("lower", "lower", "lower", "middle", "upper"))
    raise_mm = rng.uniform(10, 20)
    anatomy.lungs[side].base_si += raise_mm
    anatomy.lungs[side].diaphragm_raise_mm = raise_mm
    return AtelectasisParams(side=side, lobe=lobe, diaphragm_raise_mm=int(round(raise_mm)))


def collapse_lung(anatomy: Anatomy, rng) -> PneumothoraxParams:
    """Pneumothorax: one lung shrinks to 62-80 % of its width, leaving a lateral air rim."""
    side = SIDES[int(rng.integers(2))]
    collapse = rng.uniform(0.62, 0.8)
    lung = anatomy.lungs[side]
    lung.collapse = collapse
    return PneumothoraxParams(side=side, rim_mm=int(round(2 * lung.half_rl * (1 - collapse))),
                              collapse=rounded(collapse, 2))


# ----------------------------------------------------------------------------------------------- pleura
def _pleural_rim(canvas: Canvas, side, thickness):
    """Lung-field voxels (H, W, D) of `side` within `thickness` mm of the chest wall, and the azimuth (H, W)."""
    anatomy, grid = canvas.anatomy, canvas.grid
    cavity = anatomy.cavity
    mean_half = 0.5 * (cavity.half_ap + cavity.half_rl)
    rim_2d = canvas.cavity_radius_2d >= 1.0 - thickness / mean_half  # (H, W)
    ap_norm = (grid.axes[0][:, None] - cavity.center_ap) / cavity.half_ap
    rl_norm = (grid.axes[1][None, :] - anatomy.midline_rl) / cavity.half_rl
    azimuth_2d = np.arctan2(ap_norm, np.abs(rl_norm))
    rim = rim_2d[:, :, None] & canvas.lung_field & (canvas.lung_side == SIDES.index(side) + 1)
    return rim, azimuth_2d


def paint_effusion(canvas: Canvas, rng, params=None) -> EffusionParams:
    """Dependent (posterior, basal) fluid 20-55 mm deep, right 40 %, left 25 %, bilateral 35 %."""
    draw = rng.random()
    sides = ["right"] if draw < 0.4 else ["left"] if draw < 0.65 else ["right", "left"]
    grid, anatomy = canvas.grid, canvas.anatomy
    depths = {}
    hu = rng.uniform(5, 20)
    for side in sides:
        depth = rng.uniform(20, 55)
        depths[side] = int(round(depth))
        lung = effective_lung(anatomy.lungs[side])
        scale = apex_scale(lung, grid.axes[2])[None, :]  # (1, D)
        lateral = np.clip(np.abs(grid.axes[1][:, None] - lung.center_rl)
                          / (lung.half_rl * np.maximum(scale, 1e-3)), 0, 1)  # (W, D)
        posterior_border = lung.center_ap + lung.half_ap * scale * (1.0 - lateral ** lung.exponent) ** (
            1.0 / lung.exponent)  # (W, D)
        height = lung.apex_si - lung.base_si
        basal = np.clip(1.0 - (grid.axes[2] - lung.base_si) / (0.55 * height), 0.0, 1.0) ** 0.6  # (D,)
        level = posterior_border - depth * basal[None, :]
        fluid = (grid.axes[0][:, None, None] > level[None, :, :]) & (basal[None, None, :] > 0)
        fluid &= canvas.lung_field & (canvas.lung_side == SIDES.index(side) + 1)
        canvas.paint(EVERYWHERE, fluid, hu, Tissue.FLUID, record="effusion")
        canvas.lung_field &= ~fluid
    return EffusionParams(sides=sides, depth_mm=depths, hu=int(round(hu)))


def paint_pleural_plaque(canvas: Canvas, rng, params=None) -> PleuralPlaqueParams:
    """Pleural thickening along one chest wall, with 2-4 calcified plaques in 70 %."""
    side = SIDES[int(rng.integers(2))]
    wall = ("lateral", "posterior", "anterior")[int(rng.choice(3, p=(0.5, 0.35, 0.15)))]
    wall_azimuth = {"lateral": rng.uniform(-0.3, 0.3), "posterior": rng.uniform(0.6, 0.9),
                    "anterior": rng.uniform(-0.9, -0.6)}[wall]
    calcified = bool(rng.random() < 0.7)
    thickness = rng.uniform(4, 8) if calcified else rng.uniform(6, 10)
    thickness = max(thickness, 0.8 * max(canvas.grid.spacing[:2]))
    anatomy, grid = canvas.anatomy, canvas.grid
    lung = anatomy.lungs[side]
    center_si = lung.base_si + rng.uniform(0.3, 0.6) * (lung.apex_si - lung.base_si)
    half_height = rng.uniform(25, 45)
    half_azimuth = rng.uniform(0.35, 0.55)
    rim, azimuth_2d = _pleural_rim(canvas, side, thickness)
    window = ((np.abs(azimuth_2d - wall_azimuth) < half_azimuth)[:, :, None]
              & (np.abs(grid.axes[2] - center_si) < half_height)[None, None, :])
    canvas.paint(EVERYWHERE, rim & window, rng.uniform(40, 60), Tissue.SOFT_TISSUE, record="pleural_plaque")
    plaques = 0
    if calcified:
        plaques = int(rng.integers(2, 5))
        for _ in range(plaques):
            azimuth = wall_azimuth + rng.uniform(-half_azimuth, half_azimuth)
            si = center_si + rng.uniform(-half_height, half_height)
            plaque = ((np.abs(azimuth_2d - azimuth) < rng.uniform(0.12, 0.2))[:, :, None]
                      & (np.abs(grid.axes[2] - si) < rng.uniform(8, 15))[None, None, :])
            canvas.paint(EVERYWHERE, rim & window & plaque, rng.uniform(350, 650), Tissue.CALCIUM,
                         allowed=(Tissue.SOFT_TISSUE,), record="pleural_plaque")
    return PleuralPlaqueParams(side=side, wall=wall, thickness_mm=int(round(thickness)), calcified=calcified,
                               plaques=plaques, extent_mm=int(round(2 * half_height)))


# ----------------------------------------------------------------------------------------------- mediastinum
def _lymph_node_stations(anatomy: Anatomy) -> dict:
    trachea, mid = anatomy.trachea, anatomy.midline_rl
    si = trachea.carina_si
    root = anatomy.aorta_path[0]
    return {
        "right paratracheal": (trachea.center_ap, mid - trachea.radius - 12.0, si + 22.0),
        "aortopulmonary window": (trachea.center_ap - 6.0, mid + trachea.radius + 14.0, si + 6.0),
        "subcarinal": (trachea.center_ap + 12.0, mid, si - 18.0),
        "prevascular": (root[0] - 18.0, mid - 2.0, si + 20.0),
        "right hilar": anatomy.hila["right"],
        "left hilar": anatomy.hila["left"],
    }


def _paint_lymph_nodes(canvas: Canvas, rng, count, lo_mm, hi_mm, kind):
    """`count` enlarged nodes (short axis lo..hi mm) at distinct stations -> (stations, largest mm)."""
    stations = _lymph_node_stations(canvas.anatomy)
    names = list(stations)
    chosen = [names[i] for i in sorted(rng.choice(len(names), size=count, replace=False))]
    largest = 0.0
    for name in chosen:
        short_axis = rng.uniform(lo_mm, hi_mm)
        largest = max(largest, short_axis)
        center = np.asarray(stations[name]) + rng.normal(0, 3, 3)
        radii = (short_axis / 2, short_axis / 2 * rng.uniform(1.0, 1.2), short_axis / 2 * rng.uniform(1.1, 1.5))
        found = ellipsoid(canvas.grid, center, radii)
        if found is not None:
            box, q = found
            canvas.paint(box, q <= 1.0, rng.uniform(35, 50), Tissue.SOFT_TISSUE,
                         allowed=MEDIASTINUM_OR_LUNG + (Tissue.LESION,), record=kind)
    return chosen, int(round(largest))


def paint_mediastinum(canvas: Canvas, rng, params: MediastinumParams) -> MediastinumParams:
    """Soft tissue filling the widened mediastinum, plus 2-4 enlarged nodes (15-28 mm)."""
    grid, anatomy = canvas.grid, canvas.anatomy
    widening = anatomy.mediastinal_widening
    mediastinum_ap = 0.5 * (anatomy.trachea.center_ap + anatomy.aorta_path[0][0])
    band = (np.abs(grid.axes[1] - anatomy.midline_rl)[None, :, None] < canvas.mediastinal_halfgap[None, None, :] + 2.0)
    band = (band & (np.abs(grid.axes[0] - mediastinum_ap)[:, None, None] < 45.0)
            & ((grid.axes[2] > widening.si_lo) & (grid.axes[2] < widening.si_hi))[None, None, :])
    canvas.paint(EVERYWHERE, band, rng.uniform(32, 45), Tissue.SOFT_TISSUE, allowed=(Tissue.MEDIASTINAL_FAT,),
                 record="mediastinum")
    params.stations, params.largest_node_mm = _paint_lymph_nodes(canvas, rng, int(rng.integers(2, 5)), 15, 28,
                                                                 "mediastinum")
    return params


def paint_lymphadenopathy(canvas: Canvas, rng, params=None) -> LymphadenopathyParams:
    """3-5 enlarged mediastinal / hilar nodes (20-32 mm)."""
    stations, largest = _paint_lymph_nodes(canvas, rng, int(rng.integers(3, 6)), 20, 32, "lymphadenopathy")
    return LymphadenopathyParams(stations=stations, largest_node_mm=largest)


def paint_hiatal_hernia(canvas: Canvas, rng, params=None) -> HiatalHerniaParams:
    """A soft-tissue sac behind the heart above the diaphragm with an air-fluid level."""
    anatomy, grid = canvas.anatomy, canvas.grid
    spine, mid = anatomy.spine, anatomy.midline_rl
    radii = (rng.uniform(18, 28), rng.uniform(22, 32), rng.uniform(22, 32))
    center = (spine.center_ap - spine.radius_ap - radii[0] - 4.0, mid + rng.uniform(0, 10),
              float(np.median(canvas.diaphragm_si_2d)) + 0.3 * radii[2])
    allowed = MEDIASTINUM_OR_LUNG + (Tissue.HEART, Tissue.SOFT_TISSUE, Tissue.ABDOMEN, Tissue.FLUID)
    found = ellipsoid(grid, center, radii)
    if found is None:
        return HiatalHerniaParams(size_mm=int(round(2 * max(radii))))
    box, q = found
    canvas.paint(box, q <= 1.0, 40.0, Tissue.SOFT_TISSUE, allowed=allowed, record="hiatal_hernia")
    inner = q <= (1.0 - 4.0 / min(radii)) ** 2
    ap = grid.axes[0][box[0]][:, None, None]
    level = center[0] - 0.1 * radii[0]
    # air anterior (non-dependent), fluid posterior
    canvas.paint(box, inner & (ap < level), -1000.0, Tissue.LESION, allowed=(Tissue.SOFT_TISSUE,))
    canvas.paint(box, inner & (ap >= level), rng.uniform(5, 20), Tissue.LESION, allowed=(Tissue.SOFT_TISSUE,))
    return HiatalHerniaParams(size_mm=int(round(2 * max(radii[1], radii[2]))), contents="air and fluid")


# ----------------------------------------------------------------------------------------------- heart, vessels
def paint_aortic_calcification(canvas: Canvas, rng, params=None) -> AorticCalcificationParams:
    """4-8 curved calcified plaques (15-30 mm long) in the aortic wall."""
    grid, path, radii = canvas.grid, canvas.anatomy.aorta_path, canvas.anatomy.aorta_radii
    plaques = int(rng.integers(4, 9))
    thickness = max(3.0, 0.9 * grid.min_radius)
    for _ in range(plaques):
        i = int(rng.integers(1, len(path) - 1))
        point, r = np.asarray(path[i]), radii[i]
        tangent = unit(np.asarray(path[i + 1]) - np.asarray(path[i - 1]))
        length = rng.uniform(15, 30)
        normal = unit(np.cross(tangent, rng.normal(0, 1, 3)))
        found = segment_distance(grid, point - tangent * length / 2, point + tangent * length / 2, r + 1.0)
        if found is None:
            continue
        box, dist = found
        ap, rl, si = (grid.axes[axis][box[axis]] for axis in range(3))
        facing = ((ap[:, None, None] - point[0]) * normal[0] + (rl[None, :, None] - point[1]) * normal[1]
                  + (si[None, None, :] - point[2]) * normal[2])
        wall = (dist <= r + 0.5) & (dist >= r - thickness) & (facing > -0.2 * r)
        canvas.paint(box, wall, rng.uniform(700, 1100), Tissue.CALCIUM,
                     allowed=MEDIASTINUM_OR_LUNG + (Tissue.GREAT_VESSEL, Tissue.ABDOMEN), record="aortic_calc")
    return AorticCalcificationParams(plaques=plaques)


def _heart_surface_point(heart: Heart, phi, height):
    """Point on the heart ellipsoid at short-axis angle phi (0 = posterior, -pi/2 = right) and relative height."""
    v = np.array([math.cos(phi), math.sin(phi) * 0.6, height])
    v = v / np.linalg.norm(v)
    local = np.array([v[0] * heart.radius_ap, v[1] * heart.radius_rl, v[2] * heart.radius_si]) * 0.98
    cos_a, sin_a = math.cos(heart.axis_angle), math.sin(heart.axis_angle)  # heart axes (ap', rl') -> (ap, rl)
    c = heart.center
    return np.array([c[0] + cos_a * local[0] - sin_a * local[1], c[1] + sin_a * local[0] + cos_a * local[1],
                     c[2] + local[2]])


def paint_coronary_calcification(canvas: Canvas, rng, params=None) -> CoronaryCalcificationParams:
    """3-5 calcified coronary segments on the anterior / upper heart surface."""
    heart, grid = canvas.anatomy.heart, canvas.grid
    segments = int(rng.integers(3, 6))
    for _ in range(segments):
        phi, height = rng.uniform(-math.pi, 0.2), rng.uniform(0.1, 0.6)
        start = _heart_surface_point(heart, phi, height)
        end = _heart_surface_point(heart, phi + rng.uniform(-0.5, 0.5), height + rng.uniform(-0.3, 0.1))
        r = max(rng.uniform(3.0, 4.5), 1.0 * grid.min_radius)
        found = segment_distance(grid, start, end, r)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= r, rng.uniform(600, 1000), Tissue.CALCIUM,
                         allowed=MEDIASTINUM_OR_LUNG + (Tissue.HEART, Tissue.FLUID, Tissue.GREAT_VESSEL),
                         record="coronary_calc")
    return CoronaryCalcificationParams(segments=segments)


# ----------------------------------------------------------------------------------------------- bone, devices
def paint_fracture(canvas: Canvas, rng, params=None) -> FractureParams:
    """A displaced rib fracture (ribs 3-10): a gap, the fragment moved inwards and callus around the site."""
    grid, anatomy = canvas.grid, canvas.anatomy
    ribs, cavity, mid = anatomy.ribs, anatomy.cavity, anatomy.midline_rl
    rows, cols, rib_index, bone, azimuth, sign = rib_geometry(grid, anatomy, canvas.rib_band_2d)
    side = SIDES[int(rng.integers(2))]
    s = SIDE_SIGN[side]
    lung = anatomy.lungs[side]
    site_azimuth = rng.uniform(-0.6, 0.8)
    site_ap_norm = math.sin(site_azimuth)
    top_rib = int(round((lung.apex_si + 5.0 - ribs.slope_mm * 0.9 - ribs.offset_si) / ribs.pitch_mm))
    si_lo, si_hi = lung.base_si + 40.0, lung.apex_si - 30.0
    candidates = [k for k in range(top_rib - 11, top_rib + 1)
                  if si_lo < ribs.offset_si + k * ribs.pitch_mm + ribs.slope_mm * site_ap_norm < si_hi
                  and 3 <= top_rib - k + 1 <= 10]
    broken = candidates[int(rng.integers(len(candidates)))] if candidates else top_rib - 5
    gap = max(rng.uniform(12, 18), 1.5 * max(grid.spacing[:2]))
    fragment = rng.uniform(20, 30)
    displacement = max(rng.uniform(5, 10), 1.0 * max(grid.spacing[:2]))
    mean_half = 0.5 * (cavity.half_ap + cavity.half_rl)
    this_rib = bone & (rib_index == broken) & (sign == s)[:, None]  # (n, D)
    arc = (azimuth - site_azimuth)[:, None] * mean_half  # arc length from the site (mm)
    end = 1.0 if rng.random() < 0.5 else -1.0
    gap_mask = this_rib & (np.abs(arc) < gap / 2)
    fragment_mask = this_rib & (end * arc >= gap / 2) & (end * arc < gap / 2 + fragment)
    record = np.zeros(grid.shape, bool)
    hu = anatomy.hu
    # displaced fragment: move inward (towards the cavity centre), at least one voxel
    inward_ap, inward_rl = -math.sin(site_azimuth), -s * math.cos(site_azimuth)
    shift = [int(round(inward_ap * displacement / grid.spacing[0])),
             int(round(inward_rl * displacement / grid.spacing[1]))]
    if shift == [0, 0]:
        rl_major = abs(inward_rl) > abs(inward_ap)
        shift[int(rl_major)] = -1 if (inward_rl if rl_major else inward_ap) < 0 else 1
    frag_i, frag_k = np.nonzero(fragment_mask)
    source = (rows[frag_i], cols[frag_i], frag_k)
    canvas.hu[source], canvas.tissue[source] = hu.muscle, Tissue.MUSCLE
    record[source] = True
    gap_i, gap_k = np.nonzero(gap_mask)
    gap_voxels = (rows[gap_i], cols[gap_i], gap_k)
    canvas.hu[gap_voxels], canvas.tissue[gap_voxels] = hu.muscle, Tissue.MUSCLE
    record[gap_voxels] = True
    target = (np.clip(source[0] + shift[0], 0, grid.shape[0] - 1), np.clip(source[1] + shift[1], 0, grid.shape[1] - 1),
              source[2])
    canvas.hu[target], canvas.tissue[target] = hu.bone, Tissue.BONE
    record[target] = True
    # callus around the fracture site (in the soft tissue around the rib ends, not in the gap)
    rho_mid = 1.0 + 0.5 * anatomy.trunk.rib_mm / mean_half
    site_radius = (abs(math.cos(site_azimuth)) ** cavity.exponent + abs(math.sin(site_azimuth)) ** cavity.exponent) ** (
        -1.0 / cavity.exponent) * rho_mid
    site = (cavity.center_ap + cavity.half_ap * site_radius * math.sin(site_azimuth),
            mid + s * cavity.half_rl * site_radius * math.cos(site_azimuth),
            ribs.offset_si + broken * ribs.pitch_mm + ribs.slope_mm * math.sin(site_azimuth) * site_radius)
    callus_r = max(rng.uniform(12, 16), 1.5 * grid.min_radius)
    found = ellipsoid(grid, site, (callus_r, callus_r, max(0.8 * callus_r, 0.8 * grid.spacing[2])))
    if found is not None:
        box, q = found
        callus = canvas.paint(box, (q <= 1.0) & ~record[box], rng.uniform(400, 550), Tissue.CALCIUM,
                              allowed=(Tissue.MUSCLE, Tissue.FAT, Tissue.MEDIASTINAL_FAT))
        record[box] |= callus
    canvas.records["fracture"] = record
    return FractureParams(side=side, rib=int(top_rib - broken + 1), gap_mm=int(round(gap)),
                          displacement_mm=int(round(displacement)))


def paint_device(canvas: Canvas, rng, params=None) -> DeviceParams:
    """Pacemaker (generator + leads to the right heart), port catheter or central venous catheter (metal)."""
    grid, anatomy = canvas.grid, canvas.anatomy
    kind = ("pacemaker", "port catheter", "central venous catheter")[int(rng.choice(3, p=(0.5, 0.35, 0.15)))]
    side = "left" if rng.random() < 0.75 else "right"
    if kind == "central venous catheter":
        side = "right" if rng.random() < 0.75 else "left"
    s = SIDE_SIGN[side]
    trunk, mid, heart = anatomy.trunk, anatomy.midline_rl, anatomy.heart
    metal = rng.uniform(2500, 3000)
    box_rl = mid + s * 0.55 * trunk.half_rl
    x = abs(box_rl - trunk.center_rl) / trunk.half_rl
    front_ap = trunk.center_ap - trunk.half_ap * (1 - x ** trunk.exponent) ** (1 / trunk.exponent)
    apex_si = anatomy.lungs[side].apex_si
    lead_r = max(1.5, grid.min_radius)
    allowed = tuple(code for code in range(Tissue.COUNT) if code != Tissue.AIR)
    if kind in ("pacemaker", "port catheter"):
        radii = (5.0, 24.0, 22.0) if kind == "pacemaker" else (6.0, 13.0, 13.0)
        radii = (max(radii[0], grid.min_radius * 1.2), radii[1], max(radii[2], grid.spacing[2]))
        generator = (front_ap + trunk.fat_mm * 0.5 + 3.0, box_rl, apex_si - rng.uniform(5, 20))
        found = ellipsoid(grid, generator, radii, power=4.0)
        if found is not None:
            box, q = found
            canvas.paint(box, q <= 1.0, metal, Tissue.METAL, allowed=allowed, record="device")
        points = [generator, (generator[0] + 15.0, mid + s * 45.0, generator[2] + 10.0)]
    else:
        entry_rl = anatomy.svc_top[1] - s * 10.0 if side == "right" else mid + 40.0
        points = [(anatomy.svc_top[0] - 5.0, entry_rl, float(grid.axes[2][-1]) + 5.0)]
    points += [anatomy.svc_top, anatomy.svc_bottom]
    if kind == "pacemaker":
        cos_a, sin_a = math.cos(heart.axis_angle), math.sin(heart.axis_angle)
        c, long_r = heart.center, heart.radius_rl
        right_atrium = (c[0] + 0.55 * long_r * sin_a * 0.3, c[1] - 0.55 * long_r * cos_a, c[2] + 0.1 * heart.radius_si)
        right_ventricle = (c[0] - 0.6 * long_r * sin_a, c[1] + 0.6 * long_r * cos_a, c[2] - 0.3 * heart.radius_si)
        points += [right_atrium, right_ventricle]
    for start, end in zip(points[:-1], points[1:], strict=True):
        found = segment_distance(grid, start, end, lead_r)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= lead_r, metal, Tissue.METAL, allowed=allowed, record="device")
    return DeviceParams(kind=kind, side=side)
