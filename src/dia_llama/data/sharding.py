"""Which cases one machine (or process) preprocesses when the work is split: `--shard i/n`, or the rank and world
size that `accelerate launch` / `torchrun` set (`RANK`, `WORLD_SIZE`).

A case belongs to shard ``int(sha1(id)[:8], 16) % n``: a function of the case id alone, so every machine agrees
without seeing the others' lists or the same row order, and the shards are balanced in expectation.
"""

from __future__ import annotations

import hashlib
import os
import re


def parse_shard(value) -> tuple[int, int] | None:
    """`"i/n"`, `(i, n)` or None → (i, n) with 0 <= i < n; ValueError naming the problem otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
        if not match:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4: the first of 4 shards), got {value!r}")
        value = (int(match.group(1)), int(match.group(2)))
    index, count = (int(v) for v in value)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_from_environment(environ=None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when launched by accelerate / torchrun on more than one process, else None."""
    environ = os.environ if environ is None else environ
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        rank = int(environ.get("RANK", "0"))
    except ValueError:
        return None
    return parse_shard((rank, world)) if world > 1 else None


def shard_of(case_id, count: int) -> int:
    """The shard (0 … count-1) a case id belongs to."""
    return int(hashlib.sha1(str(case_id).encode("utf-8")).hexdigest()[:8], 16) % count


def shard_name(shard: tuple[int, int] | None) -> str:
    """`"00002-of-00004"` (file-name part), or "" for the whole data set."""
    return "" if shard is None else f"{shard[0]:05d}-of-{shard[1]:05d}"


__all__ = ["parse_shard", "shard_from_environment", "shard_name", "shard_of"]
