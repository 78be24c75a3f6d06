"""Synthetic chest-CT benchmark: procedural phantoms with label-driven findings and templated reports.

The embedded default data set of the project (demo, tests, ablations): no real CT can be downloaded.
Each case is a procedural chest at realistic HU (body wall, fat, lungs with vessels and airways, heart,
aorta, mediastinum, spine, ribs, sternum, upper abdomen) with per-patient variation. Findings are drawn
from labels, are large or bright enough to survive resizing to 64x64x32, and the report describes the
phantom's real parameters (side, lobe, size in mm, ...).

Array layout is canonical (see ``dia_llama.volume_io``): ``array[row, col, slice]`` = (H, W, D), rows run
anterior->posterior, columns patient right->left, slices inferior->superior. Internally all geometry is in
mm in the same axis order: a point is ``(ap, rl, si)`` with ap > 0 posterior, rl > 0 patient left, si > 0
superior, measured from the volume centre.

Determinism: ``make_case`` draws one integer from the given generator and derives independent streams for
the anatomy, the noise, the report wording and every finding kind, so toggling one label changes only that
finding's voxels (and the wording). ``synthesize_benchmark`` seeds case ``i`` from ``(seed, i)``, so any
number of worker processes writes byte-identical files (nibabel's gzip writer stores mtime 0).

Modules, in the order a case is made:

* ``constants``: version, prevalences, disease -> finding kind, random streams, tissue codes, lobe windows.
* ``geometry``: the mm grid and shape primitives (ellipsoid, segment distance, superellipse, spline).
* ``anatomy``: anatomy parameter dataclasses, their sampling and derived geometry.
* ``findings``: the table of finding kinds (anatomy modifier and / or painter, order), with the painters in
  ``lung_findings`` and ``chest_findings`` and their parameters in ``finding_params``.
* ``render``: the canvas (HU, tissue map, per-finding records) and the drawing of the anatomy.
* ``reports``: sentence tables and report assembly.
* ``labels``, ``case`` (``make_case``), ``benchmark`` (``synthesize_benchmark``).
* ``locations``: where each finding is (per-disease region masks, their bitmask files, patch-grid pooling).
"""

from .benchmark import synthesize_benchmark
from .case import make_case
from .constants import DEFAULT_PREVALENCE, GENERATOR_VERSION, SPLITS
from .labels import sample_labels
from .locations import dilate_patch_grid, finding_masks, patch_grid_shape, pool_to_patch_grid

__all__ = [
    "DEFAULT_PREVALENCE",
    "GENERATOR_VERSION",
    "SPLITS",
    "dilate_patch_grid",
    "finding_masks",
    "make_case",
    "patch_grid_shape",
    "pool_to_patch_grid",
    "sample_labels",
    "synthesize_benchmark",
]
