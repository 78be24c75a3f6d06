"""Voxel grid in mm and the shape primitives the phantom is drawn with.

All geometry is in mm in the canonical axis order: a point is ``(ap, rl, si)`` with ap > 0 posterior, rl > 0
patient left, si > 0 superior, measured from the volume centre. Primitives evaluate over the bounding box of the
shape only and return ``(slices, values)`` so that callers paint ``canvas[slices]``.
"""

from __future__ import annotations

import math

import numpy as np


def rounded(value, ndigits: int = 1) -> float:
    """``round(float(value), ndigits)`` (report / manifest numbers)."""
    return round(float(value), ndigits)


class Grid:
    """Voxel-centre coordinates in mm (axis order AP, RL, SI, origin at the volume centre)."""

    def __init__(self, shape, spacing):
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)
                     for n, s in zip(self.shape, self.spacing, strict=True)]  # (H,), (W,), (D,)
        # thinnest radius that survives the in-plane sampling
        self.min_radius = 0.5 * max(self.spacing[0], self.spacing[1])

    def box(self, lo, hi):
        """Index slices + open sub-grids (ap (h,1,1), rl (1,w,1), si (1,1,d)) of the box [lo, hi] mm, or None."""
        slices, coords = [], []
        for axis in range(3):
            centres, step, n = self.axes[axis], self.spacing[axis], self.shape[axis]
            i0 = max(0, int(math.floor((lo[axis] - centres[0]) / step)))
            i1 = min(n, int(math.ceil((hi[axis] - centres[0]) / step)) + 1)
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
            coords.append(centres[i0:i1])
        return tuple(slices), (coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :])

    def nearest_index(self, point):
        """Nearest voxel index of `point` (clipped to the grid)."""
        return tuple(int(np.clip(round((point[a] - self.axes[a][0]) / self.spacing[a]), 0, self.shape[a] - 1))
                     for a in range(3))


def ellipsoid(grid: Grid, center, radii, angle: float = 0.0, power: float = 2.0):
    """Ellipsoid with radii (r_ap, r_rl, r_si) rotated by `angle` rad in the axial plane (rl axis towards -ap).

    Returns (slices, q) with q = normalised radius ** power over the bounding box (inside where q <= 1), or None.
    """
    in_plane = max(radii[0], radii[1])
    found = grid.box((center[0] - in_plane, center[1] - in_plane, center[2] - radii[2]),
                     (center[0] + in_plane, center[1] + in_plane, center[2] + radii[2]))
    if found is None:
        return None
    slices, (ap, rl, si) = found
    d_ap, d_rl = ap - center[0], rl - center[1]
    if angle:
        cos_a, sin_a = math.cos(angle), math.sin(angle)
        d_ap, d_rl = cos_a * d_ap + sin_a * d_rl, -sin_a * d_ap + cos_a * d_rl
    if power == 2.0:
        q = (d_ap / radii[0]) ** 2 + (d_rl / radii[1]) ** 2 + ((si - center[2]) / radii[2]) ** 2
    else:
        q = (np.abs(d_ap / radii[0]) ** power + np.abs(d_rl / radii[1]) ** power
             + np.abs((si - center[2]) / radii[2]) ** power)
    return slices, q


def segment_distance(grid: Grid, p0, p1, reach: float):
    """Distance (mm) to the segment p0-p1 over its bounding box grown by `reach` -> (slices, dist) or None."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    found = grid.box(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if found is None:
        return None
    slices, (ap, rl, si) = found
    d = p1 - p0
    w0, w1, w2 = ap - p0[0], rl - p0[1], si - p0[2]
    t = np.clip((w0 * d[0] + w1 * d[1] + w2 * d[2]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return slices, np.sqrt((w0 - t * d[0]) ** 2 + (w1 - t * d[1]) ** 2 + (w2 - t * d[2]) ** 2)


def superellipse_radius(grid: Grid, center_ap, center_rl, half_ap, half_rl, exponent):
    """Normalised superellipse radius over the axial plane, shape (H, W) (inside where <= 1)."""
    d_ap = (grid.axes[0][:, None] - center_ap) / half_ap
    d_rl = (grid.axes[1][None, :] - center_rl) / half_rl
    return (np.abs(d_ap) ** exponent + np.abs(d_rl) ** exponent) ** (1.0 / exponent)


def unit(v):
    """`v` scaled to length 1 (float64)."""
    v = np.asarray(v, np.float64)
    return v / max(np.linalg.norm(v), 1e-9)


def catmull_rom(points, per_segment: int = 5):
    """Smooth polyline through `points` (list of 3-vectors), `per_segment` samples per segment + the last point."""
    p = [np.asarray(q, np.float64) for q in points]
    p = [p[0]] + p + [p[-1]]
    out = []
    for i in range(1, len(p) - 2):
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t
                              + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t2
                              + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t3))
    out.append(p[-2])
    return out
