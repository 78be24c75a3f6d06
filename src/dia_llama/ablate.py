"""`dia-llama ablate`: the paper's ablations (Tables 2–3, Figure 2) on the synthetic benchmark, identical budgets.

Each (setting, seed) trains the chosen preset from scratch with the same steps, batch and learning rate, then is
evaluated on the test split. Finished runs are skipped, so an interrupted study resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _setting(title: str, prompt_type: str, disease_pooling: str, diagnosis_head: str, **extra) -> tuple[str, dict]:
    # every setting pools as the paper does (DAA or mean alone): the tiny preset's max-pooling extension is off
    return title, dict(prompt_type=prompt_type, disease_pooling=disease_pooling, diagnosis_head=diagnosis_head,
                       disease_max_pooling=False, **extra)


# The paper's disease branch exactly: its static DAA at scale 1 over all patches and "no finding" scored like any
# other class (the other settings keep the preset's attention, e.g. the tiny preset's dynamic, body-only attention)
PAPER_BRANCH = dict(disease_attention="static", disease_attention_scale=1.0, derive_no_finding=False,
                    disease_attention_min_intensity="none")


# name → (paper row label, config overrides)
SETTINGS = {
    "baseline": _setting("Baseline (no diagnostic prompt)", "none", "attention", "prototype"),
    "dtp_mean_linear": _setting("DTP, mean pooling + linear head", "text", "mean", "linear"),
    "dtp_daa": _setting("DTP + DAA", "text", "attention", "linear"),
    "dtp_dpm": _setting("DTP + DPM (no DAA)", "text", "mean", "prototype"),
    "full": _setting("Full model (DTP + DAA + DPM)", "text", "attention", "prototype"),
    "prompt_token": _setting("Token prompt", "token", "attention", "prototype"),
    "prompt_feature": _setting("Feature prompt", "feature", "attention", "prototype"),
    "paper": _setting("The paper's model (static DAA at scale 1, DPM, DTP; no extensions)", "text", "attention",
                      "prototype", **PAPER_BRANCH),
}
TABLE2 = ["baseline", "dtp_mean_linear", "dtp_daa", "dtp_dpm", "full", "paper"]
TABLE3 = [("none", "baseline"), ("text", "full"), ("token", "prompt_token"), ("feature", "prompt_feature")]
# (column, path in metrics.json, decimals shown): CE / Dx are fractions, the NLG metrics percentage points
COLUMNS = [("CE P", ("clinical_efficacy", "micro", "precision"), 3),
           ("CE R", ("clinical_efficacy", "micro", "recall"), 3), ("CE F1", ("clinical_efficacy", "micro", "f1"), 3),
           ("BLEU-1", ("nlg", "coco_raw", "BLEU-1"), 2), ("BLEU-4", ("nlg", "coco_raw", "BLEU-4"), 2),
           ("METEOR", ("nlg", "coco_raw", "METEOR"), 2), ("ROUGE-L", ("nlg", "coco_raw", "ROUGE-L"), 2),
           ("Dx F1", ("diagnosis", "micro", "f1"), 3)]
COLUMN_DECIMALS = {name: decimals for name, _, decimals in COLUMNS}


def run_one(data, out: Path, setting: str, seed: int, preset: str, max_steps: int, batch_size: int,
            learning_rate: float, cache_dir=None, eval_limit=None, vision_config: str | None = None) -> dict:
    """Train + evaluate one (setting, seed); returns metrics (cached in out/metrics.json)."""
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    from .evaluation import evaluate_model
    from .inference import load_for_inference
    from .train import main as train_main

    overrides = SETTINGS[setting][1]
    model_dir = out / "model"
    if not (model_dir / "model.safetensors").exists():
        args = ["--preset", preset, "--data", str(data), "--output_dir", str(model_dir), "--max_steps", str(max_steps),
                "--per_device_train_batch_size", str(batch_size), "--learning_rate", str(learning_rate),
                "--lr_scheduler_type", "cosine", "--warmup_steps", str(min(30, max_steps // 10)),
                "--weight_decay", "0.0", "--logging_steps", "50", "--save_strategy", "no", "--eval_strategy", "no",
                "--use_cpu", "true", "--seed", str(seed), "--model_seed", str(seed), "--report_to", "none",
                "--disable_tqdm", "true"]
        if cache_dir:
            args += ["--cache_dir", str(cache_dir)]
        if vision_config:
            args += ["--vision_config", vision_config]
        for key, value in overrides.items():
            args += [f"--{key}", str(value)]
        train_main(args)
    model, processor = load_for_inference(str(model_dir))
    metrics = evaluate_model(model, data, "test", out, batch_size=16, cache_dir=cache_dir, limit=eval_limit,
                             processor=processor, progress=False)
    metrics["setting"], metrics["seed"] = setting, seed
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _get(metrics: dict, path) -> float:
    value = metrics
    for key in path:
        value = value[key]
    return float(value)


def aggregate(results: dict[str, list[dict]]) -> dict:
    """Mean ± std over seeds of each column, per setting."""
    table = {}
    for setting, runs in results.items():
        row = {}
        for name, path, _ in COLUMNS:
            values = np.array([_get(m, path) for m in runs])  # fractions (CE, Dx) or percentage points (NLG)
            row[name] = (float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0)
        table[setting] = row
    return table


def paired_differences(results: dict[str, list[dict]], reference: str = "full",
                       columns=("CE F1", "Dx F1", "BLEU-4")) -> dict:
    """Per setting, the same-seed difference setting − `reference` of each column: (mean, std, n seeds).

    Seeds share the data order and initialisation, so pairing removes most of the seed-to-seed spread."""
    if reference not in results:
        return {}
    ref = {m["seed"]: m for m in results[reference]}
    spec = {name: path for name, path, _ in COLUMNS if name in columns}
    out = {}
    for setting, runs in results.items():
        if setting == reference:
            continue
        row = {}
        for name, path in spec.items():
            diffs = np.array([_get(m, path) - _get(ref[m["seed"]], path) for m in runs if m["seed"] in ref])
            if len(diffs):
                row[name] = (float(diffs.mean()), float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0, len(diffs))
        out[setting] = row
    return out


def paired_markdown(diffs: dict, reference: str = "full") -> str:
    if not diffs:
        return ""
    columns = list(next(iter(diffs.values())))
    lines = [f"Same-seed difference to the {SETTINGS[reference][0]} (mean ± std over seeds; negative = worse):", "",
             "| setting | " + " | ".join(f"Δ {c}" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for setting, row in diffs.items():
        lines.append(f"| {SETTINGS[setting][0]} | " + " | ".join(
            f"{row[c][0]:+.{COLUMN_DECIMALS[c]}f} ± {row[c][1]:.{COLUMN_DECIMALS[c]}f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def per_disease_f1(results: dict[str, list[dict]]) -> dict:
    """Mean diagnosis F1 per disease, per setting."""
    out = {}
    for setting, runs in results.items():
        names = list(runs[0]["diagnosis"]["per_class"])
        out[setting] = {n: float(np.mean([m["diagnosis"]["per_class"][n]["f1"] for m in runs])) for n in names}
    return out


def rare_macro_f1(results, train_counts: dict[str, int], n_train: int, threshold: float = 0.05) -> dict:
    rare = [n for n, c in train_counts.items() if 0 < c < threshold * n_train]
    f1 = per_disease_f1(results)
    return {s: (float(np.mean([f1[s][n] for n in rare])) if rare else float("nan")) for s in f1}, rare


def plot_figure2(results, train_counts: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f1 = per_disease_f1(results)
    names = sorted(train_counts, key=lambda n: train_counts[n])
    names = [n for n in names if any(n in f1[s] for s in f1)]
    x = np.arange(len(names))
    width = 0.8 / max(len(f1), 1)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for i, (setting, row) in enumerate(f1.items()):
        ax.bar(x + (i - len(f1) / 2) * width + width / 2, [row.get(n, 0) for n in names], width,
               label=SETTINGS[setting][0])
    ax.set_xticks(x, [f"{n}\n({train_counts[n]})" for n in names], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("diagnosis F1 (test, mean over seeds)")
    ax.set_title("Per-disease F1, diseases sorted by number of abnormal training cases")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def localization_table(results: dict[str, list[dict]]) -> dict:
    """Per setting with disease-aware attention: mean ± std over seeds of the overall pointing game and attention mass
    in the region (`attention_localization` of metrics.json), their uniform baselines, and the per-class means."""
    keys = ("pointing_game", "pointing_game_uniform", "mass_in_region", "mass_uniform")
    out = {}
    for setting, runs in results.items():
        blocks = [m["attention_localization"] for m in runs if m.get("attention_localization")]
        if not blocks:
            continue
        row = {k: (float(np.mean([b["overall"][k] for b in blocks])),
                   float(np.std([b["overall"][k] for b in blocks], ddof=1)) if len(blocks) > 1 else 0.0) for k in keys}
        classes = list(blocks[0]["per_class"])
        row["per_class"] = {n: {k: float(np.mean([b["per_class"][n][k] for b in blocks if n in b["per_class"]]))
                                for k in (*keys, "cases")} for n in classes}
        row["seeds"] = len(blocks)
        out[setting] = row
    return out


def localization_markdown(table: dict) -> str:
    if not table:
        return ""
    lines = ["Localisation of the disease-aware attention on the test cases (present findings with a region; "
             "mean ± std over seeds; uniform attention in brackets):", "",
             "| setting | pointing game | mass in region |", "|---|---|---|"]
    for setting, row in table.items():
        pg, pgu, mass, mu = (row[k] for k in ("pointing_game", "pointing_game_uniform", "mass_in_region",
                                              "mass_uniform"))
        lines.append(f"| {SETTINGS[setting][0]} | {pg[0]:.3f} ± {pg[1]:.3f} ({pgu[0]:.3f}) | "
                     f"{mass[0]:.3f} ± {mass[1]:.3f} ({mu[0]:.3f}) |")
    return "\n".join(lines) + "\n"


def _cells(row: dict) -> str:
    return " | ".join(f"{m:.{COLUMN_DECIMALS[c]}f} ± {sd:.{COLUMN_DECIMALS[c]}f}" for c, (m, sd) in row.items())


def markdown_tables(table: dict, title: str) -> str:
    head = "| setting | " + " | ".join(c[0] for c in COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    lines = [f"### {title}", "", "Table 2 analogue (components):", "", head.rstrip("\n")]
    lines += [f"| {SETTINGS[s][0]} | {_cells(table[s])} |" for s in TABLE2 if s in table]
    lines += ["", "Table 3 analogue (prompt type, with DAA + DPM):", "", head.rstrip("\n")]
    lines += [f"| {label} | {_cells(table[s])} |" for label, s in TABLE3 if s in table]
    return "\n".join(lines) + "\n"


def run_ablation(data, output_dir, preset="tiny", seeds=(0, 1, 2), settings=None, max_steps=600, batch_size=8,
                 learning_rate=1e-3, cache_dir=None, eval_limit=None, title="Synthetic benchmark",
                 vision_config: str | None = None) -> dict:
    from tqdm.auto import tqdm

    from .data import dataset_disease_names, load_ct_report_dataset

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = list(settings or SETTINGS)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    results: dict[str, list[dict]] = {}
    jobs = [(s, seed) for s in settings for seed in seeds]
    start = time.perf_counter()
    for setting, seed in tqdm(jobs, desc="ablation runs", unit="run"):
        metrics = run_one(data, out / setting / f"seed{seed}", setting, seed, preset, max_steps, batch_size,
                          learning_rate, cache_dir, eval_limit, vision_config)
        results.setdefault(setting, []).append(metrics)
    dataset = load_ct_report_dataset(data)
    names = dataset_disease_names(dataset)
    labels = np.array(dataset["train"]["labels"])
    train_counts = {n: int((labels[:, i] == 1).sum()) for i, n in enumerate(names)}
    table = aggregate(results)
    localization = localization_table(results)
    diffs = paired_differences(results)
    rare, rare_names = rare_macro_f1(results, train_counts, len(labels))
    plot_figure2(results, train_counts, out / "figure2_per_disease_f1.png")
    summary = {"table": table, "rare_macro_f1": rare, "rare_classes": rare_names, "train_counts": train_counts,
               "settings": {s: SETTINGS[s][1] for s in settings}, "seeds": list(seeds), "preset": preset,
               "vision_config": json.loads(vision_config) if vision_config else None,
               "paired_differences_vs_full": diffs, "attention_localization": localization,
               "max_steps": max_steps, "batch_size": batch_size, "learning_rate": learning_rate,
               "elapsed_s": time.perf_counter() - start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    md = markdown_tables(table, title) + "\n" + paired_markdown(diffs)
    md += ("\n" + localization_markdown(localization)) if localization else ""
    md += ("\nMacro-F1 of the disease branch over the rare classes (< 5 % of training cases: " + ", ".join(rare_names)
           + "):\n\n")
    md += "\n".join(f"- {SETTINGS[s][0]}: {v:.3f}" for s, v in rare.items()) + "\n"
    (out / "tables.md").write_text(md)
    print(md)
    return summary
