"""Atomic file and directory writes, and guards against overwriting what the user gave us.

Every artifact (reports, saved outputs, engines, extracted models) is written under a
temporary name in the destination's folder and renamed into place, so an interrupted run
never leaves a half-written file where a good one was.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from trtdebug.errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: os.PathLike | str, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: os.PathLike | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: os.PathLike | str, *, marker: str) -> Iterator[Path]:
    """Build a directory aside and swap it in when complete.

    An existing directory is replaced only if it holds ``marker`` (i.e. it is one of our own
    earlier artifacts) or is empty; anything else is the user's and we refuse to touch it.
    """
    dest = Path(path)
    if dest.exists():
        if not dest.is_dir():
            raise UsageError(f"{dest} exists and is not a directory; choose another path")
        if any(dest.iterdir()) and not (dest / marker).exists():
            raise UsageError(f"{dest} exists and is not a trtdebug output directory; refusing to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield staging
        if dest.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, trash / "old")
            os.replace(staging, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def resolved(path: os.PathLike | str) -> Path:
    """``Path.resolve()`` that survives symlink loops (RuntimeError before Python 3.13): then the absolute path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def refuse_to_overwrite_inputs(outputs: Iterable[os.PathLike | str | None], inputs: Iterable[os.PathLike | str | None]) -> None:
    """Raise if an output path would overwrite one of the user's input files."""
    ins = {resolved(p) for p in inputs if p}
    for out in outputs:
        if out and resolved(out) in ins:
            raise UsageError(f"refusing to write {out}: it is one of the inputs")


def file_size(path: os.PathLike | str | None) -> int | None:
    """Size in bytes, or None when there is no such file (reports show what they can)."""
    if path is None:
        return None
    try:
        return Path(path).stat().st_size
    except OSError:
        return None
