#!/usr/bin/env python
"""Cross-validation of the fitted rule labelers (docs/labelers.md): held-out, in-sample and locked-fold scores.

    python scripts/labeler_crossval.py                      # CV on the unlocked reports -> JSON
    python scripts/labeler_crossval.py --locked             # also score the locked fold (once, at the end)
    python scripts/labeler_crossval.py --write-params       # fit on all labelled reports -> the shipped resource
    python scripts/labeler_crossval.py --inspect chexbert "pleural other"   # errors an engineer may look at
    python scripts/labeler_crossval.py --ablations          # variants of the method, CV on the inspectable reports
    python scripts/labeler_crossval.py --unseen             # the first round's layer on the 182 reports it never saw

Label sources: ``chexbert`` (CheXbert labels of the 362 CTRG test reports, CheXpert-14; labels from
``tests/fixtures/ctrg_chexbert/``) and ``ctrate`` (800 hand-labelled CT-RATE reports, CT-RATE-18). The locked fold
(SHA-256 of the id, 0 mod 5) is never fitted on, tuned on or inspected; ``--inspect`` and ``--ablations`` use only
reports outside the locked fold and outside fold 0 of the seed-0 split (that fold stays uninspected too, and is
scored separately).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dia_llama.evaluation.metrics import clinical_efficacy  # noqa: E402
from dia_llama.labelers import crossval as cv  # noqa: E402
from dia_llama.labelers.fitted import DecisionLayer  # noqa: E402
from dia_llama.labelers.params import SOURCES, build_space, layer_to_json, write_params  # noqa: E402

LOADERS = {"chexbert": cv.load_chexbert_test, "ctrate": cv.load_ctrate_manual}


def _scores(y, p, names) -> dict:
    ce = clinical_efficacy(y, p, names)
    keep = ("precision", "recall", "f1", "support", "predicted", "zero_support")
    return {"micro": ce["micro"], "macro": ce["macro"], "macro_supported": ce["macro_supported"],
            "per_class": {n: {k: v[k] for k in keep} for n, v in ce["per_class"].items()}, "n": ce["n"]}


def _bootstrap_micro_f1(y, p, n: int = 2000, seed: int = 0) -> list[float]:
    """95 % interval of the micro-F1 over reports resampled with replacement."""
    rng = np.random.default_rng(seed)
    y, p = np.asarray(y, dtype=bool), np.asarray(p, dtype=bool)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        tp = (y[idx] & p[idx]).sum()
        values.append(2 * tp / max(1, y[idx].sum() + p[idx].sum()))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _mean_scores(runs: list[dict]) -> dict:
    """Mean (and spread) over repeats of the micro / macro / per-class numbers."""
    out = {}
    for key in ("micro", "macro", "macro_supported"):
        out[key] = {m: float(np.mean([r[key][m] for r in runs])) for m in ("precision", "recall", "f1")}
        out[key]["f1_min"] = float(min(r[key]["f1"] for r in runs))
        out[key]["f1_max"] = float(max(r[key]["f1"] for r in runs))
    out["per_class"] = {}
    for name in runs[0]["per_class"]:
        rows = [r["per_class"][name] for r in runs]
        out["per_class"][name] = {m: float(np.mean([r[m] for r in rows])) for m in ("precision", "recall", "f1")}
        out["per_class"][name].update(support=rows[0]["support"], zero_support=rows[0]["zero_support"],
                                      predicted=float(np.mean([r["predicted"] for r in rows])))
    out["n"] = runs[0]["n"]
    return out


def load(source: str, data_dir: Path):
    ids, texts, codes = LOADERS[source](data_dir)
    labels = (codes == 1).astype(np.int64)
    locked = np.array([cv.is_locked(i) for i in ids])
    return ids, texts, labels, locked


def evaluate(source: str, data_dir: Path, repeats: int, score_locked: bool) -> dict:
    t0 = time.time()
    ids, texts, labels, locked = load(source, data_dir)
    space = build_space(source)
    feats, abnormal = space.transform(texts)
    dev = np.flatnonzero(~locked)
    f_dev, a_dev, y_dev = cv._rows(feats, dev), abnormal[dev], labels[dev]
    # CheXbert: the first round's reports (odd ids, chexbert_labels_dev.csv) and the new ones, scored apart too
    subsets = {} if source != "chexbert" else {
        "odd ids (first round's data)": np.array([int(ids[i]) % 2 == 1 for i in dev]),
        "even ids (new)": np.array([int(ids[i]) % 2 == 0 for i in dev])}
    runs, chosen, fold0, by_subset = [], [], None, {k: [] for k in subsets}
    for seed in range(repeats):
        pred, folds, l2s = cv.cross_validated_predictions(space, f_dev, a_dev, y_dev, seed=seed)
        runs.append(_scores(y_dev, pred, space.names))
        for name, mask in subsets.items():
            by_subset[name].append(_scores(y_dev[mask], pred[mask], space.names))
        chosen.append(l2s)
        if seed == 0:
            fold0 = _scores(y_dev[folds[0]], pred[folds[0]], space.names)
            fold0["micro"]["f1_ci95"] = _bootstrap_micro_f1(y_dev[folds[0]], pred[folds[0]])
    layer, setting = cv.fit_with_inner_cv(space, f_dev, a_dev, y_dev)
    generic = DecisionLayer.prior(space).decide(f_dev, a_dev)
    result = {
        "label_source": source, "disease_set": SOURCES[source], "n_reports": len(ids), "n_locked": int(locked.sum()),
        "n_cv": int(len(dev)), "folds": 5, "repeats": repeats, "setting_chosen_per_fold": chosen,
        "held_out": _mean_scores(runs), "held_out_per_repeat": [{k: r[k] for k in ("micro", "macro")} for r in runs],
        "held_out_by_subset": {k: _mean_scores(v) for k, v in by_subset.items()},
        "uninspected_fold": fold0,
        "in_sample": {"setting": setting, **_scores(y_dev, layer.decide(f_dev, a_dev), space.names),
                      "fitted": {c: p["fitted"] for c, p in layer.params.items()}},
        "generic_reading": _scores(y_dev, generic, space.names),
        "label_consistency": cv.label_consistency(space, [texts[i] for i in dev], y_dev, f_dev, a_dev),
    }
    if score_locked:
        lock = np.flatnonzero(locked)
        pred_lock = layer.decide(cv._rows(feats, lock), abnormal[lock])
        result["locked_fold"] = _scores(labels[lock], pred_lock, space.names)
        result["locked_fold"]["micro"]["f1_ci95"] = _bootstrap_micro_f1(labels[lock], pred_lock)
    result["seconds"] = round(time.time() - t0, 1)
    return result


def inspect(source: str, data_dir: Path, cls: str, limit: int) -> None:
    """Print out-of-fold errors of ``cls`` on inspectable reports only (not locked, not seed-0 fold 0)."""
    ids, texts, labels, locked = load(source, data_dir)
    space = build_space(source)
    feats, abnormal = space.transform(texts)
    dev = np.flatnonzero(~locked)
    hidden = dev[cv.kfold_indices(len(dev), 5, 0)[0]]
    allowed = np.setdiff1d(dev, hidden)
    f, a, y = cv._rows(feats, allowed), abnormal[allowed], labels[allowed]
    pred, _, _ = cv.cross_validated_predictions(space, f, a, y, seed=7)
    j = space.names.index(cls)
    from dia_llama.labelers.rule import RuleLabeler

    labeler = RuleLabeler(SOURCES[source], label_source="generic")
    shown = 0
    for r, i in enumerate(allowed):
        if pred[r, j] == y[r, j] or shown >= limit:
            continue
        shown += 1
        kind = "FN" if y[r, j] else "FP"
        print(f"--- {kind} {ids[i]}")
        for m in labeler.mentions(texts[i], context="sentence"):
            if m[0] == cls:
                print(f"    {m[1]:<10} {m[2]!r:<30} | {m[3]}")
        if cls == "no finding" or not any(m[0] == cls for m in labeler.mentions(texts[i])):
            print("    " + texts[i][:1500])
    fitted = cv.fit_with_inner_cv(space, f, a, y)[0].params[cls]
    big = sorted(fitted["weights"].items(), key=lambda kv: -abs(kv[1]))[:12]
    print("weights (fitted on the inspectable reports):", [(k, round(v, 2)) for k, v in big], round(fitted["bias"], 2))


ROUND1_PARAMS = ROOT / "tests" / "fixtures" / "ctrg_chexbert" / "labeler_params_round1.json"


def score_unseen(data_dir: Path, params_path: Path = ROUND1_PARAMS) -> dict:
    """The first round's CheXbert-compatible labeler (its decision layer, fitted on the 180 odd ids of
    ``chexbert_labels_dev.csv``, kept as a fixture) on the 182 CTRG test reports outside that file: reports it was
    never fitted, tuned or checked on."""
    from dia_llama.labelers.params import check_params

    params = json.loads(params_path.read_text())["chexbert"]
    problems = check_params("chexbert", params)
    if problems:
        raise SystemExit(f"the first-round parameters no longer match the feature space: {problems[:3]}; check out "
                         "commit 408e5ba and run --unseen there")
    y, pred, names = cv.unseen_chexbert_predictions(data_dir, params["classes"])
    result = _scores(y, pred, names)
    result["micro"]["f1_ci95"] = _bootstrap_micro_f1(y, pred)
    return {"chexbert": {"what": "first-round labeler (fitted on the 180 odd ids) on the 182 even ids",
                         "fitted_on": params["n_reports"], "n_reports": len(y), **result}}


class _ExtendedSpace:
    """A feature space with extra per-class columns (prior weight 0) for the ablations."""

    def __init__(self, space, extra: dict[str, list[str]]):
        self.names, self.concepts, self._space, self._extra = space.names, space.concepts, space, extra
        self.feature_names = {c: list(f) + extra.get(c, []) for c, f in space.feature_names.items()}

    def prior(self, cls, weight: float = 4.0, bias: float = -2.0):
        w, b = self._space.prior(cls, weight, bias)
        return np.concatenate([w, np.zeros(len(self._extra.get(cls, [])))]), b

    def core_columns(self, cls, statuses):
        return self._space.core_columns(cls, statuses)


def _lexical(space, texts, min_df: int = 10) -> tuple[dict, dict]:
    """Per class: word unigrams and bigrams of the clauses that mention the class (in at least ``min_df`` reports)."""
    from collections import Counter

    from dia_llama.labelers.context import Document

    words = {c: [] for c in space.concepts}
    for text in texts:
        doc = Document(text)
        for cls, concepts in space.concepts.items():
            found = set()
            for k in concepts:
                for m in k.regex.finditer(doc.text):
                    c = doc.clause_at(m.start())
                    if c is not None:
                        w = re.findall(r"[a-z]+", doc.text[c.start:c.end])
                        found |= set(w) | {f"{x}_{y}" for x, y in zip(w, w[1:])}
            words[cls].append(found)
    extra, cols = {}, {}
    for cls, sets in words.items():
        vocab = sorted(k for k, v in Counter(x for s in sets for x in s).items() if v >= min_df)
        extra[cls] = [f"lex:{v}" for v in vocab]
        cols[cls] = np.array([[v in s for v in vocab] for s in sets], dtype=float).reshape(len(texts), len(vocab))
    return extra, cols


def _auc(y, score) -> float:
    y = np.asarray(y, dtype=bool)
    pos, neg = score[y], score[~y]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def ablations(source: str, data_dir: Path, repeats: int = 3) -> dict:
    """Variants of the method, scored by the same CV (3 x 5 folds, l2 by inner CV) on the inspectable reports only
    (not locked, not the uninspected fold): the evidence for the choices in docs/labelers.md."""
    from dia_llama.labelers.fitted import fit_logistic

    ids, texts, labels, locked = load(source, data_dir)
    dev = np.flatnonzero(~locked)
    allowed = np.setdiff1d(dev, dev[cv.kfold_indices(len(dev), 5, 0)[0]])
    texts, y = [texts[i] for i in allowed], labels[allowed]
    space = build_space(source)
    feats, abnormal = space.transform(texts)
    names = list(space.feature_names)
    generic = DecisionLayer.prior(space).class_present(feats)

    def run(sp, f, **grids) -> dict:
        saved = cv.L2_GRID, cv.THRESHOLD_GRID
        cv.L2_GRID, cv.THRESHOLD_GRID = grids.get("l2", saved[0]), grids.get("threshold", saved[1])
        try:
            runs = [_scores(y, cv.cross_validated_predictions(sp, f, abnormal, y, seed=seed)[0], space.names)
                    for seed in range(repeats)]
        finally:
            cv.L2_GRID, cv.THRESHOLD_GRID = saved
        m = _mean_scores(runs)
        return {"micro_f1": m["micro"]["f1"], "range": [m["micro"]["f1_min"], m["micro"]["f1_max"]],
                "per_class_f1": {n: v["f1"] for n, v in m["per_class"].items()}}

    def extended(columns: dict[str, dict[str, np.ndarray]]):
        extra = {c: list(cols) for c, cols in columns.items()}
        f = {c: np.column_stack([feats[c], *columns[c].values()]) if columns.get(c) else feats[c] for c in names}
        return _ExtendedSpace(space, extra), f

    out = {"n_reports": len(allowed), "baseline": run(space, feats)}
    out["threshold in inner CV (0.3, 0.4, 0.5)"] = run(space, feats, threshold=(0.3, 0.4, 0.5))
    out["l2 grid 0.03-1"] = run(space, feats, l2=(0.03, 0.1, 0.3, 1.0))
    out["l2 grid 0.3-30"] = run(space, feats, l2=(0.3, 1.0, 3.0, 10.0, 30.0))
    others = {c: {f"ctx:{o}": generic[o] for o in names if o != c} for c in names}
    out["+ other classes present (generic reading)"] = run(*extended(others))
    count = {c: np.sum([generic[o] for o in names if o != c], 0) for c in names}
    report = {c: {"ctx:1+ other": count[c] >= 1, "ctx:2+ other": count[c] >= 2, "ctx:abnormal": abnormal[:, 0],
                  "ctx:abnormal past negation": abnormal[:, 1]} for c in names}
    out["+ report-level (other classes, abnormality)"] = run(*extended(report))
    extra, cols = _lexical(space, texts)
    out["+ clause words (min_df 10)"] = run(*extended({c: dict(zip(extra[c], cols[c].T)) for c in names}))
    if source == "chexbert":  # can the rest of the report tell CheXbert's answers on the two stock sentences apart?
        out["stock_sentence_bow_auc"] = {}
        for sentence in STOCK_ECM_SENTENCES:
            sel = [i for i, t in enumerate(texts) if sentence in " ".join(t.lower().split())]
            target, bags = y[sel, 0].astype(float), [_words(texts[i]) for i in sel]
            score = np.zeros(len(sel))
            for seed in range(repeats):
                for fold in cv.kfold_indices(len(sel), 5, seed):
                    train = np.setdiff1d(np.arange(len(sel)), fold)
                    vocab = sorted({w for i in train for w in bags[i] if sum(w in bags[j] for j in train) >= 3})
                    x = np.array([[w in b for w in vocab] for b in bags], dtype=float)
                    rate = min(max(target[train].mean(), 0.01), 0.99)
                    w, b = fit_logistic(x[train], target[train], np.zeros(len(vocab)), float(np.log(rate / (1 - rate))),
                                        l2=3.0)
                    score[fold] += x[fold] @ w + b
            out["stock_sentence_bow_auc"][sentence] = {"reports": len(sel), "positive": int(target.sum()),
                                                       "auc": _auc(target, score)}
    return out


STOCK_ECM_SENTENCES = (
    "the shape of heart shadow and heart big vessels is normal, and no obvious mass or enlarged lymph node is found in "
    "mediastinum.",
    "the shape of heart shadow and large vessels is normal, and no mass or enlarged lymph node is found in "
    "mediastinum.",
)


def _words(text: str) -> set:
    w = re.findall(r"[a-z]+", text.lower())
    return set(w) | {f"{x}_{y}" for x, y in zip(w, w[1:])}


def markdown(results: dict) -> str:
    """Per-class tables of a results JSON (held-out mean over repeats; in-sample, generic and locked-fold)."""
    out = []
    for source, r in results.items():
        locked = r.get("locked_fold")
        head = "| class | support | predicted | held-out P | R | F1 | in-sample F1 | generic F1 |"
        rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        if locked:
            head += " locked support | locked P | R | F1 |"
            rule += " ---: | ---: | ---: | ---: |"
        title = f"#### {source} ({r['disease_set']}, {r['n_cv']} reports in CV, {r['n_locked']} locked)"
        out += [title, "", head, rule]
        rows = [(n, r["held_out"]["per_class"][n]) for n in r["held_out"]["per_class"]]
        for name, h in rows:
            fitted = r["in_sample"].get("fitted", {}).get(name, True)
            note = " (no positives)" if h["zero_support"] else "" if fitted else " (not fitted)"
            line = (f"| {name}{note} | {h['support']} | {h['predicted']:.1f} | {h['precision']:.2f} | "
                    f"{h['recall']:.2f} | {h['f1']:.2f} | {r['in_sample']['per_class'][name]['f1']:.2f} | "
                    f"{r['generic_reading']['per_class'][name]['f1']:.2f} |")
            if locked:
                lk = locked["per_class"][name]
                line += f" {lk['support']} | {lk['precision']:.2f} | {lk['recall']:.2f} | {lk['f1']:.2f} |"
            out.append(line)
        for key in ("micro", "macro"):
            h = r["held_out"][key]
            counts = f"{sum(v['support'] for _, v in rows)} | {sum(v['predicted'] for _, v in rows):.1f}"
            line = (f"| **{key}** | {counts if key == 'micro' else ' | '} | {h['precision']:.3f} | {h['recall']:.3f} | "
                    f"**{h['f1']:.3f}** | {r['in_sample'][key]['f1']:.3f} | {r['generic_reading'][key]['f1']:.3f} |")
            if locked:
                lk = locked[key]
                support = sum(v["support"] for v in locked["per_class"].values()) if key == "micro" else ""
                line += f" {support} | {lk['precision']:.3f} | {lk['recall']:.3f} | **{lk['f1']:.3f}** |"
            out.append(line)
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "experiments" / "labeler_crossval.json")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--locked", action="store_true", help="also score the locked fold")
    parser.add_argument("--write-params", action="store_true", help="fit on all labelled reports, write the resource")
    parser.add_argument("--inspect", nargs=2, metavar=("SOURCE", "CLASS"))
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--markdown", type=Path, help="print the per-class tables of this results JSON and exit")
    parser.add_argument("--unseen", action="store_true",
                        help="score the first-round CheXbert labeler on the 182 reports it never saw")
    parser.add_argument("--ablations", action="store_true",
                        help="score variants of the method by CV on the inspectable reports -> labeler_ablations.json")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    if args.unseen:
        result = score_unseen(args.data)
        out = args.output.with_name("labeler_unseen_round1.json")
        out.write_text(json.dumps(result, indent=1) + "\n")
        r = result["chexbert"]
        ci = r["micro"]["f1_ci95"]
        print(f"unseen {r['n_reports']} reports: micro-F1 {r['micro']['f1']:.3f} (95 % CI {ci[0]:.3f}-{ci[1]:.3f}), "
              f"P {r['micro']['precision']:.3f}, R {r['micro']['recall']:.3f}; "
              f"macro-F1 {r['macro']['f1']:.3f} (14 classes), {r['macro_supported']['f1']:.3f} "
              f"({r['macro_supported']['n_classes']} classes with positives)")
        print("   ", {n: round(v["f1"], 2) for n, v in r["per_class"].items()})
        print("wrote", out)
        return 0
    if args.ablations:
        result = {s: ablations(s, args.data, args.repeats) for s in args.sources}
        out = args.output.with_name("labeler_ablations.json")
        out.write_text(json.dumps(result, indent=1) + "\n")
        for s, r in result.items():
            for name, v in r.items():
                if isinstance(v, dict) and "micro_f1" in v:
                    print(f"{s}: {name:<48} micro-F1 {v['micro_f1']:.3f} ({v['range'][0]:.3f}-{v['range'][1]:.3f})")
            for sentence, v in r.get("stock_sentence_bow_auc", {}).items():
                print(f"{s}: whole-report words, {v['reports']} reports ({v['positive']} positive) with "
                      f"{sentence[:40]!r}...: AUC {v['auc']:.2f}")
        print("wrote", out)
        return 0
    if args.inspect:
        inspect(args.inspect[0], args.data, args.inspect[1], args.limit)
        return 0
    if args.write_params:
        layers = {}
        for source in args.sources:
            ids, texts, labels, _ = load(source, args.data)
            space = build_space(source)
            feats, abnormal = space.transform(texts)
            layer, setting = cv.fit_with_inner_cv(space, feats, abnormal, labels)
            layers[source] = layer_to_json(layer, setting=setting, n_reports=len(ids))
        print("wrote", write_params(layers))
        return 0
    results = {s: evaluate(s, args.data, args.repeats, args.locked) for s in args.sources}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    for s, r in results.items():
        h, i = r["held_out"], r["in_sample"]
        line = (f"{s}: held-out micro-F1 {h['micro']['f1']:.3f} (repeats {h['micro']['f1_min']:.3f}-"
                f"{h['micro']['f1_max']:.3f}), macro-F1 {h['macro']['f1']:.3f}; uninspected fold "
                f"{r['uninspected_fold']['micro']['f1']:.3f}; in-sample {i['micro']['f1']:.3f}; generic reading "
                f"{r['generic_reading']['micro']['f1']:.3f}; text ceiling "
                f"{r['label_consistency']['text_ceiling_micro_f1']:.3f} (held-out "
                f"{r['label_consistency']['text_ceiling_loo_micro_f1']:.3f}), feature ceiling "
                f"{r['label_consistency']['feature_ceiling_micro_f1']:.3f} (held-out "
                f"{r['label_consistency']['feature_ceiling_loo_micro_f1']:.3f})")
        if "locked_fold" in r:
            lk = r["locked_fold"]
            line += (f"; locked fold {lk['micro']['f1']:.3f} (95 % CI {lk['micro']['f1_ci95'][0]:.3f}-"
                     f"{lk['micro']['f1_ci95'][1]:.3f}) / macro {lk['macro']['f1']:.3f}")
        print(line + f" ({r['seconds']} s)")
        print("   ", {n: round(v["f1"], 2) for n, v in h["per_class"].items()})
    print("wrote", args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
