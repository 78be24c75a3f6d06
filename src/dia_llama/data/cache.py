"""Preprocessing cache: run the volume processor once per case and store the fixed-size result.

Layout of ``OUTPUT_DIR/<fingerprint>/``:

* ``<id>.npy``: the processed volume, channel 0 only, float16, shape (H, W, D) = ``volume_size``
  (values in [0, 1], so float16 is exact to ~5e-4); :meth:`CachedVolumes.get` returns float32 (C, H, W, D)
  with the channel replicated ``num_channels`` times, as the processor does. Ids that are not plain file names
  are stored as ``<sanitised>-<sha1[:10]>.npy``.
* ``processor.json``: the processor configuration and fingerprint; ``index.jsonl``: one line per cached case
  (id, file, volume path, source size/mtime).

``<fingerprint>`` = first 16 hex digits of the sha256 of ``json.dumps(config, sort_keys=True)``, where config is
``volume_processor.to_dict()`` without keys that do not change the stored array (``num_channels``,
``image_processor_type``, ``processor_class``, ``auto_map``, private keys) plus the cache format version. A changed
processor therefore reads from a different folder, and :class:`CachedVolumes` refuses a cache made for another one.

Files are written atomically (temporary file + ``os.replace``): a killed run leaves no partial ``.npy``, and the
next run skips every case whose ``.npy`` loads with the right shape (and whose source file's size/mtime did not
change), so it resumes where it stopped.

Splitting the work (``shard=(i, n)``, ``dia-llama preprocess --shard i/n``, or the rank / world size of
``accelerate launch``): each shard processes the cases whose id hashes to it (:mod:`.sharding`) into the same
folder, with its own index ``index-<i>-of-<n>.jsonl`` and its own lock; the shards of one split run at the same time
(on several machines over a shared file system with POSIX locks, or into separate folders copied together after:
every file name is fixed by the case id and the shard). A run over the whole data set takes the folder's lock
exclusively (so it never runs beside shards) and merges every index into ``index.jsonl``. Readers
(:class:`CachedVolumes`) may read while the cache grows: a case is listed once its ``.npy`` is in place and its
index line complete, so they see complete entries only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import sys
import time
import uuid
import warnings
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .datasets import load_ct_report_dataset, load_example_volume
from .sharding import parse_shard, shard_name, shard_of

__all__ = [
    "CACHE_FORMAT",
    "CacheError",
    "CacheMismatchError",
    "CacheMissError",
    "CacheReport",
    "CachedVolumes",
    "open_cache",
    "preprocess_dataset",
    "processor_fingerprint",
    "resolve_volume_processor",
    "case_filename",
]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
STORAGE = "float16 (H, W, D), channel 0; replicated to num_channels as float32 at load"
_IRRELEVANT_KEYS = {"num_channels", "image_processor_type", "processor_class", "auto_map"}
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")
_WINDOW_PER_WORKER = 4


class CacheError(ValueError):
    """The cache cannot be written or read; the message names the case id / path and what to do."""


class CacheMismatchError(CacheError):
    """The cache was built with a different volume processor configuration."""


class CacheMissError(CacheError, KeyError):
    """A case id is not in the cache."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class CacheReport:
    """Outcome of :func:`preprocess_dataset`. ``failures``: (case id, path, reason) of cases not cached."""

    cache_dir: str
    fingerprint: str
    n_cases: int = 0  # unique cases asked for
    n_cached: int = 0  # already in the cache (reused)
    n_processed: int = 0  # processed by this run
    n_failed: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    shard: tuple[int, int] | None = None  # (i, n): this run processed shard i of n
    n_skipped_on_load: int = 0  # dropped by the data loader (on_error="skip")
    load_problems: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        of = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        text = (f"{self.cache_dir}{of}: {self.n_cases} cases, {self.n_cached} already cached, {self.n_processed} "
                f"processed, {self.n_failed} failed in {self.seconds:.1f} s")
        if self.n_skipped_on_load:
            text += f"; {self.n_skipped_on_load} bad cases skipped when loading the data"
        return text


# ----------------------------------------------------------------------------------------------- processor, names
def resolve_volume_processor(volume_processor):
    """A DiaLlamaVolumeProcessor from itself, a DiaLlamaProcessor, or a model folder / Hub id."""
    if isinstance(volume_processor, (str, os.PathLike)):
        from ..image_processing_dia_llama import DiaLlamaVolumeProcessor

        return DiaLlamaVolumeProcessor.from_pretrained(str(volume_processor))
    if hasattr(volume_processor, "image_processor") and not hasattr(volume_processor, "process_volume"):
        return volume_processor.image_processor
    return volume_processor


def _fingerprint_config(volume_processor) -> dict:
    config = {k: v for k, v in volume_processor.to_dict().items()
              if k not in _IRRELEVANT_KEYS and not k.startswith("_")}
    config["cache_format"] = CACHE_FORMAT
    return config


def processor_fingerprint(volume_processor) -> str:
    """16 hex digits identifying what the processor stores (see the module docstring)."""
    config = _fingerprint_config(resolve_volume_processor(volume_processor))
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode("utf-8")).hexdigest()[:16]


def case_filename(case_id: str) -> str:
    """File name of a case: ``<id>.npy`` for plain ids, else a sanitised name with a hash suffix."""
    case_id = str(case_id)
    if _SAFE_ID.fullmatch(case_id) and not case_id.endswith("."):
        return f"{case_id}.npy"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip("._")[:100] or "case"
    return f"{safe}-{hashlib.sha1(case_id.encode('utf-8')).hexdigest()[:10]}.npy"


def _source_signature(path: str) -> list[int] | None:
    """[size, mtime_ns] of a file, [n_files, newest mtime_ns] of a folder; None if unreadable."""
    try:
        p = Path(path)
        if p.is_dir():
            stats = [f.stat() for f in p.iterdir() if f.is_file()]
            return [len(stats), max((s.st_mtime_ns for s in stats), default=0)]
        st = p.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


def _valid_npy(path: Path, shape) -> bool:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        ok = tuple(arr.shape) == tuple(shape) and arr.dtype == np.float16
        del arr
        return ok
    except Exception:
        return False


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ processing
def _process_case(volume_processor, task) -> tuple[str, str | None]:
    """Load, process and store one case. Returns (id, None) or (id, reason) on a failure."""
    case_id, volume, spacing, rescale, out_path = task
    try:
        vol = load_example_volume({"volume": volume, "spacing": spacing, "rescale": rescale})
        x = volume_processor.process_volume(vol)  # (C, H, W, D) float32
        arr = np.ascontiguousarray(x[0].detach().cpu().numpy(), dtype=np.float16)  # (H, W, D)
        _atomic_save(Path(out_path), arr)
        return case_id, None
    except Exception as exc:  # reported with the case id by the caller (raise or count)
        return case_id, f"{type(exc).__name__}: {exc}"


_WORKER_PROCESSOR = None


def _init_worker(cls, config) -> None:
    global _WORKER_PROCESSOR
    import torch

    torch.set_num_threads(1)  # one thread per worker process: the workers are the parallelism
    if cls is None:
        from ..image_processing_dia_llama import DiaLlamaVolumeProcessor as cls
    _WORKER_PROCESSOR = cls.from_dict(config)


def _worker_task(task):
    return _process_case(_WORKER_PROCESSOR, task)


def _collect_rows(data, format: str, on_error: str):
    """(rows: dicts with id/volume/spacing/rescale, load report or None) from a path, DatasetDict, Dataset or list."""
    load_report = None
    if isinstance(data, (str, os.PathLike)):
        # a URL (hf://datasets/..., s3://...): the streaming loader reads the metadata only; each worker then fetches
        # just the volumes of its own cases (with --shard, one machine's share)
        streaming = "://" in str(data) and not str(data).startswith("file://")
        data, load_report = load_ct_report_dataset(data, format=format, on_error=on_error, return_report=True,
                                                   streaming=streaming)
    if isinstance(data, dict):  # DatasetDict
        splits = list(data.values())
    else:
        splits = [data]
    from .features import volume_path

    rows = []
    for split in splits:
        for row in split:
            rows.append({**{k: row.get(k) for k in ("id", "spacing", "rescale")}, "volume": volume_path(row["volume"])})
    return rows, load_report


def preprocess_dataset(data, output_dir, volume_processor, num_workers: int = 1, on_error: str = "raise",
                       progress: bool = True, format: str = "auto", shard=None) -> CacheReport:
    """Process every case of ``data`` once into ``output_dir/<fingerprint>/`` (see the module docstring).

    ``data``: a data set path or fsspec URL (any :func:`load_ct_report_dataset` format; a URL is streamed: volumes
    are fetched one at a time by the worker that processes them), a (Iterable)DatasetDict, a Dataset or a list of
    rows with ``id`` and ``volume`` (optional ``spacing``/``rescale``). ``volume_processor``: a
    DiaLlamaVolumeProcessor, a DiaLlamaProcessor, or a model folder to load it from. Cases already cached are
    reused; ``num_workers`` > 1 processes in that many worker processes (identical output). ``on_error``: "raise"
    stops at the first failing case (the finished ones stay cached) with a CacheError naming it; "skip" counts
    and reports failures. ``shard``: ``(i, n)`` or ``"i/n"``: only the cases of shard i of n (see the module
    docstring; the shards of one split may run at the same time into the same folder). Returns a :class:`CacheReport`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    shard = parse_shard(shard)
    start = time.perf_counter()
    vp = resolve_volume_processor(volume_processor)
    fp = processor_fingerprint(vp)
    cache_dir = Path(output_dir) / fp
    cache_dir.mkdir(parents=True, exist_ok=True)
    report = CacheReport(cache_dir=str(cache_dir), fingerprint=fp, shard=shard)
    rows, load_report = _collect_rows(data, format, on_error)
    if shard is not None:
        rows = [row for row in rows if shard_of(row["id"], shard[1]) == shard[0]]
    if load_report is not None:
        report.n_skipped_on_load, report.load_problems = load_report.n_skipped, list(load_report.problems)

    with _CacheLock(cache_dir, shard):
        _remove_stale_temporaries(cache_dir, None if shard is None else
                                  {case_filename(r["id"]) for r in rows} | {_index_name(shard)})
        _write_processor_json(cache_dir, vp, fp)
        index = _read_index(cache_dir)  # every index: a case another shard or run cached counts as cached
        index_path = cache_dir / _index_name(shard)
        shape = tuple(int(s) for s in vp.volume_size)

        tasks, by_id = [], {}
        for row in rows:
            case_id = str(row["id"])
            if case_id in by_id:
                if by_id[case_id] != row["volume"]:
                    raise CacheError(f"case id {case_id!r} is used for two volumes: {by_id[case_id]} and "
                                     f"{row['volume']}; ids must be unique")
                continue
            by_id[case_id] = row["volume"]
            out = cache_dir / case_filename(case_id)
            entry = index.get(case_id)
            if _valid_npy(out, shape) and (entry is None or entry.get("signature") == _source_signature(row["volume"])):
                report.n_cached += 1
                continue
            tasks.append((case_id, row["volume"], row.get("spacing"), row.get("rescale"), str(out)))
        report.n_cases = len(by_id)

        from tqdm.auto import tqdm

        volumes = {t[0]: t[1] for t in tasks}
        with open(index_path, "a", encoding="utf-8") as index_fh, \
                tqdm(total=len(tasks), desc=f"preprocess ({report.n_cached} cached)", unit="case",
                     disable=not progress) as bar:

            def handle(case_id: str, reason: str | None) -> None:
                bar.update(1)
                if reason is None:
                    report.n_processed += 1
                    entry = {"id": case_id, "file": case_filename(case_id), "volume": volumes[case_id],
                             "signature": _source_signature(volumes[case_id])}
                    index[case_id] = entry
                    index_fh.write(json.dumps(entry) + "\n")
                    index_fh.flush()
                    return
                report.n_failed += 1
                report.failures.append((case_id, volumes[case_id], reason))
                if on_error == "raise":
                    raise CacheError(f"case {case_id} ({volumes[case_id]}): {reason}. The {report.n_processed} "
                                     "cases finished so far are cached; fix or drop this case (--on-error skip) "
                                     "and re-run to resume.")

            if num_workers <= 1 or len(tasks) <= 1:
                for task in tasks:
                    handle(*_process_case(vp, task))
            else:
                _run_pool(vp, tasks, int(num_workers), handle)
        _compact_index(cache_dir, index, shard)

    report.seconds = time.perf_counter() - start
    if report.failures:
        listed = "; ".join(f"{i} ({p}): {r}" for i, p, r in report.failures[:5])
        msg = f"preprocess: {report.n_failed} case(s) failed and were not cached: {listed}"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return report


def _run_pool(vp, tasks, num_workers: int, handle) -> None:
    """Process tasks in worker processes (each builds its own processor from the config), a bounded window ahead."""
    from ..image_processing_dia_llama import DiaLlamaVolumeProcessor

    cls = None if type(vp) is DiaLlamaVolumeProcessor else type(vp)  # subclasses must be importable by workers
    ctx = multiprocessing.get_context(_start_method())
    todo = iter(tasks)
    pending = set()
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(cls, vp.to_dict())) as ex:
        try:
            for task in todo:
                pending.add(ex.submit(_worker_task, task))
                if len(pending) >= num_workers * _WINDOW_PER_WORKER:
                    break
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        result = fut.result()
                    except BrokenExecutor as exc:
                        raise CacheError("a preprocess worker process died (out of memory?); the finished cases are "
                                         "cached: re-run to resume, with fewer --num-workers") from exc
                    handle(*result)
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.add(ex.submit(_worker_task, nxt))
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _start_method() -> str:
    """"fork" on Linux (instant workers, as torch's DataLoader; workers run torch single-threaded), else "spawn"."""
    methods = multiprocessing.get_all_start_methods()
    return "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"


def _write_processor_json(cache_dir: Path, vp, fp: str) -> None:
    path = cache_dir / "processor.json"
    content = json.dumps({"fingerprint": fp, "cache_format": CACHE_FORMAT, "storage": STORAGE,
                          "fingerprint_config": _fingerprint_config(vp), "volume_processor": vp.to_dict()},
                         indent=2, sort_keys=True, default=list) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != content:
        _atomic_write_text(path, content)


def _index_name(shard: tuple[int, int] | None) -> str:
    return f"index-{shard_name(shard)}.jsonl" if shard is not None else "index.jsonl"


def _index_files(cache_dir: Path) -> list[Path]:
    """`index.jsonl` first, then the shards' `index-<i>-of-<n>.jsonl`."""
    return [p for p in [cache_dir / "index.jsonl", *sorted(cache_dir.glob("index-*-of-*.jsonl"))] if p.is_file()]


def _read_index(cache_dir: Path, files=None) -> dict[str, dict]:
    """Entries of every index file (or of `files`). Only complete lines count: a line being written, or cut by a
    kill, is not valid JSON yet and is skipped (the .npy itself decides)."""
    index = {}
    for path in _index_files(cache_dir) if files is None else files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # merged away by a full run meanwhile
            continue
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                index[str(entry["id"])] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return index


def _compact_index(cache_dir: Path, index: dict[str, dict], shard=None) -> None:
    """Rewrite this run's index without cut lines or entries whose file is gone. A full run (holding the folder's
    lock exclusively) merges every shard's index into `index.jsonl`; a shard rewrites its own file, with the entries
    of its cases."""
    keep = sorted(index) if shard is None else sorted(_read_index(cache_dir, [cache_dir / _index_name(shard)]))
    lines = [json.dumps(index[k]) for k in keep if (cache_dir / index[k]["file"]).is_file()]
    _atomic_write_text(cache_dir / _index_name(shard), "".join(line + "\n" for line in lines))
    if shard is None:
        for path in cache_dir.glob("index-*-of-*.jsonl"):
            path.unlink(missing_ok=True)


def _remove_stale_temporaries(cache_dir: Path, files: set[str] | None) -> None:
    """Delete `.<file>.<pid>.<tag>.tmp` left by a killed run: all of them (a full run: the lock excludes every
    writer), or those of this shard's `files` (other shards may be writing theirs)."""
    for stale in cache_dir.glob(".*.tmp"):
        target = stale.name[1:].rsplit(".", 3)[0]
        if files is None or target in files:
            stale.unlink(missing_ok=True)


class _CacheLock:
    """Non-blocking locks (released when the process dies): a full run holds ``<cache_dir>/.lock`` exclusively; a
    shard holds it shared (shards run together, never beside a full run) and ``.lock-<i>-of-<n>`` exclusively."""

    def __init__(self, cache_dir: Path, shard: tuple[int, int] | None = None):
        self.cache_dir, self.shard, self.handles = cache_dir, shard, []

    def _take(self, name: str, exclusive: bool, who: str) -> None:
        import fcntl

        fh = open(self.cache_dir / name, "a")
        try:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            self.__exit__()
            raise CacheError(f"{self.cache_dir}: {who} is writing this cache") from exc
        self.handles.append(fh)

    def __enter__(self):
        try:
            import fcntl  # noqa: F401
        except ImportError:  # not POSIX: no lock
            return self
        if self.shard is None:
            self._take(".lock", True, "another dia-llama preprocess")
        else:
            self._take(".lock", False, "a dia-llama preprocess of the whole data set")
            self._take(f".lock-{shard_name(self.shard)}", True,
                       f"another dia-llama preprocess of shard {self.shard[0]}/{self.shard[1]}")
        return self

    def __exit__(self, *exc):
        for fh in self.handles:
            fh.close()  # closing releases the flock
        self.handles = []


# --------------------------------------------------------------------------------------------------------- reading
class CachedVolumes:
    """Read-only access to a cache made by :func:`preprocess_dataset` for ``volume_processor``.

    ``output_dir``: the folder given to ``preprocess`` (or one ``<fingerprint>`` folder in it). Raises
    CacheMismatchError when it holds no volumes for this processor configuration.
    """

    def __init__(self, output_dir, volume_processor):
        vp = resolve_volume_processor(volume_processor)
        self.num_channels = int(vp.num_channels)
        self.volume_size = tuple(int(s) for s in vp.volume_size)
        self.fingerprint = processor_fingerprint(vp)
        root = Path(output_dir)
        own = _fingerprint_config(vp)
        if (root / "processor.json").is_file():
            stored = json.loads((root / "processor.json").read_text(encoding="utf-8"))
            if stored.get("fingerprint") != self.fingerprint:
                raise CacheMismatchError(_mismatch_message(root, self.fingerprint, own, [(root, stored)]))
            self.cache_dir = root
        else:
            self.cache_dir = root / self.fingerprint
            if not (self.cache_dir / "processor.json").is_file():
                others = []
                if root.is_dir():
                    for d in sorted(root.iterdir()):
                        if (d / "processor.json").is_file():
                            try:
                                others.append((d, json.loads((d / "processor.json").read_text(encoding="utf-8"))))
                            except ValueError:
                                continue
                raise CacheMismatchError(_mismatch_message(root, self.fingerprint, own, others))

    def path(self, case_id) -> Path:
        return self.cache_dir / case_filename(case_id)

    def has(self, case_id) -> bool:
        return self.path(case_id).is_file()

    __contains__ = has

    def get(self, case_id):
        """The cached volume: torch.FloatTensor (C, H, W, D), float32, channel replicated like the processor's."""
        import torch

        path = self.path(case_id)
        if not path.is_file():
            raise CacheMissError(f"case {case_id!r} is not in the cache {self.cache_dir} (no {path.name}); run "
                                 "`dia-llama preprocess` on the data that contains it")
        try:
            arr = np.load(path, allow_pickle=False)  # (H, W, D) float16
        except Exception as exc:
            raise CacheError(f"case {case_id!r}: cannot read {path} ({type(exc).__name__}: {exc}); delete it and "
                             "re-run `dia-llama preprocess`") from exc
        if tuple(arr.shape) != self.volume_size:
            raise CacheError(f"case {case_id!r}: {path} has shape {arr.shape}, expected {self.volume_size}")
        x = torch.from_numpy(arr.astype(np.float32))  # (H, W, D)
        return x.unsqueeze(0).expand(self.num_channels, *self.volume_size)  # (C, H, W, D)

    __getitem__ = get

    def ids(self) -> list[str]:
        """Ids of the cached cases (from the index, whose files exist)."""
        return [k for k, e in sorted(_read_index(self.cache_dir).items()) if (self.cache_dir / e["file"]).is_file()]

    def __len__(self) -> int:
        return len(self.ids())

    def __repr__(self) -> str:
        return (f"CachedVolumes({str(self.cache_dir)!r}, volume_size={self.volume_size}, "
                f"num_channels={self.num_channels})")


def _mismatch_message(root: Path, fp: str, own: dict, others) -> str:
    msg = f"{root}: no cached volumes for this volume processor (fingerprint {fp}, {own})."
    for d, stored in others[:3]:
        theirs = stored.get("fingerprint_config", {})
        diff = {k: (theirs.get(k), own.get(k)) for k in sorted(set(theirs) | set(own)) if theirs.get(k) != own.get(k)}
        msg += f"\n  {d.name} was made with a different configuration (cached vs. now: {diff})"
    if not others:
        msg += " The folder holds no cache."
    return msg + (f"\nThe processor changed since preprocessing (or the cache was never built): re-run "
                  f"`dia-llama preprocess DATA --output {root} --model MODEL_DIR` with this model's processor.")


def open_cache(output_dir, volume_processor) -> CachedVolumes:
    """:class:`CachedVolumes` for ``volume_processor`` (a processor or a model folder)."""
    return CachedVolumes(output_dir, volume_processor)


# -------------------------------------------------------------------------------------------------------------- CLI
