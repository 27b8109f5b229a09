"""INT8 calibration from user data on TensorRT releases that have calibrators (8.6 through 10.x).

Implicit quantization needs a scale per tensor; TensorRT measures them by running the network in
FP32 over calibration batches the application serves through an ``IInt8Calibrator`` subclass.  Here
the batches are the user's own ``.npz`` files (``--calibration-data FILE.npz`` or a directory of
them; every input set in every file is one batch, read with :func:`trtdebug.inputs.io.load_inputs`),
copied to device buffers through :mod:`~trtdebug.runners.tensorrt.cuda`.  The calibration cache
(``--calibration-cache FILE``) is read when it exists - TensorRT then skips calibration - and written
atomically after it.

TensorRT 11 removed calibrators (and the INT8 flag): explicit quantization (Q/DQ nodes in the ONNX
model) is the only INT8 route there, so asking to calibrate is a usage error that says so.  Which
calibrator classes exist is detected with ``hasattr``; the subclass is defined inside
:func:`make_calibrator`, so importing this module never imports TensorRT.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from trtdebug.errors import UsageError

Feeds = Dict[str, np.ndarray]
CALIBRATORS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
NO_CALIBRATORS = ("INT8 calibration is not available on {label}: it has no INT8 calibrators (TensorRT 11 removed "
                  "them; TensorRT-RTX has none); "
                  "quantize the model explicitly instead (Q/DQ nodes, e.g. onnxruntime.quantization.quantize_static) "
                  "and check it with 'trtdebug debug precision MODEL --precision int8'")


def check_options(config) -> None:
    """The calibration options of a TrtBuildConfig, checked before anything is loaded or built."""
    data, cache = getattr(config, "calibration_data", None), getattr(config, "calibration_cache", None)
    if data is None and cache is None:
        return
    if not config.int8:
        given = "--calibration-data" if data is not None else "--calibration-cache"
        raise UsageError(f"{given} calibrates INT8: add --int8")
    if config.calibrator not in CALIBRATORS:
        raise UsageError(f"--calibrator: {config.calibrator!r} is not one of {', '.join(CALIBRATORS)}")
    if data is None and not Path(cache).is_file():
        raise UsageError(f"--calibration-cache {cache} does not exist; give --calibration-data to make it")
    if data is not None and not Path(data).exists():
        raise UsageError(f"--calibration-data {data}: no such file or directory")
    if cache is not None and Path(cache).is_dir():
        raise UsageError(f"--calibration-cache {cache} is a directory; give a file name")


def load_batches(path) -> List[Feeds]:
    """Every input set of ``path`` (an .npz) or of every .npz in the directory ``path`` (sorted by name)."""
    from trtdebug.inputs.io import load_inputs

    p = Path(path)
    files = sorted(p.glob("*.npz")) if p.is_dir() else [p]
    if not files:
        raise UsageError(f"--calibration-data {p}: the directory holds no .npz file")
    return [feeds for f in files for feeds in load_inputs(f)]


def check_batches(batches: Sequence[Feeds], inputs: Dict[str, tuple]) -> None:
    """Every batch feeds every network input (name -> shape, -1 dynamic) with a shape that fits."""
    for k, batch in enumerate(batches):
        for name, shape in inputs.items():
            if name not in batch:
                raise UsageError(f"calibration batch {k} has no input {name!r} (it has {', '.join(batch) or 'none'})")
            got = tuple(batch[name].shape)
            if len(got) != len(shape) or any(d >= 0 and d != g for d, g in zip(shape, got)):
                raise UsageError(f"calibration batch {k}: input {name!r} has shape {list(got)}, the network "
                                 f"takes {list(shape)}")


def make_calibrator(trt, batches: Sequence[Feeds], *, algorithm: str = "entropy", cache: Optional[Path] = None,
                    dtypes: Optional[Dict[str, np.dtype]] = None, label: str = "this TensorRT"):
    """An ``IInt8EntropyCalibrator2`` (``entropy``) or ``IInt8MinMaxCalibrator`` (``minmax``) serving ``batches``.

    ``dtypes``: the network's input types (feeds are cast to them).  The returned object must stay
    alive until the build ends (TensorRT keeps only a raw pointer); :meth:`free` releases its buffers.
    """
    if not hasattr(trt, "IInt8Calibrator") or not hasattr(trt, CALIBRATORS[algorithm]):
        raise UsageError(NO_CALIBRATORS.format(label=label))
    base = getattr(trt, CALIBRATORS[algorithm])

    class Calibrator(base):
        """Serves one batch per ``get_batch``; TensorRT stops asking at the first None."""

        def __init__(self) -> None:
            base.__init__(self)
            self.batches = list(batches)
            self.served = 0
            self.cache_read = self.cache_written = False
            self._buffers: Dict[str, object] = {}
            self._cuda = self._stream = None

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch is in the shapes

        def get_batch(self, names, *unused):
            if self.served >= len(self.batches):
                return None
            from trtdebug.runners.tensorrt.cuda import DeviceBuffer, get_cuda

            if self._cuda is None:
                self._cuda = get_cuda()
                self._stream = self._cuda.stream_create()
            batch, pointers = self.batches[self.served], []
            for name in names:
                host = np.ascontiguousarray(batch[name], dtype=(dtypes or {}).get(name, batch[name].dtype))
                buf = self._buffers.setdefault(name, DeviceBuffer(self._cuda))
                ptr = buf.ensure(host.nbytes)
                self._cuda.htod_async(ptr, host, self._stream)
                pointers.append(ptr)
            self._cuda.stream_sync(self._stream)
            self.served += 1
            return pointers

        def read_calibration_cache(self):
            if cache is None or not Path(cache).is_file():
                return None
            self.cache_read = True
            return Path(cache).read_bytes()

        def write_calibration_cache(self, data) -> None:
            if cache is None:
                return
            from trtdebug.util.files import write_bytes_atomic

            write_bytes_atomic(cache, bytes(data))
            self.cache_written = True

        def free(self) -> None:
            for buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
            if self._cuda is not None:
                self._cuda.stream_destroy(self._stream)
                self._stream = None

    return Calibrator()


def attach(trt, config, network, features, build, notes: List[str]):
    """Set ``config.int8_calibrator`` as ``build`` (a TrtBuildConfig) asks; the calibrator, or None.

    Refused on releases without calibrators before any other INT8 check, so the user reads the way
    that works there (Q/DQ models) rather than "no INT8 flag".
    """
    if getattr(build, "calibration_data", None) is None and getattr(build, "calibration_cache", None) is None:
        return None
    if not hasattr(config, "int8_calibrator"):
        raise UsageError(NO_CALIBRATORS.format(label=features.label))
    from trtdebug.runners.tensorrt.compat import numpy_dtype

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    batches = load_batches(build.calibration_data) if build.calibration_data is not None else []
    if batches:
        check_batches(batches, {t.name: tuple(t.shape) for t in inputs})
    dtypes = {t.name: numpy_dtype(t.dtype) for t in inputs}
    calibrator = make_calibrator(trt, batches, algorithm=build.calibrator, cache=build.calibration_cache,
                                 dtypes={k: v for k, v in dtypes.items() if v is not None}, label=features.label)
    config.int8_calibrator = calibrator
    source = f"{len(batches)} batch(es) from {build.calibration_data}" if batches else f"the cache {build.calibration_cache}"
    notes.append(f"INT8 calibration ({build.calibrator}): {source}")
    return calibrator
