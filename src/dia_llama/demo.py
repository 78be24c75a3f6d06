"""`dia-llama demo`: the whole pipeline on the synthetic chest-CT benchmark, on a CPU, in minutes.

synthesize → preprocess (cache) → train the `tiny` preset → evaluate on the test split → figures.
Every stage resumes: a finished stage is skipped when its outputs exist.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

# The demo's data: 3,000 cases at the tiny model's input size (with ~1,000 the vision tower memorises the training
# volumes instead of learning the small findings); 85 / 5 / 10 % splits: 2,550 training cases, 300 test reports.
# Training follows the shipped `tiny_cpu` recipe (dia_llama/recipes/tiny_cpu.yaml).
DEMO_DATA = dict(num_cases=3000, volume_size=(64, 64, 32), split_fractions=(0.85, 0.05, 0.10))
RECIPE = "tiny_cpu"


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); emulated bf16 would be slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _stage(name: str):
    print(f"\n=== {name} ===", flush=True)
    return time.perf_counter()


def run_demo(output_dir="runs/demo", num_cases: int | None = None, seed: int = 0, max_steps: int | None = None,
             batch_size: int | None = None, learning_rate: float | None = None, num_workers: int = 2,
             volume_size=None, bf16: bool | None = None) -> dict:
    """Run every stage; returns the evaluation metrics (also in OUTPUT_DIR/metrics.json). Training settings left None
    come from the `tiny_cpu` recipe. `bf16`: train under bf16 autocast (None: where the CPU runs bf16 natively)."""
    import yaml

    from .data.synthetic import synthesize_benchmark
    from .training import recipe_path

    num_cases = num_cases or DEMO_DATA["num_cases"]
    volume_size = tuple(volume_size or DEMO_DATA["volume_size"])
    recipe = yaml.safe_load(recipe_path(RECIPE).read_text(encoding="utf-8"))
    overrides = {"max_steps": max_steps, "per_device_train_batch_size": batch_size, "learning_rate": learning_rate}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    settings = {**recipe, **overrides}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    data_dir, model_dir, cache_dir = out / "synth", out / "model", out / "cache"

    t = _stage(f"1/5 synthesize {num_cases} chest CT cases")
    if not (data_dir / "manifest.jsonl").exists():
        synthesize_benchmark(data_dir, num_cases=num_cases, seed=seed, volume_size=volume_size,
                             split_fractions=DEMO_DATA["split_fractions"], num_workers=num_workers, progress=True)
    timings["synthesize_s"] = time.perf_counter() - t

    t = _stage("2/5 preprocess volumes (cache)")
    from .data.cache import preprocess_dataset
    from .presets import preset_volume_processor

    volume_processor = preset_volume_processor("tiny")
    preprocess_dataset(data_dir, cache_dir, volume_processor, num_workers=num_workers, progress=True)
    timings["preprocess_s"] = time.perf_counter() - t

    bf16 = cpu_has_native_bf16() if bf16 is None else bf16
    precision = "bf16 autocast" if bf16 else "fp32"
    t = _stage(f"3/5 train the tiny preset (recipe {RECIPE}: {settings['max_steps']} steps, batch "
               f"{settings['per_device_train_batch_size']}, {precision})")
    if not (model_dir / "model.safetensors").exists():
        from .train import main as train_main

        argv = [str(recipe_path(RECIPE)), "--data", str(data_dir), "--cache_dir", str(cache_dir),
                "--output_dir", str(model_dir), "--seed", str(seed), "--dataloader_num_workers", "1",
                "--disable_tqdm", "false", "--bf16", str(bf16).lower()]
        for key, value in overrides.items():
            argv += [f"--{key}", str(value)]
        train_main(argv)
    timings["train_s"] = time.perf_counter() - t

    t = _stage("4/5 evaluate on the test split")
    from .evaluation import evaluate_model, metrics_markdown
    from .inference import load_for_inference

    model, processor = load_for_inference(str(model_dir))
    metrics = evaluate_model(model, data_dir, "test", out, batch_size=16, cache_dir=cache_dir, processor=processor)
    timings["evaluate_s"] = time.perf_counter() - t

    t = _stage("5/5 figures")
    plot_per_disease_f1(metrics, out / "per_disease_f1.png")
    overlay = plot_attention_overlay(model, processor, data_dir, cache_dir, out / "attention_overlay.png")
    case = overlay["case"] if overlay else None
    timings["figures_s"] = time.perf_counter() - t
    metrics["timings"] = timings
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    print("\n" + metrics_markdown(metrics))
    show_example(out / "predictions.jsonl", processor.disease_names, case)
    print(f"\nwrote {out}/metrics.json, metrics.md, predictions.jsonl, per_disease_f1.png, attention_overlay.png")
    return metrics


def show_example(predictions_path: Path, disease_names, case_id=None) -> None:
    records = [json.loads(line) for line in predictions_path.read_text(encoding="utf-8").splitlines()]
    record = next((r for r in records if r["id"] == case_id), records[0])
    print(f"\n--- case {record['id']} ---")
    print("reference: ", record["reference"])
    print("generated: ", record["prediction"])
    print(f"\n{'disease':<28} {'probability':>11}  model     truth")
    for name in disease_names:
        dx = record["diagnoses"][name]
        truth = record["labels"][list(disease_names).index(name)] if record.get("labels") else None
        print(f"{name:<28} {dx['probability']:>11.3f}  {'present' if dx['present'] else 'absent ':<8}  "
              f"{'present' if truth == 1 else 'absent'}")


def plot_per_disease_f1(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dx, ce = metrics["diagnosis"]["per_class"], metrics["clinical_efficacy"]["per_class"]
    names = sorted(dx, key=lambda n: -dx[n]["support"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(x - 0.2, [dx[n]["f1"] for n in names], 0.4, label="disease branch (diagnosis)")
    ax.bar(x + 0.2, [ce[n]["f1"] for n in names], 0.4,
           label=f"generated report ({metrics['clinical_efficacy']['labeler']} labeler)")
    ax.set_xticks(x, [f"{n}\n(n={dx[n]['support']})" for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("F1 on the test split")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Per-disease F1 (sorted by test support)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


OVERLAY_RULE = "the test case with the most present findings that have a region (ties: the first)"


def overlay_case(rows: dict, case_ids) -> str | None:
    """The case `plot_attention_overlay` draws (`OVERLAY_RULE`): most present findings with a recorded region."""
    best, best_count = None, 0
    for case_id in case_ids:
        row = rows.get(str(case_id))
        count = 0 if row is None else len(row.get("finding_boxes", {}))
        if count > best_count:
            best, best_count = str(case_id), count
    return best


def plot_attention_overlay(model, processor, data_dir, cache_dir, path: Path) -> dict | None:
    """One panel per present finding of one test case (chosen by `OVERLAY_RULE`): an axial slice (`_panel_slice`:
    through the attention's arg-max patch where the finding is there too, else the finding's largest cross-section),
    the disease-aware attention of that finding on it, the finding's true outline (green) and the attention's arg-max
    patch (white; dashed when it lies on another slice).

    Returns {"case": id, "panels": [disease, ...]}; None when the data set has no finding locations or the model no
    disease-aware attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.patches import Rectangle

    from .data import load_ct_report_dataset
    from .data.cache import open_cache
    from .evaluation.localization import case_regions, location_rows, pointing_scores

    locations = location_rows(data_dir)
    if locations is None:
        return None
    rows, root = locations
    test = load_ct_report_dataset(data_dir)["test"]
    case_id = overlay_case(rows, test["id"])
    if case_id is None:
        return None
    row = rows[case_id]
    if cache_dir is not None:
        pixel_values = open_cache(cache_dir, processor.image_processor).get(case_id)[None]  # (1, C, H, W, D)
    else:
        from .data import load_example_volume

        example = test[list(test["id"]).index(case_id)]
        pixel_values = processor.image_processor(load_example_volume(example), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        dx = model.diagnose(pixel_values)
    if dx.attention is None:
        return None
    from .data.synthetic.locations import finding_masks

    names = list(model.config.disease_names)
    grid = tuple(model.config.vision_config.grid_size)
    volume = pixel_values[0, 0].float().numpy()  # (H, W, D)
    zoom = [s // g for s, g in zip(volume.shape, grid)]  # voxels per patch along each axis
    attention = (dx.attention[0] if dx.attention.ndim == 3 else dx.attention).float().numpy()  # (L, M)
    regions = case_regions(row, root, grid)  # {disease: (h, w, d) bool}
    masks = finding_masks(row, root, diseases=list(regions))  # at the volume's own size
    panels = [d for d in names if d in regions]
    columns = min(len(panels), 4)
    rows_n = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.4 * columns, 4.1 * rows_n + 0.9), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, disease in zip(axes.flat, panels):
        att = attention[names.index(disease)].reshape(grid)  # (h, w, d)
        mask = _resize_nearest(masks[disease], volume.shape)  # (H, W, D) bool, as the processor resizes
        top = np.unravel_index(int(att.argmax()), grid)
        k = _panel_slice(mask, top[2], zoom[2])
        ax.imshow(volume[:, :, k], cmap="gray")
        level = np.kron(att, np.ones(zoom))[:, :, k] / float(att.max())  # (H, W) in [0, 1] of the map's maximum
        overlay = plt.get_cmap("inferno")(level)
        overlay[..., 3] = 0.8 * level  # transparent where the attention is low
        ax.imshow(overlay)
        ax.contour(mask[:, :, k].astype(float), levels=[0.5], colors="lime", linewidths=1.2)
        on_slice = top[2] == k // zoom[2]
        ax.add_patch(Rectangle((top[1] * zoom[1] - 0.5, top[0] * zoom[0] - 0.5), zoom[1], zoom[0], fill=False,
                               edgecolor="white", linewidth=1.5, linestyle="-" if on_slice else "--"))
        score = pointing_scores(att, regions[disease])
        p = float(dx.probabilities[0, names.index(disease)])
        ax.set_title(f"{disease} (p={p:.2f})\npointing {'hit' if score['pointing_game'] >= 0.5 else 'miss'}, mass "
                     f"{score['mass_in_region']:.2f} (uniform {score['mass_uniform']:.2f})\nslice {k}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"case {case_id}: {OVERLAY_RULE}\ndisease-aware attention (colour, opaque at the map's maximum), "
                 "true outline (green), arg-max patch (white; dashed: on another slice)\nslice: through the arg-max "
                 "patch where the finding is there too, else the finding's largest cross-section", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"case": case_id, "panels": panels}


def _panel_slice(mask: np.ndarray, top_patch_slice: int, patch_depth: int) -> int:
    """The axial slice a panel shows: within the attention's arg-max patch, the slice where the finding's cross-section
    is largest (so both show); when the finding is not in that patch's slices, its own largest cross-section."""
    area = mask.sum((0, 1))  # (D,)
    lo = top_patch_slice * patch_depth
    inside = area[lo:lo + patch_depth]
    return lo + int(inside.argmax()) if inside.max() > 0 else int(area.argmax())


def _resize_nearest(mask: np.ndarray, shape) -> np.ndarray:
    """A (h, w, d) mask at another (H, W, D) size, nearest neighbour (identity when the sizes agree)."""
    if mask.shape == tuple(shape):
        return mask
    index = np.ix_(*[(np.arange(n) * m) // n for n, m in zip(shape, mask.shape)])
    return mask[index]
