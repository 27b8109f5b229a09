"""trtdebug.isolation on the CPU: every way a candidate can end, and clean-up of what it leaves."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from trtdebug.isolation import CRASHED, OK, RAISED, TIMED_OUT, run_isolated


# Targets run in a spawned child, so they live at module level (pickled by reference).
def _add(a, b, *, scale=1):
    return (a + b) * scale


def _big(n):
    return np.arange(n, dtype=np.float32)


def _fail():
    raise ValueError("tensor 'x' has shape [2, 3]\nsecond line of detail")


def _segfault():
    print("last words before the crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit_hard():
    os._exit(7)


def _hang():
    time.sleep(60)


def _hang_with_grandchild(pid_file):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)


def _unpicklable_result():
    return lambda: None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_success_returns_the_value_and_large_results_come_back():
    out = run_isolated(_add, 2, 3, scale=10, timeout=60)
    assert out.kind == OK and out.ok and out.value == 50
    big = run_isolated(_big, 4_000_000, timeout=60)  # 16 MB: through a file, not a pipe
    assert big.ok and big.value.shape == (4_000_000,) and big.value[-1] == 3_999_999


def test_exception_is_a_verdict_with_a_one_line_message():
    out = run_isolated(_fail, timeout=60)
    assert out.kind == RAISED and not out.ok
    assert out.exc_type == "ValueError" and out.message == "tensor 'x' has shape [2, 3]"
    assert "second line of detail" in out.traceback
    assert out.describe() == "raised ValueError: tensor 'x' has shape [2, 3]"


def test_unpicklable_result_is_reported_not_lost():
    out = run_isolated(_unpicklable_result, timeout=60)
    assert out.kind == RAISED and "could not be sent back" in out.message


def test_segfault_is_a_crash_with_the_signal_and_stderr_tail():
    out = run_isolated(_segfault, timeout=60)
    assert out.kind == CRASHED and out.signal == signal.SIGSEGV
    assert "last words before the crash" in out.stderr_tail
    assert out.describe().startswith("crashed (signal SIGSEGV): last words")


def test_hard_exit_is_a_crash_with_the_exit_code():
    out = run_isolated(_exit_hard, timeout=60)
    assert out.kind == CRASHED and out.exit_code == 7 and out.signal is None


def test_hang_is_killed_within_the_timeout_with_its_grandchildren(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    out = run_isolated(_hang_with_grandchild, str(pid_file), timeout=4)
    assert out.kind == TIMED_OUT and 4 <= out.seconds < 6
    assert time.monotonic() - start < 8  # interpreter start-up and kill included
    child, grandchild = map(int, pid_file.read_text().split())
    assert _wait_dead(child) and _wait_dead(grandchild), "a process outlived the timeout"


def test_unpicklable_function_fails_in_the_parent():
    with pytest.raises(Exception):
        run_isolated(lambda: 1, timeout=10)


def test_keyboard_interrupt_in_the_parent_kills_the_child_and_cleans_up(tmp_path):
    """A parent interrupted while it waits (Ctrl-C) leaves no child, grandchild or temporary files."""
    work, pid_file = tmp_path / "tmp", tmp_path / "pids"
    work.mkdir()
    script = textwrap.dedent(f"""
        import os, signal, sys, tempfile, threading
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        tempfile.tempdir = {str(work)!r}
        import test_isolation
        from trtdebug.isolation import run_isolated
        threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            run_isolated(test_isolation._hang_with_grandchild, {str(pid_file)!r}, timeout=60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "interrupted" in proc.stdout, proc.stderr
    child, grandchild = map(int, pid_file.read_text().split())
    assert _wait_dead(child) and _wait_dead(grandchild)
    assert list(work.iterdir()) == []  # the work directory is gone


def test_child_that_cannot_start_reports_why(monkeypatch):
    """A function whose module the child cannot import: its traceback is in the crash report."""
    import types

    ghost = types.ModuleType("trtdebug_ghost_module")
    exec("def work():\n    return 1\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    out = run_isolated(ghost.work, timeout=60)
    assert out.kind == CRASHED and out.exit_code == 1
    assert "No module named 'trtdebug_ghost_module'" in out.stderr_tail


# -- Worker: a persistent child serving many calls ---------------------------------------------------

class _Counter:
    """Built once per child: its state shows whether two calls reached the same child."""

    def __init__(self, start):
        self.n = start
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES")

    def bump(self):
        self.n += 1
        return self.n, os.getpid(), self.device

    def fail(self):
        raise ValueError("no such layer\nmore")

    def segfault(self):
        print("the build's last words", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGSEGV)

    def exit_hard(self):
        os._exit(3)

    def hang(self, pid_file):
        _hang_with_grandchild(pid_file)


def _broken_factory():
    raise RuntimeError("cannot parse the model")


def test_worker_keeps_its_object_between_calls_and_restarts_after_a_crash(tmp_path):
    from trtdebug.isolation import Worker

    with Worker(_Counter, 10, device=3, timeout=60) as w:
        n1, pid1, device = w.call("bump").value
        n2, pid2, _ = w.call("bump").value
        assert (n1, n2) == (11, 12) and pid1 == pid2 != os.getpid() and device == "3"
        failed = w.call("fail")  # an exception is an answer: the child lives on
        assert failed.kind == RAISED and failed.message == "no such layer" and "ValueError" in failed.traceback
        assert w.call("bump").value[:2] == (13, pid1)
        crash = w.call("segfault")
        assert crash.kind == CRASHED and crash.signal == signal.SIGSEGV
        assert "the build's last words" in crash.stderr_tail and _wait_dead(pid1)
        n, pid3, _ = w.call("bump").value  # a new child, built afresh by the factory
        assert n == 11 and pid3 != pid1 and w.restarts == 1
        exited = w.call("exit_hard")
        assert exited.kind == CRASHED and exited.exit_code == 3 and "last words" not in exited.stderr_tail
        assert w.call("bump").value[0] == 11 and w.restarts == 2
    assert not _alive(pid3)


def test_worker_hang_is_killed_at_its_deadline_with_its_grandchildren(tmp_path):
    from trtdebug.isolation import Worker

    pid_file = tmp_path / "pids"
    with Worker(_Counter, 0, timeout=60) as w:
        w.call("bump")
        start = time.monotonic()
        out = w.call("hang", str(pid_file), timeout=3)
        assert out.kind == TIMED_OUT and 2.5 < time.monotonic() - start < 20
        worker_pid, grandchild = (int(x) for x in pid_file.read_text().split())
        assert _wait_dead(worker_pid) and _wait_dead(grandchild)
        assert w.call("bump").value[0] == 1 and w.restarts == 1  # the next call gets a new child


def test_worker_whose_factory_fails_says_so_on_every_call():
    from trtdebug.isolation import Worker

    with Worker(_broken_factory, timeout=60) as w:
        out = w.start()
        assert out.kind == RAISED and out.exc_type == "RuntimeError" and out.message == "cannot parse the model"
        assert w.pid is None
        assert w.call("bump").kind == RAISED
