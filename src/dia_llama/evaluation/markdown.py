"""Markdown tables of a metrics dict: the one renderer of `dia-llama score`, `dia-llama evaluate` and the demo.

It renders whatever blocks the dict has: `nlg` ({mode: scores}), `clinical_efficacy` (CE of generated reports),
`diagnosis` (the disease branch's own decisions), `baselines` and `attention_localization`.
"""

from __future__ import annotations

from .metrics import NLG_METRICS

AVERAGES = ("micro", "macro", "macro_supported", "example")


def _header(metrics: dict) -> list[str]:
    if "file" in metrics:
        return [f"**{metrics['file']}** — {metrics.get('n', '?')} cases", ""]
    if "n" in metrics:
        dataset = metrics.get("dataset") or {}
        where = f" — {dataset.get('name')}, split `{dataset.get('split')}`" if dataset.get("name") else ""
        return [f"# Evaluation ({metrics['n']} cases){where}", ""]
    return []


def _nlg(nlg: dict, digits: int) -> list[str]:
    names = [m for m in NLG_METRICS if any(m in v for v in nlg.values())]
    lines = ["| mode | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for mode, values in nlg.items():
        lines.append(f"| {mode} | "
                     + " | ".join(f"{values[m]:.{digits}f}" if m in values else "–" for m in names) + " |")
    return lines + [""]


def _averages(block: dict) -> list[str]:
    lines = ["| average | precision | recall | F1 |", "| --- | ---: | ---: | ---: |"]
    for key in AVERAGES:
        if key in block:
            v = block[key]
            label = key if key != "macro_supported" else f"macro (supported, {v.get('n_classes', '?')} classes)"
            lines.append(f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
    return lines + [""]


def _per_class(ce: dict | None, dx: dict | None) -> list[str]:
    """Per-class P/R/F1 of the reports' CE; with the disease branch's diagnoses, their F1 beside it."""
    block = ce or dx
    if not block or not block.get("per_class"):
        return []
    extra = dx is not None and ce is not None
    head = "| class | precision | recall | F1 | support | predicted |" + (" diagnosis F1 |" if extra else "")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if extra else "")]
    for name, v in block["per_class"].items():
        note = " (no positives)" if v.get("zero_support") else ""
        row = (f"| {name}{note} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} | "
               f"{v.get('predicted', '')} |")
        if extra:
            row += f" {dx['per_class'][name]['f1']:.3f} |"
        lines.append(row)
    return lines + [""]


def _localization(block: dict) -> list[str]:
    overall = block.get("overall", {})
    lines = ["## Disease-aware attention: localisation (present findings with a region)", "",
             f"pointing game {overall.get('pointing_game', float('nan')):.3f} (uniform attention "
             f"{overall.get('pointing_game_uniform', float('nan')):.3f}), mass in region "
             f"{overall.get('mass_in_region', float('nan')):.3f} "
             f"(uniform {overall.get('mass_uniform', float('nan')):.3f}),"
             f" {overall.get('cases', 0)} case-findings", "",
             "| class | cases | pointing game | uniform | mass in region | uniform |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, v in block.get("per_class", {}).items():
        lines.append(f"| {name} | {v['cases']} | {v['pointing_game']:.3f} | {v['pointing_game_uniform']:.3f} | "
                     f"{v['mass_in_region']:.3f} | {v['mass_uniform']:.3f} |")
    return lines + [""]


def metrics_markdown(metrics: dict, digits: int = 2) -> str:
    """Markdown for a metrics dict (see the module docstring); also accepts a bare `nlg_metrics` result."""
    lines = _header(metrics)
    nlg = metrics.get("nlg")
    if nlg is None and any(k in metrics for k in NLG_METRICS):
        nlg = {metrics.get("mode", "nlg"): metrics}
    if nlg:
        lines += ["## Report text (NLG)", ""] + _nlg(nlg, digits)
    ce, dx = metrics.get("clinical_efficacy"), metrics.get("diagnosis")
    if ce:
        lines += [f"## Clinical efficacy of the reports (labeler: `{ce.get('labeler', '?')}`, present = positive)", ""]
        lines += _averages(ce)
    if dx:
        accuracy = f", accuracy {dx['accuracy']:.3f}" if "accuracy" in dx else ""
        lines += [f"## Diagnoses of the disease branch (against {dx.get('reference', 'the labels')}{accuracy})", ""]
        lines += _averages(dx)
    lines += _per_class(ce, dx)
    if metrics.get("attention_localization"):
        lines += _localization(metrics["attention_localization"])
    if metrics.get("baselines"):
        lines += ["## Baselines (CE micro-F1)", ""]
        lines += [f"- {name}: {row['ce_micro_f1']:.3f}" for name, row in metrics["baselines"].items()] + [""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["metrics_markdown"]
