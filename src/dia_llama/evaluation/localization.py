"""Does the disease-aware attention point at the finding? The pointing game and the attention mass in the region.

For every test case and every present finding that has a region (the synthetic benchmark's finding masks, see
`dia_llama.data.synthetic.locations`; "global" findings such as "no finding" have none), on the model's patch grid:

* **pointing game**: 1 when the attention's arg-max patch lies in the finding's region dilated by one patch (26-
  neighbourhood), else 0. Ties share the point: with k maximal patches of which j lie in the region the score is j/k,
  so a flat map scores exactly its uniform baseline.
* **mass in region**: the attention's total weight on the patches of the (undilated) region.
* **uniform baselines**: the same for uniform attention, i.e. |dilated region| / M for the pointing game (the chance
  that a patch drawn at random hits it) and |region| / M for the mass.

Scores are averaged per class and over all (case, finding) pairs ("overall", so frequent classes weigh more).
The regions are pooled onto the patch grid as the volume processor resizes the volume (`pool_to_patch_grid`: a patch
is in the region when any voxel it covers is).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

SCORE_KEYS = ("pointing_game", "pointing_game_uniform", "mass_in_region", "mass_uniform")


def pointing_scores(attention: np.ndarray, region: np.ndarray, dilation: int = 1) -> dict[str, float]:
    """Scores of one attention map (h, w, d) over the patches against one region (h, w, d) bool on the same grid.

    The attention need not be normalised (it is divided by its sum); the region must not be empty."""
    from ..data.synthetic.locations import dilate_patch_grid

    attention = np.asarray(attention, dtype=np.float64)
    region = np.asarray(region, dtype=bool)
    if attention.shape != region.shape:
        raise ValueError(f"attention grid {attention.shape} and region grid {region.shape} differ")
    if not region.any():
        raise ValueError("the region is empty: a finding without a region cannot be scored")
    if not np.isfinite(attention).all() or (attention < 0).any() or attention.sum() <= 0:
        raise ValueError("attention must be finite, non-negative and not all zero")
    grown = dilate_patch_grid(region, dilation)
    maxima = np.isclose(attention, attention.max(), rtol=1e-6, atol=0.0)  # (h, w, d) bool, ties share the point
    return {
        "pointing_game": float(maxima[grown].sum() / maxima.sum()),
        "pointing_game_uniform": float(grown.mean()),
        "mass_in_region": float(attention[region].sum() / attention.sum()),
        "mass_uniform": float(region.mean()),
    }


def summarize_localization(scores: Iterable[tuple[str, dict[str, float]]], extents: dict[str, str] | None = None,
                           order: Iterable[str] | None = None) -> dict:
    """(disease, `pointing_scores`) pairs → {"overall": means + "cases", "per_class": {disease: means + "cases"}}.

    `extents` ({disease: "local" | "diffuse"}) is copied into each class's row; `order` sorts the classes."""
    by_class: dict[str, list[dict[str, float]]] = {}
    for disease, row in scores:
        by_class.setdefault(disease, []).append(row)
    names = [n for n in (order or sorted(by_class)) if n in by_class]

    def means(rows: list[dict[str, float]]) -> dict:
        return {"cases": len(rows), **{k: float(np.mean([r[k] for r in rows])) for k in SCORE_KEYS}}

    per_class = {}
    for name in names:
        per_class[name] = means(by_class[name])
        if extents and name in extents:
            per_class[name]["extent"] = extents[name]
    every = [r for name in names for r in by_class[name]]
    overall = means(every) if every else {"cases": 0, **{k: float("nan") for k in SCORE_KEYS}}
    return {"overall": overall, "per_class": per_class}


# ----------------------------------------------------------------------------------------------------------- data
def location_rows(data) -> tuple[dict[str, dict], Path] | None:
    """{case id: manifest row} of the cases with a finding mask, and the benchmark folder; None when the data set has
    no finding locations (not a synthetic benchmark, or one written before finding masks).

    `data`: a folder holding `manifest.jsonl` or the manifest file itself."""
    path = Path(data)
    manifest = path / "manifest.jsonl" if path.is_dir() else path
    if manifest.suffix != ".jsonl" or not manifest.is_file():
        return None
    from ..data.datasets import parse_json_lines

    lines = parse_json_lines(manifest.read_text(encoding="utf-8"), manifest)  # DatasetError names file and line
    rows = {str(row["id"]): row for _, row in lines if "finding_mask" in row}
    return (rows, manifest.parent) if rows else None


def case_regions(row: dict, root, grid_shape) -> dict[str, np.ndarray]:
    """{present disease with a non-empty region: bool region on the patch grid} of one manifest row."""
    from ..data.synthetic.locations import finding_masks, pool_to_patch_grid

    out = {}
    for disease, mask in finding_masks(row, root).items():
        if mask.any():
            out[disease] = pool_to_patch_grid(mask, grid_shape)
    return out


def model_attention_localization(model, case_ids, location_data, load_pixel_values, batch_size: int = 16,
                                 progress: bool = False) -> dict | None:
    """The localisation block of `metrics.json` for a model over the cases `case_ids` (those without a finding mask
    are left out): the disease-aware attention of `model.diagnose` against each present finding's region.

    `location_data`: `location_rows(...)`'s result; `load_pixel_values(case id)` → (C, H, W, D) tensor.
    None when the model has no disease-aware attention (mean pooling) or no case has a scorable finding."""
    import torch

    rows, root = location_data
    base = getattr(model, "model", model)
    config = base.config
    names = list(config.disease_names)
    grid = tuple(config.vision_config.grid_size)
    jobs = []  # (case id, {disease: region})
    extents: dict[str, str] = {}
    for case_id in case_ids:
        row = rows.get(str(case_id))
        if row is None:
            continue
        regions = case_regions(row, root, grid)
        if regions:
            jobs.append((str(case_id), regions))
            extents.update({d: row["finding_extent"][d] for d in regions})
    if not jobs:
        return None
    scores: list[tuple[str, dict[str, float]]] = []
    iterator = range(0, len(jobs), batch_size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="attention localisation", unit="batch")
    for start in iterator:
        chunk = jobs[start:start + batch_size]
        pixel_values = torch.stack([torch.as_tensor(load_pixel_values(case_id)) for case_id, _ in chunk])
        with torch.no_grad():
            attention = base.diagnose(pixel_values).attention
        if attention is None:
            return None
        attention = attention.float().cpu().numpy()
        if attention.ndim == 2:  # static: (L, M), the same for every case
            attention = np.broadcast_to(attention, (len(chunk), *attention.shape))
        for (_, regions), maps in zip(chunk, attention):  # maps: (L, M)
            for disease, region in regions.items():
                scores.append((disease, pointing_scores(maps[names.index(disease)].reshape(grid), region)))
    return summarize_localization(scores, extents, order=names)


__all__ = ["case_regions", "location_rows", "model_attention_localization", "pointing_scores",
           "summarize_localization"]
