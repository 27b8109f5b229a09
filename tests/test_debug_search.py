"""The search core with scripted oracles: culprits, flakiness, crashes, journals, workers, call counts."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from trtdebug.debug.search import (Journal, Judgement, LocalPool, NotFailing, Verdict, find_minimal)
from trtdebug.errors import UsageError

NAMES = [f"node{i:03d}" for i in range(64)]


class Scripted:
    """Fails when every name of one of ``culprit_sets`` is in the candidate; records each call."""

    def __init__(self, *culprit_sets, skip=lambda c: False):
        self.culprit_sets = [set(s) for s in culprit_sets]
        self.skip = skip
        self.asked = []

    def __call__(self, candidate):
        self.asked.append(tuple(candidate))
        if self.skip(candidate):
            return Verdict.SKIP
        return any(s <= set(candidate) for s in self.culprit_sets)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 33, 64])
def test_one_culprit_anywhere_within_the_call_bound(n):
    names = NAMES[:n]
    bound = 2 * math.log2(n) + 3
    for culprit in names:
        oracle = Scripted({culprit})
        result = find_minimal(names, oracle)
        assert result.culprits == [culprit]
        assert result.oracle_calls == len(oracle.asked) <= bound, (n, culprit, result.oracle_calls)
        assert len(set(oracle.asked)) == len(oracle.asked)  # nothing asked twice


def test_two_culprits_that_fail_only_together_need_delta_debugging():
    oracle = Scripted({"node005", "node040"})
    result = find_minimal(NAMES, oracle)
    assert result.culprits == ["node005", "node040"]
    assert any(s.phase == "ddmin" for s in result.steps)
    assert result.steps[0].phase == "check" and result.steps[0].verdict == "bad"


def test_three_interacting_culprits_give_a_one_minimal_set():
    oracle = Scripted({"node001", "node030", "node062"})
    result = find_minimal(NAMES, oracle)
    assert result.culprits == ["node001", "node030", "node062"]


def test_independent_culprits_one_or_all():
    oracle = Scripted({"node010"}, {"node050"})
    first = find_minimal(NAMES, oracle)
    assert len(first.culprits) == 1 and first.culprits[0] in ("node010", "node050")
    every = find_minimal(NAMES, Scripted({"node010"}, {"node050"}), find_all=True)
    assert sorted(c for s in every.culprit_sets for c in s) == ["node010", "node050"]
    assert every.steps[-1].phase == "rest" and every.steps[-1].verdict == "good"


def test_a_passing_set_is_not_searched():
    with pytest.raises(NotFailing, match="does not fail"):
        find_minimal(NAMES, Scripted())
    with pytest.raises(UsageError):
        find_minimal([], Scripted())


def test_flaky_oracle_is_asked_again_and_one_failure_counts():
    calls = {"n": 0}

    def flaky(candidate):  # the culprit's failure shows only every third time it is run
        calls["n"] += 1
        return "node020" in candidate and calls["n"] % 3 == 0

    with pytest.raises(NotFailing):  # asked once, the failure may well not show
        find_minimal(NAMES[:32], flaky)
    calls["n"] = 0
    result = find_minimal(NAMES[:32], flaky, repeat=3)
    assert result.culprits == ["node020"]
    assert all(s.calls <= 3 for s in result.steps)


def test_flaky_policy_skip_reports_disagreement_as_no_answer():
    answers = iter([Verdict.BAD, Verdict.GOOD])

    def oracle(candidate):
        return next(answers, Verdict.GOOD)

    with pytest.raises(NotFailing, match="flaky: 1 of 2"):
        find_minimal(["a", "b"], oracle, repeat=2, flaky="skip")


def test_crashing_oracle_is_a_verdict_as_configured():
    def crashy(candidate):
        if "node007" in candidate and len(candidate) <= 4:
            raise RuntimeError("segfault in the builder")
        return "node003" in candidate

    as_skip = find_minimal(NAMES[:16], crashy, on_error="skip")
    assert as_skip.culprits == ["node003"]
    as_bad = find_minimal(NAMES[:16], crashy, on_error="bad")  # a crash is a failure: it can be blamed
    assert as_bad.culprits == ["node003"]  # node003's half is asked first and fails on its own
    with pytest.raises(RuntimeError, match="segfault"):
        find_minimal(["node007"], crashy)  # default: an in-process oracle's bug propagates


def test_crash_as_bad_finds_the_crashing_node():
    def crashy(candidate):
        if "node011" in candidate:
            raise RuntimeError("parser crashed")
        return False

    result = find_minimal(NAMES[:16], crashy, on_error="bad")
    assert result.culprits == ["node011"]
    assert result.steps[-1].verdict == "bad" and "parser crashed" in result.steps[-1].detail


def test_skip_is_retried_then_treated_as_no_answer():
    seen = {}

    def sometimes_skips(candidate):
        key = tuple(candidate)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1 and len(candidate) < 64:
            return Verdict.SKIP  # a transient failure the first time each subset is asked
        return "node042" in candidate

    result = find_minimal(NAMES, sometimes_skips, retries=1)
    assert result.culprits == ["node042"]
    # SKIPs that stay SKIPs: the halves that cannot be judged fall to delta debugging, which still converges
    result = find_minimal(NAMES[:8], Scripted({"node002"}, skip=lambda c: len(c) == 4 and "node002" in c))
    assert result.culprits == ["node002"]


def test_journal_resumes_without_asking_again(tmp_path):
    journal = tmp_path / "journal.jsonl"

    class Killed(Exception):
        pass

    first = Scripted({"node033"})

    def dies_after_four(candidate):
        if len(first.asked) == 4:
            raise Killed()
        return first(candidate)

    with pytest.raises(Killed):
        find_minimal(NAMES, dies_after_four, journal=journal)
    assert len(journal.read_text().splitlines()) == 1 + 4
    second = Scripted({"node033"})
    result = find_minimal(NAMES, second, journal=journal)
    assert result.culprits == ["node033"]
    assert not set(first.asked) & set(second.asked)  # nothing re-asked
    assert result.reused == 4 and result.oracle_calls == len(second.asked)
    fresh = Scripted({"node033"})
    find_minimal(NAMES, fresh)
    assert len(first.asked) + len(second.asked) == len(fresh.asked)
    again = Scripted({"node033"})
    assert find_minimal(NAMES, again, journal=journal).culprits == ["node033"]
    assert again.asked == []  # everything answered by the journal


def test_journal_of_another_search_is_refused(tmp_path):
    journal = tmp_path / "j.jsonl"
    find_minimal(NAMES[:8], Scripted({"node001"}), journal=journal, context={"oracle": "a"})
    with pytest.raises(UsageError, match="different search"):
        find_minimal(NAMES[:9], Scripted({"node001"}), journal=journal, context={"oracle": "a"})
    with pytest.raises(UsageError, match="different search"):
        find_minimal(NAMES[:8], Scripted({"node001"}), journal=journal, context={"oracle": "b"})
    (tmp_path / "x.jsonl").write_text("not json\n")
    with pytest.raises(UsageError, match="not a trtdebug search journal"):
        Journal(tmp_path / "x.jsonl", NAMES[:8])


_KILLED_SEARCH = textwrap.dedent("""
    import os, signal, sys
    from trtdebug.debug.search import find_minimal
    names = [f"n{i}" for i in range(32)]
    calls = []
    def oracle(c):
        calls.append(c)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)   # killed mid-search, as by the OOM killer or Ctrl-\\
        return "n21" in c
    r = find_minimal(names, oracle, journal=sys.argv[1])
    print(",".join(r.culprits), r.oracle_calls, r.reused)
""")


def test_resume_after_a_real_kill(tmp_path):
    journal = tmp_path / "journal.jsonl"
    script = tmp_path / "search.py"
    script.write_text(_KILLED_SEARCH)
    killed = subprocess.run([sys.executable, str(script), str(journal), "5"], capture_output=True, text=True)
    assert killed.returncode == -9
    assert len(journal.read_text().splitlines()) == 1 + 4
    with open(journal, "a") as fh:  # a line the kill cut in half
        fh.write('{"candidate": [0, 1')
    done = subprocess.run([sys.executable, str(script), str(journal), "0"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    culprits, calls, reused = done.stdout.split()
    assert culprits == "n21" and int(reused) == 4 and int(calls) >= 1
    lines = journal.read_text().splitlines()
    assert all(json.loads(ln) for ln in lines)  # the broken line is gone


def test_two_workers_judge_both_halves_at_once_and_get_their_device():
    lock = threading.Lock()
    running, peak, devices = [0], [0], []

    def slow(candidate, device):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            devices.append(device)
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return "node013" in candidate

    pool = LocalPool(slow, devices=[0, 1])
    try:
        result = find_minimal(NAMES[:32], pool)
    finally:
        pool.close()
    assert result.culprits == ["node013"]
    assert peak[0] == 2 and set(devices) == {0, 1}
    bisect_steps = [s for s in result.steps if s.phase == "bisect"]
    assert len(bisect_steps) == 2 * 5  # both halves at every level, judged together


def test_four_workers_split_four_ways_and_agree_with_one():
    def oracle(candidate, device):
        return {"node002", "node051"} <= set(candidate)

    pool = LocalPool(oracle, devices=[0, 1, 2, 3])
    try:
        assert find_minimal(NAMES, pool).culprits == ["node002", "node051"]
    finally:
        pool.close()


def test_progress_reports_step_estimate_region_and_time():
    seen = []
    find_minimal(NAMES, Scripted({"node009"}), on_progress=seen.append)
    assert seen[0].phase == "check" and seen[0].seconds_per_call is None
    assert all(p.step <= p.estimate for p in seen)
    assert seen[-1].seconds_per_call is not None
    assert "node008" in seen[-1].region or "node009" in seen[-1].region


def test_oracle_answers_are_read_strictly():
    with pytest.raises(TypeError, match="must return"):
        find_minimal(["a"], lambda c: 3)
    result = find_minimal(["a", "b"], lambda c: Judgement(Verdict.BAD if "b" in c else Verdict.GOOD, "why"))
    assert result.culprits == ["b"] and result.steps[-1].detail == "why"
