"""One synthetic case: anatomy + findings + report + CT noise (``make_case``)."""

from __future__ import annotations

import numpy as np

from .anatomy import finish_anatomy, sample_anatomy
from .constants import FINDING_KIND, FOV_MM, RANDOM_STREAMS, Tissue, tissue_in
from .findings import FINDING_KINDS, MODIFY_ORDER, PAINT_ORDER
from .geometry import Grid, rounded
from .labels import normalize_labels
from .locations import finding_regions
from .render import Canvas, render_anatomy
from .reports import compose_report


def default_spacing(volume_size) -> tuple[float, float, float]:
    """mm per voxel of the default field of view (360 x 360 x 300 mm) at `volume_size`."""
    return tuple(float(f / n) for f, n in zip(FOV_MM, volume_size, strict=True))


def _smooth_and_add_noise(canvas: Canvas, noise_rng, noise_sd) -> np.ndarray:
    """Mild [1 2 1]/4 smoothing per axis (partial volume), metal / calcium kept at full value, Gaussian CT noise;
    -> int16 HU (H, W, D) clipped to [-1024, 3071]."""
    vol = canvas.hu
    for axis in range(3):
        if vol.shape[axis] >= 3:
            v = np.moveaxis(vol, axis, 0)
            smoothed = v.copy()
            smoothed[1:-1] = 0.25 * v[:-2] + 0.5 * v[1:-1] + 0.25 * v[2:]
            vol = np.moveaxis(smoothed, 0, axis)
    bloom = tissue_in(canvas.tissue, (Tissue.METAL, Tissue.CALCIUM))  # metal and calcium bloom
    if bloom.any():
        vol = np.where(bloom, np.maximum(vol, canvas.hu), vol)
    noise = noise_rng.standard_normal(canvas.grid.shape, dtype=np.float32)
    vol = vol + noise * np.float32(noise_sd)
    return np.clip(np.rint(vol), -1024, 3071).astype(np.int16)


def make_case(rng: np.random.Generator, labels: dict, disease_set: str = "chexpert14", volume_size=(128, 128, 64),
              spacing=None, *, return_masks: bool = False, return_regions: bool = False):
    """One synthetic chest CT with the given findings.

    Args:
        rng: generator; exactly one integer is drawn from it (all streams derive from that integer).
        labels: {disease: 0|1}; missing diseases are 0, "no finding" is derived.
        volume_size: (H, W, D) voxels. spacing: mm (row, col, slice); default FOV 360x360x300 mm / volume_size.
        return_masks: add boolean (H, W, D) masks to info["masks"]: body, lung (aerated lung field before
            findings), heart, bone, and "finding:<disease>" (its region) for every present finding.
        return_regions: add info["regions"] = {disease: boolean (H, W, D) region} for every present finding
            ("no finding" has none); see ``locations`` for what each region is. Recording them draws nothing.

    Returns:
        (hu int16 (H, W, D), spacing, report, info) with info = {"labels", "findings": {disease: params},
        "anatomy": {...}} (+ "masks", "regions").
    """
    volume_size = tuple(int(v) for v in volume_size)
    if len(volume_size) != 3 or min(volume_size) < 8:
        raise ValueError(f"volume_size must be 3 sizes >= 8, got {volume_size}")
    spacing = default_spacing(volume_size) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing}")
    labels = normalize_labels(labels, disease_set)
    kind_of = FINDING_KIND[disease_set]
    case_seed = int(rng.integers(0, 2**63 - 1))

    def stream(name: str) -> np.random.Generator:
        return np.random.default_rng([case_seed, RANDOM_STREAMS.index(name)])

    grid = Grid(volume_size, spacing)
    anatomy = sample_anatomy(stream("anatomy"), grid)
    present = {kind_of[d]: d for d in kind_of if labels[d]}  # kind -> disease
    rngs = {kind: stream(kind) for kind in present}
    params = {}
    for kind in MODIFY_ORDER:
        if kind in present:
            params[kind] = FINDING_KINDS[kind].modify_anatomy(anatomy, rngs[kind])
    finish_anatomy(anatomy)
    canvas = Canvas(grid, anatomy)
    render_anatomy(canvas)
    base_lung = canvas.lung_field.copy() if return_masks else None
    for kind in PAINT_ORDER:
        if kind in present:
            params[kind] = FINDING_KINDS[kind].paint(canvas, rngs[kind], params.get(kind))
    if "pneumothorax" in present and "pneumothorax" not in canvas.records:
        canvas.records["pneumothorax"] = np.zeros(grid.shape, bool)
    present_params = {kind: params[kind].as_dict() for kind in present}
    findings = {disease: present_params[kind] for kind, disease in present.items()}
    report = compose_report(disease_set, present_params, stream("report"))
    hu = _smooth_and_add_noise(canvas, stream("noise"), anatomy.hu.noise_sd)

    heart = anatomy.heart
    info = {
        "labels": labels,
        "findings": findings,
        "anatomy": {"body_width_mm": rounded(2 * anatomy.trunk.half_rl),
                    "body_depth_mm": rounded(2 * anatomy.trunk.half_ap),
                    "thorax_width_mm": rounded(2 * anatomy.cavity.half_rl),
                    "cardiothoracic_ratio": rounded(heart.cardiothoracic_ratio, 2),
                    "contrast": anatomy.contrast, "noise_hu": rounded(anatomy.hu.noise_sd)},
    }
    regions = finding_regions(canvas, present) if return_masks or return_regions else {}
    if return_masks:
        masks = {"body": canvas.tissue != Tissue.AIR, "lung": base_lung, "heart": canvas.tissue == Tissue.HEART,
                 "bone": canvas.tissue == Tissue.BONE}
        masks.update({f"finding:{disease}": region for disease, region in regions.items()})
        info["masks"] = masks
    if return_regions:
        info["regions"] = regions
    return hu, spacing, report, info
