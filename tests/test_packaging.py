"""The HTML report's templates ship with the package: an installed wheel must render a page."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted(p.name for p in (ROOT / "trtdebug" / "render" / "templates").glob("*.j2"))


def test_templates_exist_and_load_through_the_package():
    from trtdebug.render.html import _environment

    assert TEMPLATES and sorted(_environment().loader.list_templates()) == TEMPLATES


def test_wheel_contains_the_templates(tmp_path):
    if not _can_build_wheels():
        pytest.skip("needs setuptools >= 70.1, or the wheel package (in the test extra)")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "trtdebug", src / "trtdebug", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("trtdebug-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for template in TEMPLATES:
        assert f"trtdebug/render/templates/{template}" in names


def _can_build_wheels() -> bool:
    """Offline (no build isolation): setuptools >= 70.1 builds wheels itself, older ones need ``wheel``."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    try:
        import wheel  # noqa: F401
    except ImportError:
        return (major, minor) >= (70, 1)
    return True
