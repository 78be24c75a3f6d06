"""Preprocessing: a 512×512×300 int16 `.nii.gz` CT → pixel_values 3×256×256×64 (min-max).

Compares, interleaved in one run:
* ours: `DiaLlamaVolumeProcessor(volume_size=(256,256,64), num_channels=3, intensity_mode="minmax", resample=…)`,
  path → pixel_values, for resample "nearest" (paper preset), "trilinear", "area", as installed: `.nii.gz` through
  python-isal when it is installed (the `[io]` extra), the stored int16 resized before any float32 conversion;
* MONAI: `LoadImage(image_only=True)` → `EnsureChannelFirst` → `ScaleIntensity` → `Resize((256,256,64))` (area);
* the research code's way: SimpleITK read → `scipy.ndimage.zoom(order=0)` → min-max;
* floors: nibabel load + `np.asarray(dataobj)` (int16, no scaling) and + `get_fdata()` (float64), both on the stdlib
  gzip module; ISA-L decompression alone (python-isal, `np.frombuffer` on the decompressed bytes).
Info rows time ours with the gzip backend forced (stdlib gzip / indexed_gzip instead of python-isal), and ours is
checked against the straightforward path (the full float32 C-order copy from `read_volume(...).array`, then torch).
Also `dia-llama preprocess` throughput (1 and 2 workers) when `dia_llama.data.cache.preprocess_dataset` exists.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib
import io
import os
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .common import cache_dir, machine_info, ratio_row, row, time_interleaved, write_result

SHAPE = (512, 512, 300)
OUT_SIZE = (256, 256, 64)
SPACING = (0.7, 0.7, 1.0)
MODES = ("nearest", "trilinear", "area")


# -------------------------------------------------------------------------------------------------------- the test CT
def synthetic_ct(shape=SHAPE, seed: int = 0) -> np.ndarray:
    """int16 HU (H, W, D): air, an elliptic body (soft tissue ≈ 40 HU) with two lungs (≈ −850 HU) and vessels, a spine
    (≈ 700 HU), a few nodules, a table; Gaussian noise σ 20 HU. Compresses like a real CT (≈ 60 % of raw)."""
    h, w, d = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h / 2, w / 2
    vol = np.empty(shape, np.int16)
    for z in range(d):
        t = z / max(d - 1, 1)
        scale = 0.85 + 0.15 * np.sin(np.pi * t)  # body and lungs narrow towards the ends
        body = ((yy - cy) / (0.38 * h * scale)) ** 2 + ((xx - cx) / (0.45 * w * scale)) ** 2 <= 1
        lung_r = ((yy - cy + 0.02 * h) / (0.25 * h * scale)) ** 2 + ((xx - cx + 0.2 * w) / (0.14 * w * scale)) ** 2 <= 1
        lung_l = ((yy - cy + 0.02 * h) / (0.25 * h * scale)) ** 2 + ((xx - cx - 0.2 * w) / (0.14 * w * scale)) ** 2 <= 1
        spine = ((yy - cy - 0.28 * h) / (0.05 * h)) ** 2 + ((xx - cx) / (0.05 * w)) ** 2 <= 1
        sl = np.full((h, w), -1000, np.int16)
        sl[body] = 40
        sl[lung_r | lung_l] = -850
        sl[spine] = 700
        sl[int(0.9 * h) : int(0.92 * h), int(0.1 * w) : int(0.9 * w)] = 300  # table
        vol[:, :, z] = sl
    for _ in range(12):  # nodules / vessels: small bright balls inside the lungs
        c = np.array([rng.uniform(0.35, 0.6) * h, rng.uniform(0.25, 0.75) * w, rng.uniform(0.1, 0.9) * d])
        r = rng.uniform(3, 10)
        lo = np.maximum((c - r).astype(int), 0)
        hi = np.minimum((c + r).astype(int) + 1, shape)
        sub = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        ball = sum(((g - cc) / r) ** 2 for g, cc in zip(sub, c)) <= 1
        vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][ball] = 60
    vol += rng.normal(0, 20, size=shape).astype(np.int16)
    return vol


def ensure_ct(cache: Path, shape=SHAPE, seed: int = 0) -> tuple[Path, dict]:
    """The cached test CT (written once with dia_llama.volume_io.write_nifti)."""
    from dia_llama.volume_io import write_nifti

    path = cache / f"ct_{'x'.join(map(str, shape))}_seed{seed}.nii.gz"
    info = {"path": str(path), "shape": list(shape), "dtype": "int16", "spacing_mm": list(SPACING), "seed": seed}
    if not path.exists():
        t0 = time.perf_counter()
        vol = synthetic_ct(shape, seed)
        tmp = path.with_name(path.name.replace(".nii.gz", f".{os.getpid()}.tmp.nii.gz"))
        write_nifti(tmp, vol, SPACING)
        tmp.replace(path)
        info["generated_in_s"] = round(time.perf_counter() - t0, 2)
    info["file_mb"] = round(path.stat().st_size / 1e6, 1)
    info["raw_mb"] = round(int(np.prod(shape)) * 2 / 1e6, 1)
    return path, info


# ------------------------------------------------------------------------------------------------------ gzip backends
@contextlib.contextmanager
def nibabel_gzip(backend: str):
    """nibabel reads .gz through indexed_gzip whenever it is installed; force one backend
    ("stdlib" | "indexed_gzip")."""
    import nibabel._compression as nc

    old = nc.HAVE_INDEXED_GZIP
    if backend == "indexed_gzip" and not old:
        raise RuntimeError("indexed_gzip is not installed (pip install indexed_gzip)")
    nc.HAVE_INDEXED_GZIP = old and backend == "indexed_gzip"
    try:
        yield
    finally:
        nc.HAVE_INDEXED_GZIP = old


@contextlib.contextmanager
def gzip_backend(backend: str):
    """The .gz decompressor of our reader and of nibabel: "default" (as installed: python-isal if present for ours,
    nibabel as it is), or forced to "isal", "indexed_gzip" or "stdlib" (python-isal off for ours in the last two)."""
    from dia_llama import volume_io

    if backend == "default":
        yield
        return
    if backend == "isal":
        if volume_io._isal_igzip() is None:
            raise RuntimeError("python-isal is not installed (pip install isal)")
        with nibabel_gzip("stdlib"):
            yield
        return
    from dia_llama import volume_io_files

    old = volume_io_files._isal_igzip
    volume_io_files._isal_igzip = lambda: None
    try:
        with nibabel_gzip(backend):
            yield
    finally:
        volume_io_files._isal_igzip = old


def _with_backend(fn, backend):
    def call():
        with gzip_backend(backend):
            return fn()

    return call


# ----------------------------------------------------------------------------------------------------------- pipelines
def ours_fn(path, resample):
    from dia_llama.image_processing_dia_llama import DiaLlamaVolumeProcessor

    proc = DiaLlamaVolumeProcessor(volume_size=OUT_SIZE, num_channels=3, intensity_mode="minmax", resample=resample)
    return lambda: proc(str(path), return_tensors="pt")["pixel_values"]


def monai_fn(path):
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensity

    chain = Compose([LoadImage(image_only=True), EnsureChannelFirst(), ScaleIntensity(), Resize(OUT_SIZE)])
    return lambda: chain(str(path))


def research_fn(path):
    """The research code's way: SimpleITK read, scipy zoom (order 0) to 256×256×64, min-max, 3 channels."""
    import scipy.ndimage as ndi
    import SimpleITK as sitk

    def run():
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)  # (D, H, W)
        a = a.transpose(1, 2, 0)
        a = ndi.zoom(a, [o / i for o, i in zip(OUT_SIZE, a.shape)], order=0)
        a = (a - a.min()) / (a.max() - a.min())
        return torch.from_numpy(a)[None].expand(3, -1, -1, -1)

    return run


def floor_dataobj_fn(path):
    import nibabel as nib

    return lambda: np.asarray(nib.load(str(path)).dataobj)


def floor_fdata_fn(path):
    import nibabel as nib

    return lambda: nib.load(str(path)).get_fdata()


def floor_isal_fn(path):
    return lambda: read_nifti_isal(path)[0]


def read_nifti_isal(path):
    """Decompress with ISA-L and view the data with np.frombuffer (no copy): (array (x, y, z) F-order, header)."""
    import nibabel as nib
    from isal import igzip

    data = Path(path).read_bytes()
    raw = igzip.decompress(data) if str(path).endswith(".gz") else data
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    shape, dtype = hdr.get_data_shape()[:3], hdr.get_data_dtype()
    arr = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=int(hdr.get_data_offset()))
    return arr.reshape(shape, order="F"), hdr


# ----------------------------------------------------------------------------------- reference (the former path)
def reference_fn(path, resample):
    """The straightforward path, as the processor did it before: `read_volume(...).array` (the full float32 C-order
    copy of the canonical volume), torch resize, min-max, 3 channels."""
    from dia_llama.volume_io import read_volume

    def run():
        x = torch.from_numpy(read_volume(str(path)).array)[None, None]
        if resample == "area":
            x = F.adaptive_avg_pool3d(x, OUT_SIZE)
        elif resample == "nearest":
            x = F.interpolate(x, size=OUT_SIZE, mode="nearest-exact")
        else:
            x = F.interpolate(x, size=OUT_SIZE, mode="trilinear", align_corners=False)
        x = x[0, 0]
        x = (x - x.min()) / (x.max() - x.min())
        return torch.stack([x.unsqueeze(0).expand(3, -1, -1, -1)])

    return run


# ------------------------------------------------------------------------------------------------------------ profile
_EXPLAIN = {
    "ascontiguousarray": "C-order copy of the transposed float32 volume",
    "astype": "dtype conversion of the full volume",
    "readinto": "gzip decompression",
    "decompress": "gzip decompression",
    "read": "file read / gzip decompression",
    "isfinite": "finite check of the full volume",
    "upsample": "interpolation",
    "adaptive_avg_pool": "interpolation (area)",
    "interpolate": "interpolation",
    "stack": "stacking the channels",
}


def profile_call(fn, top: int = 6) -> dict:
    """cProfile of one call: the top functions by own time, with the first caller from dia_llama / nibabel / monai."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats
    entries = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    out = []
    for (file, _line, func), (_cc, _nc, tt, _ct, callers) in entries:
        caller = ""
        for (cf, _cl, cfunc) in sorted(callers, key=lambda c: -callers[c][2]):
            caller = f"{Path(cf).parent.name}/{Path(cf).name}:{cfunc}"
            break
        name = func if file == "~" else f"{Path(file).name}:{func}"
        explain = next((v for k, v in _EXPLAIN.items() if k in func), "")
        out.append({"function": name, "self_s": round(tt, 4), "share": round(tt / total, 3), "caller": caller,
                    "meaning": explain})
    return {"total_s": round(total, 4), "top": out}


def limit_note(profile: dict, n: int = 2) -> str:
    parts = []
    for e in profile["top"][:n]:
        what = f" = {e['meaning']}" if e["meaning"] else ""
        parts.append(f"{e['function']} {e['self_s']:.2f} s ({e['share']:.0%}) in {e['caller']}{what}")
    return f"cProfile ({profile['total_s']:.2f} s): " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- dia-llama preprocess
def preprocess_throughput(ct_path: Path, cache: Path, quick: bool) -> dict:
    """Cases/s of `dia-llama preprocess DATA --output DIR --preset paper --num-workers N` (the real CLI, in-process)
    over a manifest folder whose N cases are links to the 512×512×300 test CT (each case is read and processed)."""
    import json
    import shutil

    try:
        importlib.import_module("dia_llama.data.cache").preprocess_dataset  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return {"skipped": "dia_llama.data.cache.preprocess_dataset is not available yet "
                           f"({type(exc).__name__}: {exc})"}
    from dia_llama.cli import main as cli_main
    from dia_llama.configuration_dia_llama import resolve_disease_names

    n_cases = 4 if quick else 8
    folder = cache / "preprocess_manifest"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "volumes").mkdir(parents=True)
    names = resolve_disease_names("chexpert14")
    lines = []
    for i in range(n_cases):
        link = folder / "volumes" / f"case_{i:03d}.nii.gz"
        link.symlink_to(ct_path)
        lines.append(json.dumps({"id": f"case_{i:03d}", "volume": f"volumes/{link.name}",
                                 "report": "No acute findings.", "labels": {n: 0 for n in names}, "split": "train"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    result = {"num_cases": n_cases, "source": f"{n_cases} links to {ct_path.name}", "command":
              "dia-llama preprocess DATA --output DIR --preset paper --num-workers N --no-progress"}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory(prefix="dia_bench_cache_") as out:
            t0 = time.perf_counter()
            rc = cli_main(["preprocess", str(folder), "--output", out, "--preset", "paper", "--num-workers",
                           str(workers), "--no-progress"])
            dt = time.perf_counter() - t0
            n_files = len(list(Path(out).rglob("*.npy")))
        if rc != 0 or n_files != n_cases:
            return {**result, "error": f"dia-llama preprocess exit {rc}, {n_files} of {n_cases} cases cached"}
        result[f"workers_{workers}"] = {"seconds": round(dt, 3), "cases_per_s": round(n_cases / dt, 3)}
    return result


# ----------------------------------------------------------------------------------------------------------------- run
def run(quick: bool = False, results_dir=None, repeats: int | None = None) -> dict:
    import nibabel._compression as nc

    from dia_llama import volume_io

    cache = cache_dir()
    repeats = repeats or (3 if quick else 7)
    warmup = 0 if quick else 1  # quick: the equality checks below already warmed the page cache and imports
    path, ct_info = ensure_ct(cache)
    have_igz = bool(nc.HAVE_INDEXED_GZIP)
    have_isal = volume_io._isal_igzip() is not None
    ours_gzip = "python-isal" if have_isal else ("indexed_gzip (via nibabel)" if have_igz else "stdlib gzip")

    std = "stdlib"
    fns = {f"ours_{m}": _with_backend(ours_fn(path, m), "default") for m in MODES}
    fns["monai"] = _with_backend(monai_fn(path), std)
    fns["research_sitk_zoom0"] = research_fn(path)
    fns["floor_nibabel_dataobj"] = _with_backend(floor_dataobj_fn(path), std)
    if not quick:
        fns["floor_nibabel_get_fdata"] = _with_backend(floor_fdata_fn(path), std)
    fns["former_path_nearest_stdlib"] = _with_backend(reference_fn(path, "nearest"), std)
    if have_isal:
        for m in MODES:
            fns[f"ours_{m}_stdlib"] = _with_backend(ours_fn(path, m), std)
        fns["floor_isal_decompress"] = floor_isal_fn(path)
    if have_igz:
        fns["ours_nearest_indexed_gzip"] = _with_backend(ours_fn(path, "nearest"), "indexed_gzip")
        fns["floor_nibabel_dataobj_indexed_gzip"] = _with_backend(floor_dataobj_fn(path), "indexed_gzip")
        if not quick:
            fns["monai_indexed_gzip"] = _with_backend(monai_fn(path), "indexed_gzip")

    # ours against the former path (float32 C-order copy of the whole volume, then torch), and isal against stdlib
    checks = {}
    for m in MODES:
        with gzip_backend("default"):
            got = ours_fn(path, m)()
        with gzip_backend(std):
            ref = reference_fn(path, m)()
            got_std = ours_fn(path, m)()
        checks[m] = {"max_abs_diff_vs_former_path": float((ref - got).abs().max()),
                     "max_abs_diff_stdlib_vs_default_gzip": float((got_std - got).abs().max()),
                     "shape": list(got.shape)}

    timings = time_interleaved(fns, repeats=repeats, warmup=warmup)
    # The verdicts use the best of the repeats (min): on a shared machine, load only ever adds time, so the minimum is
    # the least disturbed estimate of each pipeline's own cost; medians are kept in the JSON beside them.
    med = {k: v["median_s"] for k, v in timings.items()}
    best = {k: v["min_s"] for k, v in timings.items()}

    profiles = {m: profile_call(_with_backend(ours_fn(path, m), "default")) for m in MODES}
    with gzip_backend(std):
        profiles["floor_nibabel_dataobj"] = profile_call(floor_dataobj_fn(path))
    try:
        throughput = preprocess_throughput(path, cache, quick)
    except Exception as exc:  # a broken cache module must not lose the other numbers
        throughput = {"error": f"{type(exc).__name__}: {exc}"}

    floor, floor_med = best["floor_nibabel_dataobj"], med["floor_nibabel_dataobj"]
    ratios = {"basis": "best-of-repeats (min) times; *_median uses medians"}
    ratios.update({f"{k}_over_floor": round(v / floor, 3) for k, v in best.items()})
    ratios.update({f"{k}_over_floor_median": round(v / floor_med, 3) for k, v in med.items()})
    ratios.update({f"monai_over_{k}": round(best["monai"] / v, 3) for k, v in best.items() if k.startswith("ours_")})
    ratios.update({f"monai_over_{k}_median": round(med["monai"] / v, 3)
                   for k, v in med.items() if k.startswith("ours_")})

    rows = []
    for m in MODES:
        name = f"ours_{m}"
        preset = "paper preset; " if m == "nearest" else ""
        same = f"max |Δ| vs the former path {checks[m]['max_abs_diff_vs_former_path']:.1e}"
        rows.append(ratio_row(
            f"ours ({m}) speed-up vs MONAI chain", best["monai"] / best[name], 2.0, higher_is_better=True,
            limit=limit_note(profiles[m]),
            note=f"{preset}.gz via {ours_gzip}; best {best[name]:.2f} s vs {best['monai']:.2f} s; medians give "
                 f"{med['monai'] / med[name]:.2f}×; {same}"))
        rows.append(ratio_row(
            f"ours ({m}) / floor (nibabel dataobj, stdlib gzip)", best[name] / floor, 1.5, higher_is_better=False,
            limit=limit_note(profiles[m]),
            note=f".gz via {ours_gzip}; floor {floor:.2f} s; medians give {med[name] / floor_med:.2f}×"))
    rows.append(row("research code (SimpleITK + zoom order 0) / floor", round(best["research_sitk_zoom0"] / floor, 3),
                    "×", note=f"{best['research_sitk_zoom0']:.2f} s"))
    if "floor_nibabel_get_fdata" in best:
        rows.append(row("nibabel get_fdata (float64) / dataobj (int16)",
                        round(best["floor_nibabel_get_fdata"] / floor, 3), "×"))
    former = best["former_path_nearest_stdlib"]
    rows.append(row("ours (nearest) speed-up vs the former path (float32 copy of the volume, stdlib gzip)",
                    round(former / best["ours_nearest"], 3), "×",
                    note=f"{best['ours_nearest']:.2f} s vs {former:.2f} s = {former / floor:.2f}× floor, "
                         f"{best['monai'] / former:.2f}× faster than MONAI"))
    if have_isal:  # the gzip backends: stdlib gzip vs python-isal
        for m in MODES:
            t = best[f"ours_{m}_stdlib"]
            rows.append(row(f"ours ({m}) with stdlib gzip (python-isal off): vs MONAI | / floor",
                            f"{best['monai'] / t:.2f}× | {t / floor:.2f}×", "",
                            note=f"{t:.2f} s; python-isal makes it {t / best[f'ours_{m}']:.2f}× faster "
                                 f"({best[f'ours_{m}']:.2f} s); max |Δ| stdlib vs isal "
                                 f"{checks[m]['max_abs_diff_stdlib_vs_default_gzip']:.1e}"))
        rows.append(row("ISA-L decompression alone / floor", round(best["floor_isal_decompress"] / floor, 3), "×",
                        note=f"{best['floor_isal_decompress']:.2f} s: python-isal + np.frombuffer, no nibabel"))
    if have_igz:
        t = best["ours_nearest_indexed_gzip"]
        rows.append(row("ours (nearest) with indexed_gzip instead of python-isal: vs MONAI | / floor",
                        f"{best['monai'] / t:.2f}× | {t / floor:.2f}×", "",
                        note=f"{t:.2f} s; the floor itself drops to {best['floor_nibabel_dataobj_indexed_gzip']:.2f} s "
                             "with indexed_gzip"))
    if "skipped" in throughput:
        rows.append({**row("dia-llama preprocess throughput (cases/s)", None, note=throughput["skipped"]),
                     "skipped": True})
    elif "error" in throughput:
        rows.append(row("dia-llama preprocess throughput (cases/s)", None, note=f"error: {throughput['error']}"))
    else:
        w1, w2 = throughput["workers_1"]["cases_per_s"], throughput["workers_2"]["cases_per_s"]
        rows.append(row("dia-llama preprocess (paper preset), 1 worker", w1, "cases/s",
                        note=f"{throughput['num_cases']} cases of 512×512×300; {1 / w1:.2f} s/case vs "
                             f"{best['ours_nearest']:.2f} s for one processor call above"))
        rows.append(row("dia-llama preprocess (paper preset), 2 workers", w2, "cases/s",
                        note=f"{w2 / w1:.2f}× 1 worker (2 shared cores)"))

    payload = {
        "machine": machine_info(),
        "settings": {"quick": quick, "repeats": repeats, "warmup": warmup, "interleaved": True, "input": ct_info,
                     "output_size": list(OUT_SIZE), "num_channels": 3, "intensity": "minmax",
                     "ours_gzip": ours_gzip,
                     "floor_and_monai_gzip": "stdlib gzip via nibabel (indexed_gzip disabled)",
                     "indexed_gzip_available": have_igz, "isal_available": have_isal,
                     "monai_chain": "LoadImage(image_only=True), EnsureChannelFirst, ScaleIntensity, "
                                    "Resize((256,256,64)) [Resize default mode: area]"},
        "timings": timings,
        "medians_s": med,
        "best_s": best,
        "load_average_at_end": list(os.getloadavg()),
        "ratios": ratios,
        "equality_checks": checks,
        "profiles": profiles,
        "preprocess_throughput": throughput,
        "rows": rows,
    }
    write_result("preprocess", payload, results_dir)
    return payload
