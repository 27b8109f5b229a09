"""One timing cache per process, kept on disk between runs.

A timing cache records which tactic won for each layer configuration, so a later build of
the same (or a similar) network skips most of the timing.  A search builds hundreds of
candidate engines of one model: every build in the process attaches the *same*
``ITimingCache`` object (TensorRT adds each build's measurements to it), and by default the
cache is loaded from, and merged back into, a file in the user's cache directory::

    $XDG_CACHE_HOME/trtdebug/timing-<module>-<version>-<gpu>.cache    (default ~/.cache/trtdebug)

one file per TensorRT module (``tensorrt`` / ``tensorrt_rtx``), version and GPU model
(name and compute capability), because a cache is only valid there.  ``--timing-cache FILE``
replaces that file with the user's; ``TrtBuildConfig(persistent_cache=False)`` keeps the cache
in memory only.

Saving merges with the file's current content under an exclusive ``fcntl.flock`` (on a lock
file in the cache directory, never beside the user's file) and replaces the file atomically,
so two processes finishing at once keep both sets of entries.  A cache file that cannot be
read (corrupt, another TensorRT) is a one-line warning and is ignored, never a failure; the
default file is then replaced, a file the user named is left as it is.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

from trtdebug.util.files import write_bytes_atomic

log = logging.getLogger(__name__)


# -- where ---------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/trtdebug``, else ``~/.cache/trtdebug`` (read when called, not at import)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "trtdebug"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+]+", "-", text).strip("-") or "unknown"


def default_cache_path(trt, gpu: Optional[str] = None) -> Path:
    """The per-module, per-version, per-GPU cache file for ``trt`` (``gpu``: see :func:`gpu_identity`)."""
    module = getattr(trt, "__name__", "tensorrt").split(".")[0]
    version = str(getattr(trt, "__version__", "unknown"))
    return cache_dir() / f"timing-{_slug(module)}-{_slug(version)}-{_slug(gpu or gpu_identity())}.cache"


def gpu_identity() -> str:
    """``NVIDIA-H200-sm90``: the current device's name and compute capability (``unknown-gpu`` if CUDA cannot say).

    Name and compute capability rather than the UUID: identical GPUs share measurements.
    """
    try:
        from trtdebug.runners.tensorrt.cuda import get_cuda

        cuda = get_cuda()
        device = cuda.check(cuda.rt.cudaGetDevice(), "cudaGetDevice")
        props = cuda.check(cuda.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return f"{name}-sm{int(props.major)}{int(props.minor)}"
    except Exception as exc:  # noqa: BLE001 - a cache name is never worth a failure
        log.debug("cannot identify the GPU for the timing cache name: %s", exc)
        return "unknown-gpu"


def cache_path_for(trt, config) -> Optional[Path]:
    """The file a build configuration's cache lives in: ``--timing-cache``, the default file, or none."""
    if config.timing_cache is not None:
        return Path(config.timing_cache)
    if getattr(config, "persistent_cache", True):
        return default_cache_path(trt)
    return None


# -- locking ------------------------------------------------------------------------------------

@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock serializing read-merge-write of ``path`` across processes.

    The lock file lives in the cache directory, named by a hash of ``path``, so a user's
    directory never gains a stray file.  Where locking is impossible (no ``fcntl``, an
    unwritable cache directory) the merge still happens, unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    lock_path = cache_dir() / "locks" / f"{digest}.lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        log.debug("timing cache saved without a lock (%s)", exc)
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- the process-wide cache ---------------------------------------------------------------------

def _read(path: Optional[Path]) -> bytes:
    if path is None or not path.is_file():
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        log.warning("cannot read the timing cache %s (%s); starting a fresh one", path, exc)
        return b""


class TimingCache:
    """The one ``ITimingCache`` of this process for one file (or for none: memory only).

    TensorRT creates timing caches through a builder configuration, so the object is made at
    the first :meth:`attach`; the file is read at construction.  ``loaded`` says whether the
    next build starts from earlier measurements (the file's, or an earlier build's in this
    process).  ``default`` marks trtdebug's own file, which may be replaced when unreadable.
    """

    def __init__(self, path: Optional[Path], *, default: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.default = default
        self._initial = _read(self.path)
        self.loaded = bool(self._initial)
        self.cache = None
        self._factory: Optional[Callable[[bytes], object]] = None
        self._owner = None  # the configuration that created the cache, kept alive with it
        self._saved: bytes = self._initial
        self._unreadable_file = False

    # -- attaching ------------------------------------------------------------------------
    def attach(self, config) -> bool:
        """Attach the shared cache to ``config`` (an IBuilderConfig); False where TensorRT has none."""
        if not hasattr(config, "create_timing_cache") or not hasattr(config, "set_timing_cache"):
            return False
        if self.cache is None:
            self._owner, self._factory = config, config.create_timing_cache
            self.cache = self._deserialize(self._initial, what="read")
            if self.cache is None:
                self._unreadable_file = bool(self._initial)
                self.loaded = False
                self.cache = config.create_timing_cache(b"")
            self._initial = b""
        else:
            self.loaded = True  # an earlier build of this process filled it
        if config.set_timing_cache(self.cache, False) is False:  # positional: keyword names differ by release
            log.warning("the timing cache %s does not match this GPU or TensorRT; starting a fresh one",
                        self.path or "in memory")
            self.cache = config.create_timing_cache(b"")
            self.loaded = False
            config.set_timing_cache(self.cache, False)
        return True

    def _deserialize(self, data: bytes, *, what: str):
        """An ITimingCache from bytes, or None (with a one-line warning) when TensorRT cannot read them."""
        if not data:
            return None
        try:
            cache = self._factory(data)
        except Exception as exc:  # noqa: BLE001 - TensorRT raises or returns None on a bad blob
            cache, reason = None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        else:
            reason = "TensorRT could not deserialize it"
            # TensorRT 8.6 accepts garbage and returns an empty cache (seen on the H200): call that unreadable too
            if cache is not None and bytes(cache.serialize()) == bytes(self._factory(b"").serialize()):
                cache, reason = None, "TensorRT read nothing from it"
        if cache is None:
            action = "it will be replaced" if self.default else "it is ignored and left unchanged"
            log.warning("the timing cache %s could not be %s (corrupt, or from another TensorRT: %s); %s",
                        self.path, what, reason, action)
        return cache

    # -- saving -----------------------------------------------------------------------------
    def serialize(self) -> bytes:
        return bytes(self.cache.serialize()) if self.cache is not None else b""

    def save(self) -> bool:
        """Merge the file's current entries into the cache and write it back; True if written."""
        if self.path is None or self.cache is None:
            return False
        try:
            with file_lock(self.path):
                on_disk = _read(self.path)
                if on_disk and on_disk != self._saved:  # another process wrote since we read or saved
                    theirs = self._deserialize(on_disk, what="merged")
                    if theirs is None and not self.default:
                        return False
                    if theirs is not None and not self.cache.combine(theirs, True):
                        log.warning("could not merge the timing cache %s; its entries are replaced by this run's",
                                    self.path)
                elif self._unreadable_file and not self.default:
                    return False
                data = self.serialize()
                if not data or data == on_disk:
                    return False
                write_bytes_atomic(self.path, data)
                self._saved, self.loaded = data, True
                self._unreadable_file = False
                return True
        except OSError as exc:
            log.warning("could not save the timing cache %s (%s)", self.path, exc)
            return False


# module -> file -> cache; weak, so a fake TensorRT module in a test takes its caches with it
_PROCESS_CACHES: "weakref.WeakKeyDictionary[object, Dict[Optional[str], TimingCache]]" = weakref.WeakKeyDictionary()


def shared_cache(trt, config) -> TimingCache:
    """The process's cache for this TensorRT module and the file ``config`` (TrtBuildConfig) names.

    Every builder in the process that names the same file (or none) gets the same object.
    """
    path = cache_path_for(trt, config)
    key = str(path.resolve()) if path is not None else None
    caches = _PROCESS_CACHES.setdefault(trt, {})
    if key not in caches:
        caches[key] = TimingCache(path, default=config.timing_cache is None and path is not None)
    return caches[key]
