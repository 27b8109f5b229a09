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
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Mapping, Optional

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


Ownership = Callable[[Path], Optional[str]]
"""Says why an existing, non-empty directory is *not* one of our artifacts (None: it is, replace it)."""


def check_replaceable(path: os.PathLike | str, owned: Ownership) -> None:
    """UsageError unless ``path`` is absent, an empty directory, or a directory ``owned`` accepts.

    Call it before long work, so a refusal comes first; :func:`atomic_directory` checks again.
    """
    dest = Path(path)
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir():
        raise UsageError(f"{dest} exists and is not a directory; choose another path")
    if not any(dest.iterdir()):
        return
    why = owned(dest)
    if why is not None:
        raise UsageError(f"refusing to replace {dest}: {why}; choose another path or empty it yourself")


@contextlib.contextmanager
def atomic_directory(path: os.PathLike | str, *, owned: Ownership) -> Iterator[Path]:
    """Build a directory aside and swap it in when complete.

    An existing directory is replaced only if it is empty or ``owned`` recognises it as one of
    our own earlier artifacts holding nothing else (see :func:`unlisted_entry`); anything else
    is the user's and we refuse to touch it.
    """
    dest = Path(path)
    check_replaceable(dest, owned)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield staging
        if dest.exists():
            check_replaceable(dest, owned)  # it may have changed while we worked
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


def unlisted_entry(directory: Path, listed: Iterable[str]) -> Optional[str]:
    """The first entry under ``directory`` that is neither a listed file nor a folder leading to one.

    ``listed`` holds ``/``-separated paths relative to ``directory``.  Symbolic links are never
    followed: a link is an entry like any other, and must itself be listed.
    """
    files = {PurePosixPath(p) for p in listed}
    folders = {parent for f in files for parent in f.parents}
    for top, dirnames, filenames in os.walk(directory):  # os.walk does not follow links to folders
        rel_top = PurePosixPath(Path(top).relative_to(directory).as_posix())
        for name in sorted(dirnames):
            if rel_top / name not in folders or (Path(top) / name).is_symlink():
                return str(rel_top / name)
        for name in sorted(filenames):
            if rel_top / name not in files:
                return str(rel_top / name)
    return None


def check_output_paths(outputs: Mapping[str, os.PathLike | str | None], inputs: Iterable[os.PathLike | str | None] = ()) -> None:
    """One-line UsageError when two artifacts would land on one path, or an artifact on an input.

    ``outputs`` maps each flag (``--report``) to the path it writes (None: not asked for);
    ``inputs`` are the user's files and folders.  Paths are compared resolved, so ``./r.json``,
    ``r.json`` and a symbolic link to it are one path.  Also refused: an artifact inside another
    one (``--save-outputs out --report out/r.json``: the folder swap would lose the report) and
    an artifact that contains an input (``--save-outputs d`` with ``d/model.onnx``).
    """
    given = [(flag, Path(p), resolved(p)) for flag, p in outputs.items() if p is not None]
    for i, (flag, raw, path) in enumerate(given):
        for other_flag, other_raw, other in given[:i]:
            if path == other:
                raise UsageError(f"{other_flag} and {flag} both write to {raw}; give each its own path")
            if other in path.parents or path in other.parents:
                inner, outer = ((flag, raw), (other_flag, other_raw)) if other in path.parents else ((other_flag, other_raw), (flag, raw))
                raise UsageError(f"{inner[0]} {inner[1]} is inside {outer[0]} {outer[1]}; give each its own path")
        for p in inputs:
            if p is None:
                continue
            source = resolved(p)
            if source == path:
                raise UsageError(f"refusing to write {flag} {raw}: it is one of the inputs")
            if path in source.parents:
                raise UsageError(f"refusing to write {flag} {raw}: it holds the input {p}")


def file_size(path: os.PathLike | str | None) -> int | None:
    """Size in bytes, or None when there is no such file (reports show what they can)."""
    if path is None:
        return None
    try:
        return Path(path).stat().st_size
    except OSError:
        return None
