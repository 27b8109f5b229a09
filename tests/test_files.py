"""Atomic writes: nothing half-written, nothing of the user's overwritten, usual permissions."""
import os
import stat

import pytest

from trtdebug.errors import UsageError
from trtdebug.util.files import atomic_directory, atomic_path, check_output_paths, file_size, write_text_atomic


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_artifacts_get_umask_permissions_not_mkstemp_ones(tmp_path):
    old = os.umask(0o022)
    try:
        f = write_text_atomic(tmp_path / "report.json", "{}")
        with atomic_directory(tmp_path / "outs", owned=lambda d: None) as staging:
            (staging / "index.json").write_text("{}")
    finally:
        os.umask(old)
    assert _mode(f) == 0o644
    assert _mode(tmp_path / "outs") == 0o755


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_refuses_to_overwrite_inputs(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(UsageError, match="refusing"):
        check_output_paths({"--report": tmp_path / "m.onnx"}, [model])
    check_output_paths({"--report": tmp_path / "r.json", "--html": None}, [model, None])
    assert file_size(model) == 1 and file_size(tmp_path / "nope") is None and file_size(None) is None
