"""Importing trtdebug (every submodule) and `trtdebug --help` must work without tensorrt or onnxruntime."""
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'onnxruntime', 'cuda'):
                raise ImportError('blocked for the test: ' + name)
    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_every_submodule_imports_without_backends():
    proc = _run(
        """
        import pkgutil, importlib, trtdebug
        names = [m.name for m in pkgutil.walk_packages(trtdebug.__path__, 'trtdebug.')]
        for name in names:
            if name == 'trtdebug.__main__':
                continue
            importlib.import_module(name)
        assert len(names) > 20, names
        assert not [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'onnxruntime')]
        print('imported', len(names))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


def test_help_works_without_backends():
    for args in ([], ["run"], ["compare"], ["inspect"], ["inspect", "model"]):
        proc = _run(f"""
            sys.argv = ['trtdebug', *{args!r}, '--help']
            from trtdebug.cli import main
            main()
            """)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Usage" in proc.stdout, args


def test_missing_onnxruntime_is_a_clear_backend_error(tmp_path):
    from trtdebug import zoo
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(zoo.conv_net(batch=1), path)
    proc = _run(f"""
        sys.argv = ['trtdebug', 'run', {str(path)!r}, '--onnxrt']
        from trtdebug.cli import main
        main()
        """)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "onnxruntime is not installed" in lines[0], proc.stderr
