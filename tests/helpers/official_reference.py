"""Deterministic tensors for the official-code reference fixtures (`tests/fixtures/official/`).

The fixture script fills the research code's modules with these values and stores only their outputs; the tests
rebuild the same weights from (name, shape, offset, scale) and compare our converted modules with those outputs.
Values come from integer hashing (splitmix64 of the element index, seeded by the tensor's name), not from a random
stream, so numpy 1.x and 2.x, any platform and any torch give the same float32 bits.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def uniform(name: str, shape) -> np.ndarray:
    """float32 values in [-1, 1), exactly reproducible from `name` and `shape` (24 random bits each)."""
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape)) if shape else 1
    seed = np.uint64(int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little"))
    with np.errstate(over="ignore"):
        bits = _splitmix64(np.arange(count, dtype=np.uint64) + seed) >> np.uint64(40)  # top 24 bits
    values = (bits.astype(np.float64) - 2.0**23) / 2.0**23
    return values.astype(np.float32).reshape(shape)


def parameter(name: str, shape, offset: float, scale: float) -> np.ndarray:
    """offset + scale · uniform(name, shape), computed in float64 and rounded once to float32."""
    values = offset + scale * uniform(name, shape).astype(np.float64)
    return np.asarray(values, dtype=np.float32).reshape(tuple(int(s) for s in shape))  # 0-d stays an array


def volume(name: str, shape) -> np.ndarray:
    """An input volume in [0, 1) (the official code's per-volume min-max range)."""
    return parameter(name, shape, 0.5, 0.5)
