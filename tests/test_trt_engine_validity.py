"""``engine.require_runnable``: TensorRT-RTX's "can this engine run here?" answer, turned into one line.

The real library answers only "no usable CUDA device" on CPU machines (tests/test_rtx.py); the other
diagnostics (an unsupported compute capability, as on an H200, a too-old driver, a malformed engine)
are driven here with a minimal stand-in exposing the two names the check reads.
"""
from __future__ import annotations

import enum
import types

import pytest

from trtdebug.errors import BackendUnavailableError, ModelLoadError
from trtdebug.runners.tensorrt import compat, engine
from trtdebug.runners.tensorrt.logger import MessageLog


class EngineValidity(enum.IntEnum):
    VALID = 0
    SUBOPTIMAL = 1
    INVALID = 2


class EngineInvalidityDiagnostics(enum.IntEnum):  # the bit values of TensorRT-RTX 1.7
    VERSION_MISMATCH = 1
    UNSUPPORTED_CC = 2
    OLD_CUDA_DRIVER = 4
    OLD_CUDA_RUNTIME = 8
    INSUFFICIENT_GPU_MEMORY = 16
    MALFORMED_ENGINE = 32
    CUDA_ERROR = 64


FEATURES = compat.Features(**{**{f: False for f in compat.Features.__dataclass_fields__},
                              "version": "1.7.1.116", "product": "TensorRT-RTX", "engine_validity": True,
                              "compute_capabilities": ("8.0", "8.6", "8.9", "12.0")})
TRT = types.SimpleNamespace(EngineInvalidityDiagnostics=EngineInvalidityDiagnostics)


def check(validity, bits=0, logged=()):
    log = MessageLog()
    logger = types.SimpleNamespace(messages=log)

    class Runtime:
        def get_engine_validity(self, data):
            for line in logged:
                log.add("ERROR", line)
            return validity, bits

    engine.require_runnable(TRT, Runtime(), logger, b"plan", FEATURES)


def test_valid_and_suboptimal_engines_pass():
    check(EngineValidity.VALID)
    check(EngineValidity.SUBOPTIMAL, EngineInvalidityDiagnostics.OLD_CUDA_DRIVER)


def test_unsupported_compute_capability_quotes_tensorrts_list():
    with pytest.raises(BackendUnavailableError) as info:
        check(EngineValidity.INVALID, EngineInvalidityDiagnostics.UNSUPPORTED_CC,
              ["TensorRT-RTX does not support this compute capability (9.0); supported 8.0 8.6 8.9 12.0 12.1"])
    assert str(info.value) == ("TensorRT-RTX 1.7.1.116 cannot run the engine here: compute capability 9.0 is not "
                               "supported by TensorRT-RTX (TensorRT-RTX does not support this compute capability "
                               "(9.0); supported 8.0 8.6 8.9 12.0 12.1)")


def test_unsupported_compute_capability_without_a_log_names_the_targets():
    with pytest.raises(BackendUnavailableError, match=r"this GPU's compute capability is not supported by "
                                                      r"TensorRT-RTX \(its targets: 8\.0, 8\.6, 8\.9, 12\.0\)$"):
        check(EngineValidity.INVALID, EngineInvalidityDiagnostics.UNSUPPORTED_CC)


def test_no_diagnostic_means_no_usable_device_and_multiline_logs_become_one_line():
    with pytest.raises(BackendUnavailableError) as info:
        check(EngineValidity.INVALID, 0, ["Error reading CUDA GPU properties:\n(cudaError 35)"])
    assert str(info.value).endswith("here: no usable CUDA device (Error reading CUDA GPU properties: (cudaError 35))")


def test_several_reasons_and_a_malformed_engine():
    bits = EngineInvalidityDiagnostics.OLD_CUDA_DRIVER | EngineInvalidityDiagnostics.INSUFFICIENT_GPU_MEMORY
    with pytest.raises(BackendUnavailableError, match="driver is missing or too old, not enough free GPU memory$"):
        check(EngineValidity.INVALID, bits)
    with pytest.raises(ModelLoadError, match="the engine data is malformed"):
        check(EngineValidity.INVALID, EngineInvalidityDiagnostics.MALFORMED_ENGINE)
