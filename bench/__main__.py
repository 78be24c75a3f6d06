"""`python -m bench all|preprocess|vision|generation|training|app [--quick] [--results-dir DIR]`.

`all` runs each benchmark in its own process (clean memory baselines, no state shared between them) and keeps going
when one fails (the failure is written to its JSON and the summary)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .common import BENCHMARKS, REPO_ROOT, results_dir, write_result, write_summary  # noqa: E402

MODULES = {name: f"bench.bench_{name}" for name in BENCHMARKS}


def run_one(name: str, quick: bool, out_dir) -> int:
    t0 = time.perf_counter()
    print(f"[bench] {name}{' (quick)' if quick else ''} ...", flush=True)
    try:
        payload = importlib.import_module(MODULES[name]).run(quick=quick, results_dir=out_dir)
    except Exception as exc:  # record the failure instead of losing the other benchmarks
        traceback.print_exc()
        write_result(name, {"settings": {"quick": quick}, "error": f"{type(exc).__name__}: {exc}", "rows": []},
                     out_dir)
        return 1
    dt = time.perf_counter() - t0
    for r in payload.get("rows", []):
        status = {True: "pass", False: "MISS", None: "info"}[r.get("passed")]
        print(f"  {status:5s} {r['quantity']}: {r.get('value')} {r.get('unit', '')}", flush=True)
    print(f"[bench] {name} done in {dt:.0f} s", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", choices=["all", *BENCHMARKS])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (sizes stay the same)")
    parser.add_argument("--results-dir", default=None, help="default bench/results (or $DIA_LLAMA_BENCH_RESULTS)")
    args = parser.parse_args(argv)
    out_dir = str(results_dir(args.results_dir))
    if args.benchmark != "all":
        return run_one(args.benchmark, args.quick, out_dir)
    t0 = time.perf_counter()
    failed = []
    for name in BENCHMARKS:
        cmd = [sys.executable, "-m", "bench", name, "--results-dir", out_dir] + (["--quick"] if args.quick else [])
        if subprocess.call(cmd, cwd=str(REPO_ROOT)) != 0:
            failed.append(name)
    summary = write_summary(out_dir)
    print(f"[bench] all done in {time.perf_counter() - t0:.0f} s; summary: {summary}"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    print(summary.read_text(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
