"""Shared pytest setup.

``@pytest.mark.gpu`` tests need TensorRT and a CUDA device; they are skipped, with the reason,
wherever either is missing (CI), and run on the device machine with ``pytest -m gpu``.
"""
from __future__ import annotations

import functools

import pytest


@functools.lru_cache(maxsize=None)
def gpu_unavailable_reason():
    """None when TensorRT imports and a CUDA device answers; else why not (checked once)."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError for a broken install
        return f"TensorRT not importable ({type(exc).__name__}: {exc})"
    try:
        from trtdebug.runners.tensorrt.cuda import get_cuda

        get_cuda()
    except Exception as exc:  # noqa: BLE001 - any failure means "no GPU here"
        return f"no usable CUDA device ({exc})"
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    reason = gpu_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: {reason}")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Builds keep a timing cache in the user's cache directory by default; tests get their own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
