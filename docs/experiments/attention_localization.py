"""Where does the disease-aware attention look? The tiny vision tower + disease branch alone, trained on the disease
loss, scored for diagnosis and for localisation (pointing game, attention mass in the finding's region).

Trains the `tiny` preset's vision tower and disease branch (no language model) on the disease loss, AdamW 1e-3,
batch 8, cosine schedule with 30 warm-up steps (as `blob_features_ablation.py`), the body mask of
`disease_attention_min_intensity` applied as in the model; at the end sets the decision
thresholds on the validation split (joint micro-F1) and prints the test micro-F1, the localisation of the attention
on the test cases (`dia_llama.evaluation.localization`) and where the arg-max patches fall. Settings are preset
overrides given as JSON, so every switch of `DiaLlamaConfig` / `DiaLlamaVisionConfig` can be measured:

    python docs/experiments/attention_localization.py runs/demo --name tiny
    python docs/experiments/attention_localization.py runs/demo --name max --model '{"disease_max_pooling": true}'
    python docs/experiments/attention_localization.py runs/demo --name aux-max --auxmax 1

`--auxmax W` adds W times the disease loss of the prototype head on the channel-wise maximum over the (body)
patches, an auxiliary term that is not part of the decision (`--aux-separate`: with its own head).

Each run appends one JSON line to `--log` (default `runs/attention_localization.jsonl`). Run after
`dia-llama demo --output-dir runs/demo` (or its synthesis and cache stages). Results: docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dia_llama.data import open_cache
from dia_llama.evaluation import clinical_efficacy
from dia_llama.evaluation.calibration import decisions, micro_f1_optimal_thresholds
from dia_llama.evaluation.localization import case_regions, pointing_scores, summarize_localization
from dia_llama.presets import build_model_and_processor, preset_volume_processor


def load_data(demo_dir: Path, limit_train: int | None = None):
    """Volumes (N, 1, H, W, D) float16, labels (N, L), split names (N,), manifest rows, disease names."""
    rows = [json.loads(line) for line in open(demo_dir / "synth" / "manifest.jsonl", encoding="utf-8")]
    if limit_train:
        train = [r for r in rows if r["split"] == "train"][:limit_train]
        rows = train + [r for r in rows if r["split"] != "train"]
    cache = open_cache(demo_dir / "cache", preset_volume_processor("tiny"))
    names = list(rows[0]["labels"])
    volumes = np.stack([cache.get(row["id"])[:1].numpy().astype(np.float16) for row in tqdm(rows, desc="cache")])
    labels = np.array([[row["labels"][n] for n in names] for row in rows], dtype=np.float32)
    return torch.from_numpy(volumes), labels, np.array([row["split"] for row in rows]), rows, names


def max_pooled_logits(inner, head, feats: torch.Tensor, pixel_values: torch.Tensor, num: int) -> torch.Tensor:
    """The prototype head of `head` (a disease branch) on the channel-wise maximum over the body patches:
    (B, M, c) → (B, L)."""
    mask = inner.disease_patch_mask(pixel_values)  # (B, M) or None
    masked = feats if mask is None else feats.masked_fill(~mask[:, :, None], float("-inf"))
    pooled = masked.amax(1, keepdim=True).expand(-1, num, -1)  # (B, L, c)
    return head.prototype_logits(pooled)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("demo_dir", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model", default="{}", help="DiaLlamaConfig overrides (JSON)")
    parser.add_argument("--vision", default="{}", help="DiaLlamaVisionConfig overrides (JSON)")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N training cases")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log", type=Path, default=Path("runs/attention_localization.jsonl"))
    parser.add_argument("--save", type=Path, default=None, help="save the trained model here")
    parser.add_argument("--auxmax", type=float, default=0.0)
    parser.add_argument("--aux-separate", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    volumes, labels, split, rows, names = load_data(args.demo_dir, args.limit_train)
    train, validation, test = (np.where(split == s)[0] for s in ("train", "validation", "test"))
    model, _ = build_model_and_processor("tiny", seed=args.seed, vision_overrides=json.loads(args.vision),
                                         **json.loads(args.model))
    inner = model.model
    def features_fn(v):
        return inner.encode_volume(v)
    grid = tuple(inner.config.vision_config.grid_size)
    regions = [case_regions(rows[i], args.demo_dir / "synth", grid) for i in test]
    params = list(inner.vision_tower.parameters()) + list(inner.disease_branch.parameters())
    aux_head = None
    if args.aux_separate:
        import copy
        aux_head = copy.deepcopy(inner.disease_branch)
        aux_head.log_temperature = inner.disease_branch.log_temperature  # one τ for both heads
        params += list(aux_head.proj.parameters()) + [aux_head.abnormal_prototypes, aux_head.normal_prototypes]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    rng = np.random.default_rng(args.seed)
    t_train = time.perf_counter()
    for _ in tqdm(range(args.steps), desc=args.name, mininterval=30):
        batch = rng.choice(train, args.batch_size, replace=False)
        pv = volumes[batch].float()
        feats = features_fn(pv)
        _, logits = inner.disease_branch(feats, patch_mask=inner.disease_patch_mask(pv))
        loss = inner.disease_branch.loss(logits, torch.from_numpy(labels[batch]))
        if args.auxmax:
            head = aux_head if aux_head is not None else inner.disease_branch
            aux = max_pooled_logits(inner, head, feats, pv, logits.shape[1])  # (B, L)
            loss = loss + args.auxmax * inner.disease_branch.loss(aux, torch.from_numpy(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    train_s = time.perf_counter() - t_train
    model.eval()

    def diagnose(index: np.ndarray):
        probs, maps = [], []
        with torch.no_grad():
            for i in range(0, len(index), 50):
                pv = volumes[index[i:i + 50]].float()
                dx = inner.diagnose(pixel_values=pv, patch_features=features_fn(pv))
                probs.append(dx.probabilities.float())
                if dx.attention is not None:
                    att = dx.attention.float()
                    maps.append(att.expand(len(index[i:i + 50]), -1, -1) if att.ndim == 2 else att)
        return torch.cat(probs).numpy(), (torch.cat(maps).numpy() if maps else None)

    no_finding = names.index("no finding")
    val_probs, _ = diagnose(validation)
    thresholds = micro_f1_optimal_thresholds(val_probs, labels[validation], derived_column=no_finding)
    test_probs, attention = diagnose(test)  # (T, L), (T, L, M)
    predicted = decisions(test_probs, thresholds, no_finding).astype(np.float32)
    truth = labels[test]
    scores = clinical_efficacy(truth, predicted, names)
    per_class_f1 = {n: round(scores["per_class"][n]["f1"], 3) for n in names}
    result = {"name": args.name, "model": json.loads(args.model), "vision": json.loads(args.vision),
              "steps": args.steps, "auxmax": args.auxmax, "seed": args.seed, "train_cases": len(train),
              "micro_f1": round(scores["micro"]["f1"], 4), "per_class_f1": per_class_f1,
              "train_s": round(train_s, 1)}
    if attention is not None:
        scores, argmax_cells = [], Counter()
        for k, case_regions_k in enumerate(regions):
            for disease, region in case_regions_k.items():
                att = attention[k, names.index(disease)].reshape(grid)
                scores.append((disease, pointing_scores(att, region)))
                argmax_cells[tuple(int(v) for v in np.unravel_index(att.argmax(), grid))] += 1
        loc = summarize_localization(scores, order=names)
        result["localization"] = loc
        result["top_argmax_cells"] = [[list(c), n] for c, n in argmax_cells.most_common(5)]
        entropy = -(attention * np.log(attention + 1e-12)).sum(-1).mean()
        result["mean_attention_entropy_nats"] = round(float(entropy), 3)  # uniform: log(M)
        print(f"{args.name}: micro-F1 {result['micro_f1']:.3f}, pointing game {loc['overall']['pointing_game']:.3f} "
              f"(uniform {loc['overall']['pointing_game_uniform']:.3f}), mass {loc['overall']['mass_in_region']:.3f} "
              f"(uniform {loc['overall']['mass_uniform']:.3f}), "
              f"entropy {entropy:.2f} / {math.log(attention.shape[-1]):.2f}")
        for n, v in loc["per_class"].items():
            print(f"  {n:<28} n={v['cases']:<4} F1 {per_class_f1[n]:.2f}  PG {v['pointing_game']:.2f} "
                  f"({v['pointing_game_uniform']:.2f})  mass {v['mass_in_region']:.2f} ({v['mass_uniform']:.2f})")
        print("  top arg-max cells:", result["top_argmax_cells"])
    else:
        print(f"{args.name}: micro-F1 {result['micro_f1']:.3f} (no attention)")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    if args.save:
        model.save_pretrained(args.save)


if __name__ == "__main__":
    main()
