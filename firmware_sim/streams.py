"""Random streams keyed by name, not by position.

Every device, site and fault process draws from its own generator, derived from the
fleet seed and stable names (ids), so adding, removing or reordering devices never
changes the noise another device sees, and a faulty device and its healthy twin (same
id, same seed) see the same weather and the same sensor noise.
"""

from __future__ import annotations

import hashlib

import numpy as np


def rng_stream(seed: int, *names: str) -> np.random.Generator:
    """A generator for ``(seed, *names)``; the same arguments give the same stream."""
    digest = hashlib.sha256("\x1f".join(names).encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(np.random.SeedSequence([seed % (1 << 64), *words]))
