"""A thin wrapper over cuda-python's runtime API: device memory, copies, streams.

Both import paths are supported: ``cuda.bindings.runtime`` (cuda-python 12.6+ / 13) and
``from cuda import cudart`` (older 12.x).  Every call's error code is checked; a failure
raises :class:`~trtdebug.errors.BackendError` naming the CUDA error, and a missing driver or
GPU raises :class:`~trtdebug.errors.BackendUnavailableError`.  Nothing is imported until
:func:`get_cuda` is called.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import numpy as np

from trtdebug.errors import BackendError, BackendUnavailableError, missing_dependency

# Errors meaning "there is no usable GPU here" rather than "this call went wrong".
_UNAVAILABLE = {
    "cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorDevicesUnavailable",
    "cudaErrorSystemDriverMismatch", "cudaErrorCompatNotSupportedOnDevice", "cudaErrorInitializationError",
    "cudaErrorStubLibrary", "cudaErrorSystemNotReady",
}


def _import_runtime():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python 12.x
        return cudart
    except ImportError as exc:
        raise missing_dependency("cuda-python", "trt", what="CUDA (cuda-python)") from exc
    except OSError as exc:
        raise BackendUnavailableError(f"cuda-python is installed but the CUDA runtime cannot be loaded: {exc}") from exc


class Cuda:
    """The handful of CUDA runtime calls a TensorRT runner needs, with checked errors."""

    def __init__(self, runtime) -> None:
        self.rt = runtime

    # -- error handling ----------------------------------------------------------------------
    def _error_name(self, err) -> str:
        name = getattr(err, "name", None)
        if name:
            return str(name)
        try:
            res = self.rt.cudaGetErrorName(err)
            raw = res[1] if isinstance(res, tuple) else res
            return raw.decode() if isinstance(raw, bytes) else str(raw)
        except Exception:  # noqa: BLE001
            return str(err)

    def check(self, result, what: str):
        """Unpack ``(err, *values)``; raise on an error code."""
        if isinstance(result, tuple):
            err, values = result[0], result[1:]
        else:
            err, values = result, ()
        if int(err) != 0:
            name = self._error_name(err)
            cls = BackendUnavailableError if name in _UNAVAILABLE else BackendError
            hint = " (no usable NVIDIA GPU or driver)" if cls is BackendUnavailableError else ""
            raise cls(f"CUDA error during {what}: {name}{hint}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    # -- device ------------------------------------------------------------------------------
    def device_count(self) -> int:
        return int(self.check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def require_device(self) -> None:
        try:
            count = self.device_count()
        except BackendUnavailableError:
            raise
        except BackendError as exc:
            raise BackendUnavailableError(f"no usable CUDA device: {exc}") from exc
        if count < 1:
            raise BackendUnavailableError("no CUDA device found: TensorRT needs an NVIDIA GPU")

    # -- memory ------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes} bytes)"))

    def free(self, ptr: int) -> None:
        if ptr:
            self.check(self.rt.cudaFree(ptr), "cudaFree")

    def htod_async(self, dst: int, host: np.ndarray, stream) -> None:
        if host.nbytes:
            self.check(self.rt.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes,
                                               self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                       "cudaMemcpyAsync host->device")

    def dtoh_async(self, host: np.ndarray, src: int, stream) -> None:
        if host.nbytes:
            self.check(self.rt.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes,
                                               self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                       "cudaMemcpyAsync device->host")

    # -- streams -----------------------------------------------------------------------------
    def stream_create(self):
        return self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_sync(self, stream) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream) -> None:
        if stream is not None:
            self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")


def stream_handle(stream) -> int:
    """The integer handle TensorRT's ``execute_async_v3`` takes."""
    try:
        return int(stream)
    except TypeError:
        return int(getattr(stream, "getPtr")())


class DeviceBuffer:
    """A device allocation that grows (never shrinks) as shapes change."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda = cuda
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        if nbytes > self.nbytes or not self.ptr:
            self.free()
            self.ptr = self.cuda.malloc(nbytes)
            self.nbytes = max(int(nbytes), 1)
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            self.cuda.free(ptr)


def pointer_value(addr) -> int:
    """An address TensorRT handed to Python: an int, or a PyCapsule (debug listeners)."""
    if isinstance(addr, int):
        return addr
    try:
        return int(addr)
    except TypeError:
        pass
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    name = api.PyCapsule_GetName(addr)
    return int(api.PyCapsule_GetPointer(addr, name) or 0)


_CUDA: Optional[Cuda] = None


def get_cuda() -> Cuda:
    """The process-wide wrapper (importing cuda-python on first use) with a device checked."""
    global _CUDA
    if _CUDA is None:
        cuda = Cuda(_import_runtime())
        cuda.require_device()
        _CUDA = cuda
    return _CUDA
