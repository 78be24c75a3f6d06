"""Painters of the lung findings (parenchyma and airways) and the placement helpers they share.

A painter ``paint_<kind>(canvas, rng, params)`` draws one finding kind from its own random stream onto the
canvas, records the painted voxels under its kind and returns the finding's parameters. The order of the draws
inside each painter is part of the generator's contract (byte-identical output for a seed).
"""

from __future__ import annotations

import math

import numpy as np

from .anatomy import apex_scale, effective_lung, lung_point
from .constants import LOBE_WINDOWS, SIDES, Tissue, tissue_in
from .finding_params import (
    AtelectasisParams,
    BronchiectasisParams,
    ConsolidationParams,
    EdemaParams,
    EmphysemaParams,
    FibrosisParams,
    LesionSite,
    MosaicParams,
    NoduleParams,
    OpacityParams,
    PeribronchialParams,
    PneumoniaParams,
    SeptalParams,
)
from .geometry import ellipsoid, segment_distance, superellipse_radius, unit
from .render import EVERYWHERE, Canvas


# ----------------------------------------------------------------------------------------------- placement
def choose_location(rng, sides=SIDES, lobes=None) -> tuple[str, str]:
    """Random (side, lobe); default lobe odds 0.4 / 0.2 / 0.4 right, 0.5 / 0.5 left; `lobes` lists equally
    likely lobes (repeats weigh them; "middle" is dropped on the left)."""
    side = sides[int(rng.integers(len(sides)))]
    if lobes is None:
        if side == "right":
            lobes, odds = ("upper", "middle", "lower"), (0.4, 0.2, 0.4)
        else:
            lobes, odds = ("upper", "lower"), (0.5, 0.5)
    else:
        lobes = [lobe for lobe in lobes if not (side == "left" and lobe == "middle")]
        odds = None
    return side, lobes[int(rng.choice(len(lobes), p=odds))]


def place_in_lobe(canvas: Canvas, rng, side, lobe, radius, tries=25):
    """A point of `lobe` whose ball of `radius` lies mostly (>= 75 %) in the lung field, else the best of `tries`."""
    lung = effective_lung(canvas.anatomy.lungs[side])
    (height_lo, height_hi), (ap_lo, ap_hi) = LOBE_WINDOWS[lobe]
    best, best_fraction = None, -1.0
    for _ in range(tries):
        point = lung_point(lung, rng.uniform(height_lo, height_hi), rng.uniform(ap_lo, ap_hi), rng.uniform(-0.2, 0.5))
        fraction = canvas.lung_fraction(point, max(radius, canvas.grid.min_radius * 1.5))
        if fraction >= 0.75:
            return point
        if fraction > best_fraction:
            best, best_fraction = point, fraction
    return best


def ellipsoid_boxes(canvas: Canvas, centers_radii, angle=0.0):
    """Union of ellipsoids -> list of (slices, q) (those inside the volume)."""
    out = []
    for center, radii in centers_radii:
        found = ellipsoid(canvas.grid, center, radii, angle)
        if found is not None:
            out.append(found)
    return out


def axial_extent(centers_radii) -> list[int]:
    """Axial-plane extent (mm, larger first) of a union of ellipsoids."""
    lo = np.min([[c[0] - r[0], c[1] - r[1]] for c, r in centers_radii], 0)
    hi = np.max([[c[0] + r[0], c[1] + r[1]] for c, r in centers_radii], 0)
    extent = sorted((hi - lo).tolist(), reverse=True)
    return [int(round(e)) for e in extent]


def cluster(canvas: Canvas, rng, side, lobe, count, r_lo, r_hi, spread):
    """`count` ellipsoids (center, radii) around a point of the lobe, radii in [r_lo, r_hi] mm."""
    center0 = np.asarray(place_in_lobe(canvas, rng, side, lobe, r_hi))
    out = []
    for i in range(count):
        center = center0 if i == 0 else center0 + rng.uniform(-spread, spread, 3) * (1.0, 1.0, 0.7)
        r = rng.uniform(r_lo, r_hi)
        out.append((tuple(center), (r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.1), r * rng.uniform(0.8, 1.2))))
    return out


def soft_paint(canvas: Canvas, boxes, target_hu, kind, edge=0.35) -> None:
    """Raise lung HU towards `target_hu` with a soft edge, keeping denser voxels (vessels)."""
    for box, q in boxes:
        weight = np.clip((1.0 - np.sqrt(q)) / edge, 0.0, 1.0) * canvas.lung_field[box]
        hu = canvas.hu[box]
        new = hu + weight * (target_hu - hu)
        raised = (weight > 0) & (new > hu)
        hu[raised] = new[raised]
        canvas.tissue[box][raised & (weight > 0.5)] = Tissue.LESION
        canvas.record(kind, box, raised)


def peripheral_lines(canvas: Canvas, rng, period, width, region):
    """Septal lines: planes along AP and RL every `period` mm, at least one voxel thick, inside `region`."""
    grid = canvas.grid
    offset = rng.uniform(0, period, 2)
    lines = [np.abs(np.mod(grid.axes[a] - offset[a], period) - period / 2)
             >= period / 2 - max(width, grid.spacing[a]) / 2 for a in range(2)]
    return region & (lines[0][:, None, None] | lines[1][None, :, None])


def peripheral_region(canvas: Canvas, fraction):
    """Lung field (H, W, D) outside `fraction` of each lung's normalised axial radius."""
    grid = canvas.grid
    out = np.zeros(grid.shape, bool)
    for i, side in enumerate(SIDES):
        lung = effective_lung(canvas.anatomy.lungs[side])
        rho = superellipse_radius(grid, lung.center_ap, lung.center_rl, lung.half_ap, lung.half_rl, lung.exponent)
        scale = apex_scale(lung, grid.axes[2])
        out |= (rho[:, :, None] >= fraction * scale[None, None, :]) & (canvas.lung_side == i + 1)
    return out & canvas.lung_field


# ----------------------------------------------------------------------------------------------- focal
def paint_nodule(canvas: Canvas, rng, params=None) -> NoduleParams:
    """One nodule / mass (70 %) or 2-3 (the first 20-40 mm, the others 10-16 mm)."""
    count = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    sites = []
    for i in range(count):
        side, lobe = choose_location(rng)
        d1 = rng.uniform(20, 40) if i == 0 else rng.uniform(10, 16)
        d2, d3 = d1 * rng.uniform(0.75, 1.0), d1 * rng.uniform(0.8, 1.0)
        center = place_in_lobe(canvas, rng, side, lobe, d1 / 2)
        angle = rng.uniform(0, math.pi)
        found = ellipsoid(canvas.grid, center, (d2 / 2, d1 / 2, d3 / 2), angle)
        if found is not None:
            box, q = found
            canvas.paint(box, q <= 1.0, rng.uniform(25, 45), Tissue.LESION, record="nodule",
                         within=canvas.lung_field[box])
        sites.append(LesionSite(side=side, lobe=lobe, size_mm=[int(round(d1)), int(round(d2))]))
    largest = sites[0]
    return NoduleParams(count=count, side=largest.side, lobe=largest.lobe, size_mm=largest.size_mm,
                        kind="mass" if largest.size_mm[0] >= 30 else "nodule", others=sites[1:])


def paint_ggo(canvas: Canvas, rng, params=None) -> OpacityParams:
    """Ground-glass opacity: two soft-edged blobs raised to -520..-330 HU."""
    side, lobe = choose_location(rng)
    blobs = cluster(canvas, rng, side, lobe, 2, 18, 32, 15)
    target = rng.uniform(-520, -330)
    soft_paint(canvas, ellipsoid_boxes(canvas, blobs), target, "ggo")
    return OpacityParams(side=side, lobe=lobe, size_mm=axial_extent(blobs), hu=int(round(target)))


def paint_consolidation(canvas: Canvas, rng, params=None) -> ConsolidationParams:
    """2-3 solid blobs (20-45 HU), with air bronchograms in 60 %."""
    side, lobe = choose_location(rng)
    blobs = cluster(canvas, rng, side, lobe, int(rng.integers(2, 4)), 16, 30, 18)
    hu = rng.uniform(20, 45)
    for box, q in ellipsoid_boxes(canvas, blobs):
        canvas.paint(box, q <= 1.0, hu, Tissue.LESION, record="consolidation", within=canvas.lung_field[box])
    bronchogram = bool(rng.random() < 0.6)
    if bronchogram:
        center = np.asarray(blobs[0][0])
        for _ in range(2):
            direction = unit(rng.normal(0, 1, 3)) * max(blobs[0][1]) * 1.2
            found = segment_distance(canvas.grid, center - 0.3 * direction, center + direction, 3.0)
            if found is not None:
                box, dist = found
                consolidated = canvas.records["consolidation"][box]
                canvas.paint(box, (dist <= max(2.5, 0.7 * canvas.grid.min_radius)) & consolidated, -900.0,
                             Tissue.LESION)
    return ConsolidationParams(side=side, lobe=lobe, size_mm=axial_extent(blobs), hu=int(round(hu)),
                               air_bronchogram=bronchogram)


def paint_pneumonia(canvas: Canvas, rng, params=None) -> PneumoniaParams:
    """Patchy exudates: per side 2-4 solid cores with ground-glass halos, bilateral in 40 %."""
    sides = ["right", "left"] if rng.random() < 0.4 else [SIDES[int(rng.integers(2))]]
    lobe = "lower" if rng.random() < 0.75 else "upper"
    patches = 0
    for side in sides:
        cores = cluster(canvas, rng, side, lobe, int(rng.integers(2, 5)), 9, 16, 25)
        patches += len(cores)
        halos = [(center, tuple(1.7 * x for x in radii)) for center, radii in cores]
        soft_paint(canvas, ellipsoid_boxes(canvas, halos), rng.uniform(-480, -380), "pneumonia", edge=0.5)
        core_hu = rng.uniform(-40, 30)
        for box, q in ellipsoid_boxes(canvas, cores):
            canvas.paint(box, q <= 1.0, core_hu, Tissue.LESION, record="pneumonia", within=canvas.lung_field[box])
    return PneumoniaParams(sides=sides, lobe=lobe, patches=patches)


def paint_atelectasis(canvas: Canvas, rng, params: AtelectasisParams) -> AtelectasisParams:
    """Collapsed lobe: a dense cone from the hilum towards the lobe (its diaphragm was raised beforehand)."""
    side, lobe = params.side, params.lobe
    lung = effective_lung(canvas.anatomy.lungs[side])
    hilum = np.asarray(canvas.anatomy.hila[side], np.float64)
    (height_lo, height_hi), (ap_lo, ap_hi) = LOBE_WINDOWS[lobe]
    target = np.asarray(lung_point(lung, (height_lo + height_hi) / 2 - 0.05, (ap_lo + ap_hi) / 2, 0.6))
    axis = unit(target - hilum)
    half_angle = rng.uniform(0.35, 0.5)
    length = 1.8 * float(np.linalg.norm(target - hilum))
    grid = canvas.grid
    box, (ap, rl, si) = grid.box(hilum - length, hilum + length)
    v_ap, v_rl, v_si = ap - hilum[0], rl - hilum[1], si - hilum[2]
    dist = np.sqrt(v_ap * v_ap + v_rl * v_rl + v_si * v_si) + 1e-6
    cos_angle = (v_ap * axis[0] + v_rl * axis[1] + v_si * axis[2]) / dist
    cone = ((cos_angle >= math.cos(half_angle)) & (dist <= length)
            & (canvas.lung_side[box] == SIDES.index(side) + 1))
    painted = canvas.paint(box, cone, rng.uniform(25, 45), Tissue.LESION, record="atelectasis",
                           within=canvas.lung_field[box])
    params.length_mm = int(round(float(dist[painted].max()))) if painted.any() else 0
    return params


def paint_emphysema(canvas: Canvas, rng, params=None) -> EmphysemaParams:
    """5-12 near-air (-990..-965 HU) spheres of 8-18 mm radius in the upper lobes."""
    count = int(rng.integers(5, 13))
    largest_r = 0.0
    for _ in range(count):
        side = SIDES[int(rng.integers(2))]
        r = max(rng.uniform(8, 18), 1.5 * canvas.grid.min_radius)
        largest_r = max(largest_r, r)
        center = place_in_lobe(canvas, rng, side, "upper", r)
        found = ellipsoid(canvas.grid, center, (r, r, r * rng.uniform(0.8, 1.2)))
        if found is not None:
            box, q = found
            canvas.paint(box, q <= 1.0, rng.uniform(-990, -965), Tissue.LESION, record="emphysema",
                         within=canvas.lung_field[box])
    return EmphysemaParams(count=count, max_mm=int(round(2 * largest_r)), distribution="upper lobes")


def paint_fibrosis(canvas: Canvas, rng, params=None) -> FibrosisParams:
    """8-14 linear strands (30-60 mm) around a point of a (mostly upper) lobe."""
    side, lobe = choose_location(rng, lobes=("upper", "upper", "upper", "lower", "middle"))
    center = np.asarray(place_in_lobe(canvas, rng, side, lobe, 20.0))
    strands = int(rng.integers(8, 15))
    hu = rng.uniform(-100, 0)
    for _ in range(strands):
        start = center + rng.uniform(-20, 20, 3)
        end = start + unit(rng.normal(0, 1, 3)) * rng.uniform(30, 60)
        r = max(rng.uniform(2.5, 3.5), 0.8 * canvas.grid.min_radius)
        found = segment_distance(canvas.grid, start, end, r)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= r, hu, Tissue.LESION, record="fibrosis", within=canvas.lung_field[box])
    return FibrosisParams(side=side, lobe=lobe, strands=strands)


def paint_bronchiectasis(canvas: Canvas, rng, params=None) -> BronchiectasisParams:
    """3-5 dilated air-filled bronchi (radius 6-10 mm) with walls, fanning out towards a (mostly lower) lobe."""
    side, lobe = choose_location(rng, lobes=("lower", "lower", "lower", "middle", "upper"))
    hilum = np.asarray(canvas.anatomy.hila[side])
    target = np.asarray(place_in_lobe(canvas, rng, side, lobe, 15.0))
    root = hilum + 0.35 * (target - hilum)
    count = int(rng.integers(3, 6))
    largest_r = 0.0
    for _ in range(count):
        r = max(rng.uniform(6, 10), 1.2 * canvas.grid.min_radius)
        largest_r = max(largest_r, r)
        wall = max(2.5, 0.8 * canvas.grid.min_radius)
        end = root + unit(target - root + rng.normal(0, 15, 3)) * rng.uniform(40, 65)
        found = segment_distance(canvas.grid, root, end, r + wall)
        if found is not None:
            box, dist = found
            canvas.paint(box, dist <= r + wall, 20.0, Tissue.LESION, record="bronchiectasis",
                         within=canvas.lung_field[box])
            canvas.paint(box, dist <= r, -1000.0, Tissue.LESION, record="bronchiectasis",
                         within=canvas.lung_field[box])
    return BronchiectasisParams(side=side, lobe=lobe, count=count, diameter_mm=int(round(2 * largest_r)))


# ----------------------------------------------------------------------------------------------- diffuse
def paint_edema(canvas: Canvas, rng, params=None) -> EdemaParams:
    """Both lungs denser by 170-240 HU (more posteriorly) with peripheral septal lines."""
    grid, cavity = canvas.grid, canvas.anatomy.cavity
    delta = rng.uniform(170, 240)
    parenchyma = canvas.lung_field & (canvas.tissue == Tissue.LUNG)
    gradient = ((grid.axes[0] - cavity.center_ap) / cavity.half_ap * 40.0)[:, None, None]
    canvas.paint(EVERYWHERE, parenchyma, canvas.hu + delta + gradient, Tissue.LESION, record="edema")
    period = rng.uniform(14, 20)
    lines = peripheral_lines(canvas, rng, period, max(2.0, 0.5 * grid.min_radius),
                             parenchyma & peripheral_region(canvas, 0.65))
    canvas.paint(EVERYWHERE, lines, rng.uniform(-300, -200), Tissue.LESION, record="edema")
    return EdemaParams(delta_hu=int(round(delta)), septal_period_mm=int(round(period)))


def paint_septal(canvas: Canvas, rng, params=None) -> SeptalParams:
    """Interlobular septal lines in the lung periphery, lower zones (70 %) or both lungs."""
    grid, lungs = canvas.grid, canvas.anatomy.lungs
    lower = bool(rng.random() < 0.7)
    region = peripheral_region(canvas, 0.6) & tissue_in(canvas.tissue, (Tissue.LUNG, Tissue.LESION))
    if lower:
        top_si = max(lung.base_si + 0.6 * (lung.apex_si - lung.base_si) for lung in lungs.values())
        region &= (grid.axes[2] < top_si)[None, None, :]
    period = rng.uniform(18, 24)
    lines = peripheral_lines(canvas, rng, period, 3.0, region)
    canvas.paint(EVERYWHERE, lines, rng.uniform(-350, -250), Tissue.LESION, record="septal")
    return SeptalParams(distribution="lower" if lower else "diffuse", period_mm=int(round(period)))


def paint_mosaic(canvas: Canvas, rng, params=None) -> MosaicParams:
    """Mosaic attenuation: the lung parenchyma modulated by a smooth random field (denser / more lucent)."""
    grid = canvas.grid
    parenchyma = canvas.lung_field & (canvas.tissue == Tissue.LUNG)
    index = np.nonzero(parenchyma)
    coords = [grid.axes[a][index[a]] for a in range(3)]
    field = np.zeros(len(index[0]), np.float32)
    for _ in range(5):
        wave = unit(rng.normal(0, 1, 3)) * (2 * math.pi / rng.uniform(45, 80))
        field += np.cos(wave[0] * coords[0] + wave[1] * coords[1] + wave[2] * coords[2]
                        + rng.uniform(0, 2 * math.pi)).astype(np.float32)
    patch = np.tanh(1.5 * field)
    dense, lucent = rng.uniform(140, 190), rng.uniform(60, 80)
    delta = np.where(patch > 0, dense * patch, lucent * patch)
    canvas.hu[index] += delta
    canvas.tissue[index] = np.where(np.abs(patch) > 0.3, Tissue.LESION, canvas.tissue[index])
    canvas.records["mosaic"] = parenchyma  # every modulated voxel (diffuse)
    return MosaicParams(dense_delta_hu=int(round(dense)), lucent_delta_hu=-int(round(lucent)))


def paint_peribronchial(canvas: Canvas, rng, params=None) -> PeribronchialParams:
    """Thickened walls (3-5 mm) around the lobar and segmental bronchi of both lungs."""
    wall = rng.uniform(3, 5)
    hu = rng.uniform(0, 30)
    min_r = canvas.grid.min_radius
    for airway in canvas.anatomy.airways:
        if airway.generation < 2:
            continue
        start, end = np.asarray(airway.start), np.asarray(airway.end)
        if airway.generation == 3:
            end = end + unit(end - start) * 25.0
        inner = max(airway.radius, 0.5 * min_r)
        outer = max(inner + wall, inner + 1.2 * min_r)
        found = segment_distance(canvas.grid, start, end, outer)
        if found is not None:
            box, dist = found
            canvas.paint(box, (dist <= outer) & (dist > inner), hu, Tissue.LESION, record="peribronchial",
                         within=canvas.lung_field[box])
    return PeribronchialParams(wall_mm=int(round(wall)), distribution="both lungs")
