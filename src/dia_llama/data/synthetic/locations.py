"""Ground-truth locations of the findings: per-disease region masks, their storage, and patch-grid helpers.

Every present finding of a case has a region: the voxels its painter drew (before the partial-volume smoothing,
which blurs each change by one voxel), at the volume's own size. Regions come from what the generator records
while drawing, so they consume no random draws (volumes, reports and labels are unchanged by recording them).

Extent of each finding (what the region stands for; the pointing-game metric should treat the kinds apart):

* ``local``: a focal region a radiologist would point at (possibly multifocal or bilateral, e.g. nodules,
  pneumonia, effusions, or an organ, e.g. the enlarged heart).
* ``diffuse``: the finding involves most of both lungs; the region is that lung tissue (pointing is easy).
* ``global``: no spatial region ("no finding"); no mask bit is ever set.

=========================================  ========  =============================================================
disease (chexpert14 / ctrate18)            extent    region
=========================================  ========  =============================================================
enlarged cardiomediastinum                 local     soft tissue filling the widened upper mediastinum, the lung
                                                     it displaced, and the enlarged nodes
cardiomegaly                               local     the enlarged cardiac silhouette (heart, pericardium,
                                                     epicardial fat)
pericardial effusion                       local     the pericardial sac around the heart (fluid and epicardial fat)
lung opacity                               local     the ground-glass blobs
lung lesion / lung nodule                  local     the nodule(s) or mass
edema                                      diffuse   the lung parenchyma of both lungs and its septal lines
consolidation                              local     the consolidated blobs (with their air bronchograms)
pneumonia                                  local     exudate cores with ground-glass halos, in one or both lungs
atelectasis                                local     the collapsed wedge of the lobe and the lung base lost to the
                                                     raised hemidiaphragm (volume loss)
pneumothorax                               local     the pleural air rim around the collapsed lung (and the lung
                                                     moved past its normal outline)
pleural effusion                           local     the dependent fluid, one or both sides
pleural other                              local     the pleural thickening / calcified plaques along one chest wall
fracture                                   local     fracture gap, displaced fragment and callus of one rib
support devices / medical material         local     generator and leads, port or catheter
arterial wall calcification                local     the calcified plaques in the aortic wall
coronary artery wall calcification         local     the calcified coronary segments
hiatal hernia                              local     the hernia sac behind the heart
lymphadenopathy                            local     the enlarged mediastinal / hilar nodes
emphysema                                  local     the upper-lobe low-attenuation areas (multifocal)
pulmonary fibrotic sequela                 local     the fibrotic strands
bronchiectasis                             local     the dilated bronchi and their walls
mosaic attenuation pattern                 diffuse   the lung parenchyma of both lungs
peribronchial thickening                   diffuse   the thickened walls of the lobar and segmental bronchi
interlobular septal thickening             diffuse   the septal lines of the lung periphery (lower zones or both
                                                     lungs)
no finding                                 global    none
=========================================  ========  =============================================================

Secondary displacements are not part of a region: an enlarged heart moves the great vessels at its base, and a
raised hemidiaphragm moves the diaphragm surface (and the heart, when it is the higher dome); those voxels change
too but are not where the finding is. A region is empty when another finding hid the finding entirely (so far
seen only for a pleural plaque on the side of a pneumothorax: the plaque is drawn on the lung's rim at the chest
wall, which the collapse moved away; about 1 in 500 findings at default prevalences); it is then invisible in the
volume as well, and has no "finding_boxes" entry.

Storage (``synthesize_benchmark``): one bitmask NIfTI per case, ``findings/<id>.nii.gz``, written like the volume
(``read_volume`` gives it in the canonical (H, W, D) layout), uint16 (<= 16 diseases) or uint32; bit i is the i-th
disease of the set (the order of the manifest row's "labels"). Manifest fields per case: "finding_mask" (relative
path), "finding_extent" ({present disease: extent}) and "finding_boxes" ({present disease with a non-empty
region: [[row, col, slice] start, [row, col, slice] stop]}, half-open voxel bounds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...configuration_dia_llama import DISEASE_SETS
from .constants import FINDING_KIND
from .render import Canvas

LOCAL, DIFFUSE, GLOBAL = "local", "diffuse", "global"
DIFFUSE_KINDS = frozenset({"edema", "mosaic", "peribronchial", "septal"})
MASK_FOLDER = "findings"
# finding kind -> what its region is (the table of the module docstring, written to benchmark.json)
REGION_DESCRIPTION = {
    "mediastinum": "soft tissue filling the widened upper mediastinum, the lung it displaced, the enlarged nodes",
    "cardiomegaly": "the enlarged cardiac silhouette (heart, pericardium, epicardial fat)",
    "pericardial_effusion": "the pericardial sac around the heart (fluid and epicardial fat)",
    "ggo": "the ground-glass blobs",
    "nodule": "the nodule(s) or mass",
    "edema": "the lung parenchyma of both lungs and its septal lines",
    "consolidation": "the consolidated blobs (with their air bronchograms)",
    "pneumonia": "exudate cores with ground-glass halos, in one or both lungs",
    "atelectasis": "the collapsed wedge of the lobe and the lung base lost to the raised hemidiaphragm",
    "pneumothorax": "the pleural air rim around the collapsed lung (and the lung moved past its normal outline)",
    "effusion": "the dependent pleural fluid, one or both sides",
    "pleural_plaque": "the pleural thickening / calcified plaques along one chest wall",
    "fracture": "fracture gap, displaced fragment and callus of one rib",
    "device": "generator and leads, port or catheter",
    "aortic_calc": "the calcified plaques in the aortic wall",
    "coronary_calc": "the calcified coronary segments",
    "hiatal_hernia": "the hernia sac behind the heart",
    "lymphadenopathy": "the enlarged mediastinal / hilar nodes",
    "emphysema": "the upper-lobe low-attenuation areas (multifocal)",
    "fibrosis": "the fibrotic strands",
    "bronchiectasis": "the dilated bronchi and their walls",
    "mosaic": "the lung parenchyma of both lungs",
    "peribronchial": "the thickened walls of the lobar and segmental bronchi of both lungs",
    "septal": "the septal lines of the lung periphery (lower zones or both lungs)",
}


def finding_extent(kind: str | None) -> str:
    """Extent of finding kind `kind` (None: "no finding")."""
    if kind is None:
        return GLOBAL
    return DIFFUSE if kind in DIFFUSE_KINDS else LOCAL


def finding_regions(canvas: Canvas, present: dict[str, str]) -> dict[str, np.ndarray]:
    """{disease: bool (H, W, D) region} of the present findings (`present` = {kind: disease}), from the canvas
    after painting."""
    regions = {}
    for kind, disease in present.items():
        if kind == "cardiomegaly":
            region = canvas.cardiac_silhouette.copy()
        elif kind == "pericardial_effusion":
            region = canvas.cardiac_silhouette & ~canvas.heart
        else:
            region = canvas.records.get(kind)
            region = np.zeros(canvas.grid.shape, bool) if region is None else region
        regions[disease] = region
    return regions


def mask_dtype(num_diseases: int):
    """Smallest unsigned dtype of a bitmask over `num_diseases` (uint16 or uint32)."""
    if num_diseases > 32:
        raise ValueError(f"at most 32 diseases fit a finding bitmask, got {num_diseases}")
    return np.uint16 if num_diseases <= 16 else np.uint32


def encode_finding_bits(regions: dict[str, np.ndarray], diseases: list[str], shape) -> np.ndarray:
    """Bitmask (H, W, D): bit i set where the region of diseases[i] is (diseases without a region: no bit)."""
    dtype = mask_dtype(len(diseases))
    bits = np.zeros(shape, dtype)
    for i, disease in enumerate(diseases):
        if disease in regions:
            np.bitwise_or(bits, dtype(1 << i), out=bits, where=regions[disease])
    return bits


def decode_finding_bits(bits: np.ndarray, diseases: list[str], only=None) -> dict[str, np.ndarray]:
    """{disease: bool mask} of bit i = diseases[i] (for the diseases in `only`, default all)."""
    bits = np.asarray(bits)
    if not np.issubdtype(bits.dtype, np.integer):
        if not np.array_equal(bits, np.rint(bits)):
            raise ValueError("finding bitmask holds non-integer values")
        bits = bits.astype(np.int64)
    elif np.iinfo(bits.dtype).bits < len(diseases):
        bits = bits.astype(np.int64)
    only = set(diseases if only is None else only)
    wanted = [d for d in diseases if d in only]
    return {d: (bits & (1 << diseases.index(d))) != 0 for d in wanted}


def bounding_box(mask: np.ndarray):
    """Half-open voxel bounds [[r0, c0, s0], [r1, c1, s1]] of a non-empty mask, else None."""
    if not mask.any():
        return None
    start, stop = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        start.append(int(hit[0]))
        stop.append(int(hit[-1]) + 1)
    return [start, stop]


def disease_extents(disease_set: str) -> dict[str, str]:
    """{disease: extent} for every disease of the set."""
    kind_of = FINDING_KIND[disease_set]
    return {d: finding_extent(kind_of.get(d)) for d in DISEASE_SETS[disease_set]}


def disease_regions(disease_set: str) -> dict[str, str]:
    """{disease: what its region is} for every disease of the set."""
    kind_of = FINDING_KIND[disease_set]
    return {d: REGION_DESCRIPTION[kind_of[d]] if d in kind_of else "none" for d in DISEASE_SETS[disease_set]}


def manifest_location_fields(case_id: str, labels: dict[str, int], regions: dict[str, np.ndarray],
                             disease_set: str) -> dict:
    """The manifest fields of a case's finding locations (see the module docstring)."""
    extents = disease_extents(disease_set)
    extent = {d: extents[d] for d, value in labels.items() if value}
    boxes = {}
    for disease in extent:
        box = bounding_box(regions[disease]) if disease in regions else None
        if box is not None:
            boxes[disease] = box
    return {"finding_mask": f"{MASK_FOLDER}/{case_id}.nii.gz", "finding_extent": extent, "finding_boxes": boxes}


# ----------------------------------------------------------------------------------------------- readers
def finding_masks(row: dict, root, diseases=None) -> dict[str, np.ndarray]:
    """Per-disease boolean (H, W, D) region masks of one manifest row, in the canonical layout of its volume.

    `root` is the benchmark folder (the manifest's folder). Returns the present findings that have a region
    (extent "local" or "diffuse"; global ones such as "no finding" are left out), or only those in `diseases`.
    """
    from ...volume_io import read_volume

    if "finding_mask" not in row:
        raise KeyError(f"case {row.get('id')!r} has no finding_mask (benchmark written before finding locations)")
    names = list(row["labels"])
    present = [d for d, extent in row["finding_extent"].items() if extent != GLOBAL]
    if diseases is not None:
        present = [d for d in present if d in set(diseases)]
    stored = read_volume(Path(root) / row["finding_mask"]).stored()
    return decode_finding_bits(stored.data, names, present)


def pool_to_patch_grid(mask: np.ndarray, grid_shape) -> np.ndarray:
    """(H, W, D) bool -> (gh, gw, gd) bool: a patch is in the region when any voxel it covers is.

    Patch i along an axis of n voxels covers voxels [floor(i n / g), ceil((i + 1) n / g)): the voxels that a
    resize of the whole volume to the model input mixes into that patch. So a mask of a 128x128x64 case pools
    straight onto the 8x8x8 grid of 8x8x4 patches of the tiny preset's 64x64x32 input, and onto the paper preset's
    8x8x16 grid (256x256x64 input, 32x32x4 patches).
    """
    out = np.asarray(mask, bool)
    if out.ndim != 3 or len(grid_shape) != 3:
        raise ValueError(f"expected a 3D mask and a 3D grid, got {out.shape} and {tuple(grid_shape)}")
    for axis, cells in enumerate(grid_shape):
        n = out.shape[axis]
        cells = int(cells)
        if not 1 <= cells <= n:
            raise ValueError(f"grid {tuple(grid_shape)} does not fit a mask of shape {mask.shape}")
        i = np.arange(cells)
        lo, hi = (i * n) // cells, -((-(i + 1) * n) // cells)  # floor, ceil
        counts = np.concatenate([np.zeros_like(out.take([0], axis), np.int64),
                                 np.cumsum(out, axis=axis, dtype=np.int64)], axis=axis)
        out = (counts.take(hi, axis) - counts.take(lo, axis)) > 0
    return out


def patch_grid_shape(volume_size, patch_size) -> tuple[int, int, int]:
    """Patch grid of a model input: e.g. (64, 64, 32) / (8, 8, 4) -> (8, 8, 8)."""
    if any(int(v) % int(p) for v, p in zip(volume_size, patch_size, strict=True)):
        raise ValueError(f"volume size {tuple(volume_size)} is not a multiple of the patch size {tuple(patch_size)}")
    return tuple(int(v) // int(p) for v, p in zip(volume_size, patch_size, strict=True))


def dilate_patch_grid(grid_mask: np.ndarray, steps: int = 1) -> np.ndarray:
    """Grow a boolean patch-grid mask by `steps` patches in every direction (26-neighbourhood per step)."""
    out = np.asarray(grid_mask, bool)
    for _ in range(int(steps)):
        padded = np.pad(out, 1)
        grown = np.zeros_like(out)
        h, w, d = out.shape
        for di in range(3):
            for dj in range(3):
                for dk in range(3):
                    grown |= padded[di:di + h, dj:dj + w, dk:dk + d]
        out = grown
    return out
