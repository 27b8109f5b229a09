"""Timing caches: load from a file, reuse in memory across the builds of one command, save merged.

A timing cache records which tactic won for each layer configuration, so a later build of
the same (or a similar) network skips most of the timing.  The file is written atomically
and merged with whatever is on disk at save time, so two runs sharing a cache never lose
each other's entries.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from trtdebug.runners.tensorrt import compat
from trtdebug.util.files import write_bytes_atomic

log = logging.getLogger(__name__)


def read_cache_file(path: Optional[Path]) -> bytes:
    if path is None:
        return b""
    p = Path(path)
    if not p.is_file():
        return b""
    try:
        return p.read_bytes()
    except OSError as exc:
        log.warning("cannot read timing cache %s (%s); starting a fresh one", p, exc)
        return b""


def save_merged(config, features: compat.Features, path: Path, data: bytes) -> bool:
    """Merge ``data`` (a serialized cache) with the file's current content and write it atomically.

    ``config`` is any IBuilderConfig (only its cache factory is used).  Returns True if written.
    """
    if not data:
        return False
    merged = data
    on_disk = read_cache_file(path)
    if on_disk and on_disk != data and features.timing_cache:
        try:
            ours = config.create_timing_cache(data)
            theirs = config.create_timing_cache(on_disk)
            if ours is not None and theirs is not None and ours.combine(theirs, True):
                merged = bytes(ours.serialize())
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be merged is replaced
            log.warning("could not merge with the existing timing cache %s (%s); overwriting it", path, exc)
    write_bytes_atomic(path, merged)
    return True
