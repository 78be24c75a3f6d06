"""Shared helpers of the benchmarks: machine description, timing, RSS sampling, result JSON and the summary table."""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"
# outside the repository: a 90 MB test CT must never be committed or travel with the working tree
DEFAULT_CACHE_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "dia_llama_bench_cache"
BENCHMARKS = ("preprocess", "vision", "generation", "training", "app")


# ------------------------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """What the numbers were measured on (CPU, cores, library versions, date, load)."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import psutil

        info["memory_total_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for name in ("torch", "transformers", "numpy", "peft", "nibabel", "monai", "SimpleITK", "scipy", "isal",
                 "indexed_gzip"):
        try:
            module = __import__(name)
            info[f"{name}_version"] = getattr(module, "__version__", None) or getattr(module, "Version", lambda: "?")()
        except Exception:  # not installed: say so
            info[f"{name}_version"] = None
    try:
        import torch

        info["torch_num_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


# -------------------------------------------------------------------------------------------------------------- timing
def summarize(times: list[float]) -> dict:
    return {
        "times_s": [round(t, 6) for t in times],
        "repeats": len(times),
        "median_s": round(statistics.median(times), 6),
        "min_s": round(min(times), 6),
        "max_s": round(max(times), 6),
    }


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict:
    """Wall time of `fn()`: `warmup` untimed calls, then `repeats` timed ones (gc collected before each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return summarize(times)


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Like `time_call` for several variants, run round-robin so that a burst of load on the (shared) machine hits
    every variant alike; the ratios of medians are then comparable."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: summarize(ts) for name, ts in times.items()}


class RSSSampler:
    """Peak resident set size of this process (psutil, sampled every `interval` s in a thread) while the block runs.

    RSS counts every byte the process touches (torch's CPU allocator returns large blocks to the OS, so the peak over
    the baseline is what one step needs on top of what was already resident). Sampling can miss a spike shorter than
    `interval`; the value is a lower bound of the true peak by at most that."""

    def __init__(self, interval: float = 0.002):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.baseline = self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        gc.collect()
        self.baseline = self.peak = self._proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return False

    @property
    def delta_gb(self) -> float:
        return (self.peak - self.baseline) / 2**30

    def as_dict(self) -> dict:
        return {
            "method": f"psutil RSS sampled every {self.interval * 1000:.0f} ms in a thread",
            "baseline_rss_gb": round(self.baseline / 2**30, 3),
            "peak_rss_gb": round(self.peak / 2**30, 3),
            "peak_minus_baseline_gb": round(self.delta_gb, 3),
        }


# ------------------------------------------------------------------------------------------------------------- results
def row(quantity: str, value, unit: str = "", target: str = "", passed: bool | None = None, miss_by: str = "",
        limit: str = "", note: str = "") -> dict:
    """One line of the summary table. `passed` None = informational (no target)."""
    return {"quantity": quantity, "value": value, "unit": unit, "target": target, "passed": passed,
            "miss_by": miss_by, "what_limits_it": limit, "note": note}


def results_dir(path: str | os.PathLike | None = None) -> Path:
    out = Path(path or os.environ.get("DIA_LLAMA_BENCH_RESULTS") or DEFAULT_RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    out = Path(path or os.environ.get("DIA_LLAMA_BENCH_CACHE") or DEFAULT_CACHE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def write_result(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `<out_dir>/<name>.json` (machine description added) and regenerate `summary.md`."""
    out = results_dir(out_dir)
    payload = {"benchmark": name, "machine": payload.pop("machine", None) or machine_info(), **payload}
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    write_summary(out)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_summary(out_dir: str | os.PathLike | None = None) -> Path:
    """`summary.md`: one row per measured quantity of every `<name>.json` in the folder."""
    out = results_dir(out_dir)
    lines = ["# dia-llama benchmark summary", "",
             "Generated by `python -m bench` from the JSON files beside this one; re-run to refresh. Ratios are "
             "measured within one run (variants interleaved), so they hold on a shared machine where absolute "
             "timings are noisy.", ""]
    order = {n: i for i, n in enumerate((*BENCHMARKS, "gpu_paper_recipe"))}
    files = sorted(out.glob("*.json"), key=lambda p: (order.get(p.stem, 99), p.stem))
    machine_lines = []
    table = ["| benchmark | quantity | target | value | status | what limits it / note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            table.append(f"| {path.stem} | (unreadable JSON: {_cell(exc)}) | | | error | |")
            continue
        if not isinstance(data, dict) or "rows" not in data and "error" not in data:
            continue
        name = data.get("benchmark", path.stem)
        m = data.get("machine") or {}
        if m:
            desc = m.get("cpu_model") or m.get("gpu_name") or "?"
            machine_lines.append(
                f"- `{name}`: {desc}, {m.get('usable_cores', '?')} cores, torch {m.get('torch_version')}, "
                f"transformers {m.get('transformers_version')}, {m.get('date', '?')}"
                + (", quick" if data.get("settings", {}).get("quick") else "")
                + (f", load avg {m['load_average_1_5_15']}" if m.get("load_average_1_5_15") else "")
            )
        if data.get("error"):
            table.append(f"| {name} | (benchmark failed) | | | error | {_cell(data['error'])[:300]} |")
        for r in data.get("rows", []):
            status = {True: "pass", False: "MISS", None: "info"}[r.get("passed")]
            if r.get("skipped"):
                status = "skipped"
            value = r.get("value")
            value_text = "—" if value is None else f"{_fmt(value)} {r.get('unit', '')}".strip()
            notes = []
            if r.get("passed") is False and r.get("miss_by"):
                notes.append(f"missed by {r['miss_by']}")
            if r.get("what_limits_it"):
                notes.append(r["what_limits_it"])
            if r.get("note"):
                notes.append(r["note"])
            table.append(
                f"| {name} | {_cell(r['quantity'])} | {_cell(r.get('target') or '—')} | {_cell(value_text)} | "
                f"{status} | {_cell('; '.join(notes))} |"
            )
    lines += table + ["", "Machines:", ""] + machine_lines + [""]
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def ratio_row(quantity: str, value: float, target_ratio: float, *, higher_is_better: bool, unit: str = "×",
              limit: str = "", note: str = "") -> dict:
    """A row for a ratio target (value ≥ target if higher is better, else ≤ target), with the shortfall."""
    passed = value >= target_ratio if higher_is_better else value <= target_ratio
    miss = ""
    if not passed:
        miss = (f"{target_ratio / value:.2f}× (needs {target_ratio:g}, has {value:.2f})" if higher_is_better
                else f"{value / target_ratio:.2f}× (needs ≤ {target_ratio:g}, has {value:.2f})")
    target = f"{'≥' if higher_is_better else '≤'} {target_ratio:g}{unit}"
    return row(quantity, round(value, 3), unit, target, passed, miss, limit if not passed else "", note)
