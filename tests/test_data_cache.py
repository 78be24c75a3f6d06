"""Tests of dia_llama.data.cache: the preprocessing cache (reuse, resume after a kill, fingerprints, workers)."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from dia_llama.data import cache as cache_mod
from dia_llama.data.cache import (
    CacheError,
    CacheMismatchError,
    CacheMissError,
    case_filename,
    open_cache,
    preprocess_dataset,
    processor_fingerprint,
)
from dia_llama.image_processing_dia_llama import DiaLlamaVolumeProcessor
from dia_llama.volume_io import write_nifti

N_CASES = 6
CONFIG = dict(volume_size=(8, 8, 4), num_channels=3, intensity_mode="hu", resample="area")


class CountingProcessor(DiaLlamaVolumeProcessor):
    """Counts process_volume calls (class attributes: they must not enter to_dict()); can fail after `fail_after`."""

    calls = 0
    fail_after = None

    def process_volume(self, volume):
        if CountingProcessor.fail_after is not None and CountingProcessor.calls >= CountingProcessor.fail_after:
            raise RuntimeError("simulated crash")
        CountingProcessor.calls += 1
        return super().process_volume(volume)


@pytest.fixture()
def counting():
    CountingProcessor.calls, CountingProcessor.fail_after = 0, None
    yield CountingProcessor(**CONFIG)
    CountingProcessor.calls, CountingProcessor.fail_after = 0, None


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = []
    for i in range(N_CASES):
        arr = np.random.default_rng(i).integers(-1000, 1000, (16, 16, 8)).astype(np.int16)  # (H, W, D)
        write_nifti(root / "volumes" / f"case{i}.nii.gz", arr, (0.8, 0.8, 2.0))
        rows.append({"id": f"case{i}", "volume": f"volumes/case{i}.nii.gz", "report": f"Report {i}.",
                     "split": "train" if i < 4 else "test", "labels": {"edema": i % 2}})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _arrays(report):
    folder = cache_mod.Path(report.cache_dir)
    return {p.name: np.load(p) for p in sorted(folder.glob("*.npy"))}


def _same(a, b):
    assert a.keys() == b.keys() and len(a) == N_CASES
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_cache_roundtrip_and_reuse(data_dir, tmp_path, counting):
    import shutil

    data_dir = shutil.copytree(data_dir, tmp_path / "data")  # this test rewrites a volume
    out = tmp_path / "cache"
    r1 = preprocess_dataset(data_dir, out, counting, progress=False)
    assert (r1.n_cases, r1.n_processed, r1.n_cached, r1.n_failed) == (N_CASES, N_CASES, 0, 0)
    assert CountingProcessor.calls == N_CASES
    folder = out / processor_fingerprint(counting)
    assert (folder / "processor.json").is_file() and len((folder / "index.jsonl").read_text().splitlines()) == N_CASES
    stored = np.load(folder / "case0.npy")
    assert stored.dtype == np.float16 and stored.shape == (8, 8, 4)  # one channel, (H, W, D)

    r2 = preprocess_dataset(data_dir, out, counting, progress=False)  # everything reused
    assert CountingProcessor.calls == N_CASES and (r2.n_cached, r2.n_processed) == (N_CASES, 0)

    cache = open_cache(out, DiaLlamaVolumeProcessor(**CONFIG))
    x = cache.get("case2")
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 8, 8, 4)
    ref = DiaLlamaVolumeProcessor(**CONFIG)(str(data_dir / "volumes/case2.nii.gz"), return_tensors="pt")
    torch.testing.assert_close(x, ref["pixel_values"][0], atol=1e-3, rtol=0)
    assert cache.has("case5") and "case5" in cache and not cache.has("nope") and len(cache) == N_CASES
    with pytest.raises(CacheMissError, match="'nope' is not in the cache"):
        cache.get("nope")
    assert open_cache(folder, DiaLlamaVolumeProcessor(**CONFIG)).get("case2").shape == x.shape  # fingerprint folder

    # a changed source file is processed again
    arr = np.zeros((16, 16, 8), np.int16)
    write_nifti(data_dir / "volumes/case1.nii.gz", arr + 5, (0.8, 0.8, 2.0))
    r3 = preprocess_dataset(data_dir, out, counting, progress=False)
    assert (r3.n_cached, r3.n_processed) == (N_CASES - 1, 1)


def test_interrupted_run_resumes_and_matches(data_dir, tmp_path, counting):
    full = preprocess_dataset(data_dir, tmp_path / "full", DiaLlamaVolumeProcessor(**CONFIG), progress=False)

    out = tmp_path / "resumed"
    CountingProcessor.fail_after = 2
    with pytest.raises(CacheError, match=r"case case2 \(.*case2\.nii\.gz\): RuntimeError: simulated crash"):
        preprocess_dataset(data_dir, out, counting, progress=False)
    folder = out / processor_fingerprint(counting)
    assert sorted(p.name for p in folder.glob("*.npy")) == ["case0.npy", "case1.npy"]
    CountingProcessor.calls, CountingProcessor.fail_after = 0, None
    r = preprocess_dataset(data_dir, out, counting, progress=False)
    assert CountingProcessor.calls == N_CASES - 2 and (r.n_cached, r.n_processed) == (2, N_CASES - 2)
    _same(_arrays(full), _arrays(r))


def test_sigkill_mid_write_leaves_no_corrupt_file(data_dir, tmp_path):
    """A process killed while writing a .npy leaves only a temporary file; the next run cleans up and resumes."""
    out = tmp_path / "killed"
    vp = DiaLlamaVolumeProcessor(**CONFIG)
    pid = os.fork()
    if pid == 0:  # child: write 3 cases, die (SIGKILL) half-way through the 4th file
        try:
            torch.set_num_threads(1)
            real_save, calls = np.save, [0]

            def dying_save(fh, arr, **kw):
                calls[0] += 1
                if calls[0] == 4:
                    fh.write(b"\x93NUMPY partial")
                    fh.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                real_save(fh, arr, **kw)

            cache_mod.np.save = dying_save
            preprocess_dataset(data_dir, out, vp, progress=False)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    folder = out / processor_fingerprint(vp)
    assert len(list(folder.glob("*.npy"))) == 3 and len(list(folder.glob(".*.tmp"))) == 1

    r = preprocess_dataset(data_dir, out, vp, progress=False)
    assert (r.n_cached, r.n_processed) == (3, N_CASES - 3) and not list(folder.glob(".*.tmp"))
    full = preprocess_dataset(data_dir, tmp_path / "full", vp, progress=False)
    _same(_arrays(full), _arrays(r))


def test_fingerprint_tracks_the_config(tmp_path):
    base = DiaLlamaVolumeProcessor(**CONFIG)
    fp = processor_fingerprint(base)
    assert len(fp) == 16 and processor_fingerprint(DiaLlamaVolumeProcessor(**CONFIG)) == fp
    assert processor_fingerprint(DiaLlamaVolumeProcessor(**{**CONFIG, "num_channels": 1})) == fp  # replicated at load
    for change in [{"volume_size": (8, 8, 8)}, {"intensity_mode": "minmax"}, {"hu_window": (-500, 500)},
                   {"resample": "nearest"}]:
        assert processor_fingerprint(DiaLlamaVolumeProcessor(**{**CONFIG, **change})) != fp, change
    base.save_pretrained(tmp_path / "model")  # a model folder gives the same fingerprint
    assert processor_fingerprint(str(tmp_path / "model")) == fp


def test_changed_processor_is_refused(data_dir, tmp_path):
    out = tmp_path / "cache"
    preprocess_dataset(data_dir, out, DiaLlamaVolumeProcessor(**CONFIG), progress=False)
    other = DiaLlamaVolumeProcessor(**{**CONFIG, "intensity_mode": "minmax"})
    with pytest.raises(CacheMismatchError, match=r"(?s)intensity_mode.*re-run `dia-llama preprocess"):
        open_cache(out, other)
    with pytest.raises(CacheMismatchError):
        open_cache(out / processor_fingerprint(DiaLlamaVolumeProcessor(**CONFIG)), other)


def test_two_workers_equal_one(data_dir, tmp_path):
    vp = DiaLlamaVolumeProcessor(**CONFIG)
    one = preprocess_dataset(data_dir, tmp_path / "w1", vp, num_workers=1, progress=False)
    two = preprocess_dataset(data_dir, tmp_path / "w2", vp, num_workers=2, progress=False)
    assert two.n_processed == N_CASES
    _same(_arrays(one), _arrays(two))


def test_failures_raise_or_are_counted(data_dir, tmp_path):
    rows = [{"id": "good", "volume": str(data_dir / "volumes/case0.nii.gz")},
            {"id": "weird/id", "volume": str(data_dir / "volumes/case3.nii.gz")},
            {"id": "gone", "volume": str(tmp_path / "gone.nii.gz")}]
    vp = DiaLlamaVolumeProcessor(**CONFIG)
    with pytest.raises(CacheError, match=r"case gone \(.*gone\.nii\.gz\)"):
        preprocess_dataset(rows, tmp_path / "a", vp, progress=False)
    with pytest.warns(UserWarning, match="1 case"):
        r = preprocess_dataset(rows, tmp_path / "b", vp, on_error="skip", progress=False)
    assert (r.n_processed, r.n_failed) == (2, 1) and r.failures[0][0] == "gone"
    cache = open_cache(tmp_path / "b", vp)
    assert cache.has("weird/id") and case_filename("weird/id").endswith(".npy") and "/" not in case_filename("weird/id")
    assert sorted(cache.ids()) == ["good", "weird/id"]


def test_cli_preprocess_with_preset(data_dir, tmp_path, capsys):
    from dia_llama.cli import main
    from dia_llama.presets import preset_volume_processor

    out = tmp_path / "cli"
    assert main(["preprocess", str(data_dir), "--output", str(out), "--preset", "tiny", "--no-progress"]) == 0
    assert f"{N_CASES} cases" in capsys.readouterr().out
    cache = open_cache(out, preset_volume_processor("tiny"))
    assert tuple(cache.get("case0").shape) == (1, 64, 64, 32)
    assert main(["preprocess", str(tmp_path / "nothing"), "--output", str(out), "--preset", "tiny"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("dia-llama: error: ") and "nothing" in error and error.count("\n") == 1


# ------------------------------------------------------------------------------------------------ sharded preprocessing
def _listing(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.npy"))}


def test_two_shards_at_once_equal_one_run_and_the_cache_reads_while_it_grows(data_dir, tmp_path):
    """`dia-llama preprocess --shard 0/2` and `--shard 1/2` run at the same time into one folder; a reader polls it
    meanwhile and only ever sees complete entries; the result equals one run over everything, byte for byte."""
    import subprocess
    import sys
    import time

    from dia_llama.data.sharding import shard_of
    from dia_llama.presets import preset_volume_processor

    vp = preset_volume_processor("tiny")
    one = preprocess_dataset(data_dir, tmp_path / "one", vp, progress=False)
    sharded = tmp_path / "sharded"
    command = [sys.executable, "-m", "dia_llama", "preprocess", str(data_dir), "--output", str(sharded),
               "--preset", "tiny", "--no-progress", "--shard"]
    procs = [subprocess.Popen(command + [f"{i}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    seen = set()
    while any(p.poll() is None for p in procs):
        if (sharded / processor_fingerprint(vp) / "processor.json").is_file():
            cache = open_cache(sharded, vp)
            for case_id in cache.ids():  # listed ⇒ complete: the file is in place and loads with the right shape
                assert tuple(cache.get(case_id).shape) == (1, 64, 64, 32)
                seen.add(case_id)
        time.sleep(0.05)
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    expected = {i: sum(shard_of(f"case{k}", 2) == i for k in range(N_CASES)) for i in range(2)}
    for i, (out, _) in enumerate(outputs):
        assert f"(shard {i}/2): {expected[i]} cases" in out

    folder = sharded / processor_fingerprint(vp)
    assert _listing(folder) == _listing(cache_mod.Path(one.cache_dir)) and len(_listing(folder)) == N_CASES
    assert sorted(p.name for p in folder.glob("index*.jsonl")) == ["index-00000-of-00002.jsonl",
                                                                   "index-00001-of-00002.jsonl"]
    merged, single = cache_mod._read_index(folder), cache_mod._read_index(cache_mod.Path(one.cache_dir))
    assert merged == single and sorted(open_cache(sharded, vp).ids()) == [f"case{k}" for k in range(N_CASES)]
    assert seen <= set(merged)

    # a later full run finds everything cached and merges the shard indexes into index.jsonl
    full = preprocess_dataset(data_dir, sharded, vp, progress=False)
    assert (full.n_cached, full.n_processed) == (N_CASES, 0)
    assert [p.name for p in folder.glob("index*.jsonl")] == ["index.jsonl"] and cache_mod._read_index(folder) == single


def test_shard_locks_index_lines_and_environment(data_dir, tmp_path, monkeypatch):
    from dia_llama.data.sharding import parse_shard, shard_from_environment

    vp = DiaLlamaVolumeProcessor(**CONFIG)
    folder = tmp_path / "c" / processor_fingerprint(vp)
    folder.mkdir(parents=True)
    with cache_mod._CacheLock(folder, (0, 2)), cache_mod._CacheLock(folder, (1, 2)):  # shards run together
        with pytest.raises(CacheError, match="shard 0/2"):
            cache_mod._CacheLock(folder, (0, 2)).__enter__()
        with pytest.raises(CacheError, match="another dia-llama preprocess is writing"):
            preprocess_dataset(data_dir, tmp_path / "c", vp, progress=False)  # a full run waits for the shards
    with cache_mod._CacheLock(folder):
        with pytest.raises(CacheError, match="of the whole data set is writing this cache"):
            cache_mod._CacheLock(folder, (1, 2)).__enter__()

    # a reader sees complete lines only: a line being written (no newline yet, invalid JSON) does not count
    first = preprocess_dataset(data_dir, tmp_path / "c", vp, shard="0/2", progress=False)
    index = folder / "index-00000-of-00002.jsonl"
    with open(index, "a") as fh:
        fh.write('{"id": "case2", "file": "case2.npy", "volu')
    assert sorted(open_cache(tmp_path / "c", vp).ids()) == sorted(cache_mod._read_index(folder))
    assert "case2" not in open_cache(tmp_path / "c", vp).ids() and first.n_processed == 3

    with pytest.raises(ValueError, match="i/n"):
        parse_shard("1-2")
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("2/2")
    assert shard_from_environment({"RANK": "3", "WORLD_SIZE": "4"}) == (3, 4)
    assert shard_from_environment({"WORLD_SIZE": "1"}) is None and shard_from_environment({}) is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under `accelerate launch`: the CLI takes its shard from the launcher
    from dia_llama.cli import main

    assert main(["preprocess", str(data_dir), "--output", str(tmp_path / "env"), "--model", str(_save(vp, tmp_path)),
                 "--no-progress"]) == 0
    assert [p.name for p in (tmp_path / "env" / processor_fingerprint(vp)).glob("index*")] == [
        "index-00001-of-00002.jsonl"]


def _save(vp, tmp_path):
    folder = tmp_path / "processor"
    vp.save_pretrained(folder)
    return folder


def test_preprocess_a_data_set_at_a_url_fetches_one_volume_at_a_time(data_dir, tmp_path):
    """A manifest at an fsspec URL (an in-memory filesystem standing in for hf://datasets/...) is streamed: the
    metadata first, then each volume by the worker processing it; the cache equals the local one."""
    import fsspec

    memory = fsspec.filesystem("memory")
    for path in data_dir.rglob("*"):
        if path.is_file():
            memory.pipe(f"/remote-data/{path.relative_to(data_dir).as_posix()}", path.read_bytes())
    vp = DiaLlamaVolumeProcessor(**CONFIG)
    local = preprocess_dataset(data_dir, tmp_path / "local", vp, progress=False)
    remote = preprocess_dataset("memory://remote-data", tmp_path / "remote", vp, progress=False, shard="1/2")
    local_files = _listing(cache_mod.Path(local.cache_dir))
    assert remote.n_processed == 3 and _listing(cache_mod.Path(remote.cache_dir)) == {
        name: data for name, data in local_files.items() if name in {"case2.npy", "case3.npy", "case5.npy"}}
