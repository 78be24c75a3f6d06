"""The synthetic benchmark on disk: stratified splits and ``synthesize_benchmark`` (NIfTI + manifest)."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .case import default_spacing, make_case
from .constants import GENERATOR_VERSION, SPLITS
from .geometry import rounded
from .labels import disease_names, resolve_prevalence, sample_labels
from .locations import (
    MASK_FOLDER,
    disease_extents,
    disease_regions,
    encode_finding_bits,
    manifest_location_fields,
    mask_dtype,
)


def _split_sizes(n: int, fractions) -> np.ndarray:
    """Cases per split (largest remainders; every split with a fraction > 0 gets at least one case)."""
    f = np.asarray(fractions, np.float64)
    if f.ndim != 1 or len(f) != len(SPLITS) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"split_fractions must be {len(SPLITS)} non-negative numbers, got {fractions}")
    f = f / f.sum()
    raw = f * n
    sizes = np.floor(raw).astype(int)
    for j in np.argsort(-(raw - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[j] += 1
    for j in np.flatnonzero((f > 0) & (sizes == 0)):  # every used split gets at least one case
        if n >= int((f > 0).sum()):
            k = int(np.argmax(sizes))
            sizes[k] -= 1
            sizes[j] += 1
    return sizes


def _stratified_split(rows, names, fractions, rng) -> list[str]:
    """Iterative stratification (rarest label first); classes with >= 3 positives reach every used split."""
    n = len(rows)
    sizes = _split_sizes(n, fractions)
    used = sizes > 0
    positive = np.array([[row[d] for d in names] for row in rows], dtype=bool).reshape(n, len(names))  # (N, C)
    total = positive.sum(0)
    want = total[:, None] * (sizes / max(n, 1))[None, :]  # (C, S) positives still wanted per split
    room = sizes.astype(np.float64)  # cases still wanted per split
    placed = np.zeros((len(sizes), len(names)), np.int64)  # (S, C) positives placed
    assign = np.full(n, -1)
    order = rng.permutation(n)
    cover = total >= used.sum()

    def put(i, s):
        assign[i] = s
        want[:, s] -= positive[i]
        room[s] -= 1
        placed[s] += positive[i]

    while True:
        counts = positive[assign < 0].sum(0)
        if not counts.any():
            break
        c = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in order:
            if assign[i] >= 0 or not positive[i, c]:
                continue
            lacks = used & (placed[:, c] == 0) & cover[c]
            open_ = used & (room > 0)
            candidates = np.flatnonzero(lacks if lacks.any() else open_ if open_.any() else used)
            put(i, int(max(candidates, key=lambda k: (want[c, k], room[k], -k))))
    for i in order:
        if assign[i] < 0:
            put(i, int(np.flatnonzero(used)[np.argmax(room[used])]))
    # repair: move a case into a split that lacks a class, without emptying another class elsewhere
    for c in np.flatnonzero(cover):
        for s in np.flatnonzero(used):
            if placed[s, c]:
                continue
            best = None
            for i in order:
                src = assign[i]
                if positive[i, c] and placed[src, c] >= 2 and all(placed[src, m] >= 2 or not cover[m]
                                                                  for m in np.flatnonzero(positive[i])):
                    if best is None or positive[i].sum() < positive[best].sum():
                        best = i
            if best is not None:
                placed[assign[best]] -= positive[best]
                room[assign[best]] += 1
                put(best, int(s))
    return [SPLITS[s] for s in assign]


def _synthesize_case(job):
    """Worker: generate and write case `i` (top-level for spawn-safe pickling)."""
    from ...volume_io import write_nifti

    i, case_id, labels, disease_set, volume_size, spacing, seed, out_dir, with_masks = job
    rng = np.random.default_rng([seed, i])
    hu, spacing, report, info = make_case(rng, labels, disease_set, volume_size, spacing, return_regions=with_masks)
    volume = f"volumes/{case_id}.nii.gz"
    write_nifti(Path(out_dir) / volume, hu, spacing, dtype=np.int16)
    record = {"id": case_id, "volume": volume, "report": report, "labels": info["labels"],
              "spacing": [rounded(s, 4) for s in spacing], "findings": info["findings"]}
    if with_masks:
        location = manifest_location_fields(case_id, info["labels"], info["regions"], disease_set)
        bits = encode_finding_bits(info["regions"], list(info["labels"]), hu.shape)
        write_nifti(Path(out_dir) / location["finding_mask"], bits, spacing, dtype=bits.dtype)
        record.update(location)
    return record


def synthesize_benchmark(out_dir, num_cases: int = 300, seed: int = 0, disease_set: str = "chexpert14",
                         volume_size=(128, 128, 64), prevalence=None, split_fractions=(0.7, 0.1, 0.2),
                         num_workers: int = 1, progress: bool = True, spacing=None,
                         write_finding_masks: bool = True) -> Path:
    """Write OUT_DIR/volumes/<id>.nii.gz, OUT_DIR/findings/<id>.nii.gz, OUT_DIR/manifest.jsonl and
    OUT_DIR/benchmark.json; return the manifest path.

    Manifest lines: {"id", "volume" (relative path), "report", "labels" (every disease of the set), "split",
    "spacing", "findings" (parameters per present disease), "finding_mask", "finding_extent", "finding_boxes"
    (where each present finding is; see ``locations``; left out with ``write_finding_masks=False``)}. Splits are
    stratified so that every class with >= 3 positives has positives in every split. Output is identical for any
    `num_workers`.
    """
    from tqdm.auto import tqdm

    num_cases, seed = int(num_cases), int(seed)
    if num_cases < 1:
        raise ValueError("num_cases must be >= 1")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    volume_size = tuple(int(v) for v in volume_size)
    names = disease_names(disease_set)
    prev = resolve_prevalence(disease_set, prevalence)
    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    if write_finding_masks:
        (out / MASK_FOLDER).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = sample_labels(rng, num_cases, disease_set, prev, min_positives=min(3, num_cases // 10))
    splits = _stratified_split(labels, names, split_fractions, rng)
    width = max(5, len(str(num_cases - 1)))
    jobs = [(i, f"synth_{i:0{width}d}", labels[i], disease_set, volume_size, spacing, seed, str(out),
             bool(write_finding_masks)) for i in range(num_cases)]
    records = []
    with tqdm(total=num_cases, desc="synthesize", disable=not progress) as bar:
        if num_workers > 1:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=int(num_workers), mp_context=context) as pool:
                chunk = max(1, min(8, num_cases // (4 * num_workers)))
                for record in pool.map(_synthesize_case, jobs, chunksize=chunk):
                    records.append(record)
                    bar.update(1)
        else:
            for job in jobs:
                records.append(_synthesize_case(job))
                bar.update(1)
    manifest = out / "manifest.jsonl"
    with open(manifest, "w", encoding="utf-8") as fh:
        for record, split in zip(records, splits, strict=True):
            line = {"id": record["id"], "volume": record["volume"], "report": record["report"],
                    "labels": record["labels"], "split": split, "spacing": record["spacing"],
                    "findings": record["findings"]}
            line.update({k: record[k] for k in ("finding_mask", "finding_extent", "finding_boxes") if k in record})
            fh.write(json.dumps(line, sort_keys=False) + "\n")
    counts = {s: splits.count(s) for s in SPLITS}
    settings = {
        "generator": "dia_llama.data.synthetic", "generator_version": GENERATOR_VERSION, "seed": seed,
        "num_cases": num_cases, "disease_set": disease_set, "diseases": names, "volume_size": list(volume_size),
        "spacing": [rounded(s, 4) for s in (spacing or default_spacing(volume_size))], "prevalence": prev,
        "split_fractions": [float(f) for f in split_fractions], "split_counts": counts,
        "label_counts": {d: int(sum(r[d] for r in labels)) for d in names},
    }
    if write_finding_masks:
        settings["finding_masks"] = {
            "folder": MASK_FOLDER, "dtype": np.dtype(mask_dtype(len(names))).name,
            "bits": {d: i for i, d in enumerate(names)}, "extent": disease_extents(disease_set),
            "region": disease_regions(disease_set),
            "note": "bit i of findings/<id>.nii.gz = the i-th disease; regions are drawn voxels at the volume size "
                    "(before the one-voxel partial-volume blur); global findings have no region",
        }
    (out / "benchmark.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return manifest
