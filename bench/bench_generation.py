"""Generation throughput of the `tiny` preset (untrained): reports/s and tokens/s, batch 1 vs 8, KV cache on/off.

Each call is the full `model.generate(**processor(volumes=…))`: vision encoding, diagnosis, writing the diagnostic
prompt, prefill and a fixed number of greedy new tokens (`min_new_tokens = max_new_tokens`, so an untrained model
cannot stop early): the package's generation length (`max_new_tokens` = 300, the paper's) with the KV cache, and 64
without it (each uncached step re-runs the whole sequence, so 300 would dominate the benchmark's time). Variants are
timed round-robin in one run; the verdict uses the best of the repeats (load on a shared machine only adds time),
medians are in the JSON.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from .common import machine_info, ratio_row, row, time_interleaved, write_result

TARGET_BATCH_SPEEDUP = 4.0


def build(seed: int = 0):
    from dia_llama.presets import build_model_and_processor

    model, processor = build_model_and_processor("tiny", seed=seed)
    return model.eval(), processor


def make_inputs(processor, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = processor.image_processor.volume_size
    volumes = [rng.normal(-300, 400, size=size).astype(np.float32) for _ in range(batch)]
    return processor(volumes=volumes, return_tensors="pt")


def profile_generate(fn) -> dict:
    """torch.profiler over one call: the share of wall time spent inside torch ops and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    self_total = sum(e.self_cpu_time_total for e in events) / 1e6
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:5]
    return {"wall_s": round(wall, 4), "torch_ops_self_s": round(self_total, 4),
            "torch_ops_share_of_wall": round(self_total / wall, 3),
            "top_ops": [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 4), "calls": e.count} for e in top]}


def run(quick: bool = False, results_dir=None, new_tokens: int | None = None, repeats: int | None = None,
        batches=(1, 8), profile: bool = True, threads: int = 1, compare_threads: int | None = 2,
        nocache_tokens: int = 64) -> dict:
    """Verdict at `threads` torch threads (default 1: on the shared 2-core machine a 2-thread pool makes every small op
    wait for a descheduled thread; `compare_threads` measures the cached runs at that count too, as evidence)."""
    from dia_llama.presets import load_preset

    new_tokens = new_tokens or load_preset("tiny")["generation"]["max_new_tokens"]
    nocache_tokens = min(nocache_tokens, new_tokens)
    repeats = repeats or (3 if quick else 7)
    model, processor = build()
    inputs = {b: make_inputs(processor, b) for b in batches}
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, num_beams=1)

    def gen(b, cache, n=None, nthreads=threads):
        extra = dict(kwargs) if n is None else dict(kwargs, max_new_tokens=n, min_new_tokens=n)

        def call():
            torch.set_num_threads(nthreads)
            with torch.no_grad():
                return model.generate(**inputs[b], use_cache=cache, **extra)

        return call

    fns = {}
    for b in batches:
        fns[f"batch{b}_cache"] = gen(b, True)
        fns[f"batch{b}_nocache"] = gen(b, False, nocache_tokens)
        fns[f"batch{b}_prefill_only"] = gen(b, True, 1)
        if compare_threads and compare_threads != threads and (b == min(batches) or not quick):
            fns[f"batch{b}_cache_{compare_threads}threads"] = gen(b, True, nthreads=compare_threads)
    out_shapes = {name: list(fn().shape) for name, fn in fns.items()}  # also the warm-up
    timings = time_interleaved(fns, repeats=repeats, warmup=1)  # + the call above: the first calls of a shape are slow
    torch.set_num_threads(threads)

    results = {}
    for name, t in timings.items():
        b = int(name.split("_")[0][5:])
        n = 1 if "prefill_only" in name else nocache_tokens if "nocache" in name else new_tokens
        results[name] = {"batch": b, "new_tokens": n,
                         "tokens_per_s_best": round(b * n / t["min_s"], 2),
                         "tokens_per_s_median": round(b * n / t["median_s"], 2),
                         "reports_per_s_best": round(b / t["min_s"], 3)}
    b1, b8 = min(batches), max(batches)
    decode = {}
    for b in batches:  # from medians: a difference of two minima can come out negative under load
        full, pre = timings[f"batch{b}_cache"]["median_s"], timings[f"batch{b}_prefill_only"]["median_s"]
        decode[b] = {"prefill_s": round(pre, 4), "decode_s_per_token": round((full - pre) / max(new_tokens - 1, 1), 5)}

    prof = profile_generate(gen(b8, True)) if profile else None
    torch.set_num_threads(threads)

    def cached_time(b, n):  # the cached call at n new tokens, from the measured prefill and per-token times
        return decode[b]["prefill_s"] + n * decode[b]["decode_s_per_token"]

    def projected(n):  # batch-b8 / batch-b1 tokens/s at n new tokens, from the measured prefill and per-token times
        t1, t8 = cached_time(b1, n), cached_time(b8, n)
        return b8 * t1 / (b1 * t8) if t8 > 0 else float("nan")

    pre_share = decode[b8]["prefill_s"] / timings[f"batch{b8}_cache"]["median_s"]
    limit = (f"prefill (vision + diagnosis + prompt, grows with the batch) is {pre_share:.0%} of the batch-{b8} call: "
             f"{decode[b1]['prefill_s'] * 1000:.0f} → {decode[b8]['prefill_s'] * 1000:.0f} ms, while a decode step "
             f"goes {decode[b1]['decode_s_per_token'] * 1000:.1f} → {decode[b8]['decode_s_per_token'] * 1000:.1f} ms; "
             f"the same numbers give {projected(64):.1f}× at 64 and {projected(147):.1f}× at 147 new tokens (the "
             f"synthetic reports' mean length)")
    if prof:
        ops = ", ".join(f"{o['op']} {o['self_s']:.3f} s" for o in prof["top_ops"][:3])
        limit += (f"; torch.profiler (batch {b8}, cache): torch ops {prof['torch_ops_share_of_wall']:.0%} of wall, "
                  f"the rest Python in generate(); top ops {ops}")

    def ratio(suffix):
        return results[f"batch{b8}_{suffix}"]["tokens_per_s_best"] / results[f"batch{b1}_{suffix}"]["tokens_per_s_best"]

    med_speedup = (results[f"batch{b8}_cache"]["tokens_per_s_median"]
                   / results[f"batch{b1}_cache"]["tokens_per_s_median"])
    rows = [
        ratio_row(f"batch-{b8} tokens/s / batch-{b1} (KV cache, {threads} thread)", ratio("cache"),
                  TARGET_BATCH_SPEEDUP, higher_is_better=True, limit=limit,
                  note=f"{results[f'batch{b8}_cache']['tokens_per_s_best']:.0f} vs "
                       f"{results[f'batch{b1}_cache']['tokens_per_s_best']:.0f} tokens/s; "
                       f"medians give {med_speedup:.2f}×"),
        ratio_row(f"batch-{b8} tokens/s / batch-{b1} (no cache, {threads} thread)", ratio("nocache"),
                  TARGET_BATCH_SPEEDUP, higher_is_better=True,
                  limit=(f"without the cache every step re-runs the whole ≈{out_shapes[f'batch{b8}_nocache'][1]}-token "
                         f"sequence: at {nocache_tokens} new tokens the batch-{b8} call takes "
                         f"{timings[f'batch{b8}_nocache']['median_s'] / cached_time(b8, nocache_tokens):.1f}× its "
                         f"cached time (batch {b1}: "
                         f"{timings[f'batch{b1}_nocache']['median_s'] / cached_time(b1, nocache_tokens):.1f}×), so "
                         "the work grows with batch × length and batching has little overhead left to amortise")),
    ]
    tkey = f"cache_{compare_threads}threads"
    if f"batch{b1}_{tkey}" in results:
        slow = timings[f"batch{b1}_{tkey}"]["min_s"] / timings[f"batch{b1}_cache"]["min_s"]
        both = (f"; batch-{b8} / batch-{b1} = {ratio(tkey):.2f}× at {compare_threads} threads"
                if f"batch{b8}_{tkey}" in results else "")
        rows.append(row(f"batch-{b1} generate time, {compare_threads} threads / {threads}", round(slow, 3), "×",
                        note="on the shared machine every small op waits for a descheduled 2nd thread (torch.profiler: "
                             f"aten::mm ms-long per call), hence the {threads}-thread verdict{both}"))
    for b in batches:
        rows.append(row(f"tokens/s, batch {b}, cache ({new_tokens} new tokens) | no cache ({nocache_tokens}) "
                        f"({threads} thread)",
                        f"{results[f'batch{b}_cache']['tokens_per_s_best']:.0f} | "
                        f"{results[f'batch{b}_nocache']['tokens_per_s_best']:.0f}", "",
                        note=f"{results[f'batch{b}_cache']['reports_per_s_best']:.2f} reports/s with cache "
                             f"({new_tokens} new tokens)"))
    payload = {
        "machine": machine_info(),
        "settings": {"quick": quick, "repeats": repeats, "preset": "tiny (untrained)", "new_tokens": new_tokens,
                     "nocache_new_tokens": nocache_tokens, "decoding": "greedy, min_new_tokens = max_new_tokens",
                     "batches": list(batches), "threads": threads, "compare_threads": compare_threads,
                     "verdict_basis": "best of repeats"},
        "timings": timings,
        "output_shapes": out_shapes,
        "results": results,
        "prefill_and_decode": decode,
        "projected_batch_speedup": {n: round(projected(n), 3) for n in (64, 147, 300)},
        "profile": prof,
        "load_average_at_end": list(os.getloadavg()),
        "rows": rows,
    }
    write_result("generation", payload, results_dir)
    return payload
