"""A study killed with SIGKILL at random points loses no complete record, and --resume then measures
exactly what is missing (issue 12). The GPU work is simulated (tests/helpers/sim_study.py); the
records, the run folder and --resume are bench/run.py's own."""

import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench import store, suite

HELPER = Path(__file__).resolve().parent / "helpers" / "sim_study.py"
ARGS = ["--no-reference", "--no-card-check", "--no-repeats", "--sweeps", "none"]  # 15 models' prefill and decode tasks, the coverage cases
KILLS = 20


def start(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HELPER), *ARGS, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def ok_ids(folder) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is expected here; it is counted below
        return [r["task"]["id"] for r in store.load(folder) if r.get("status") == "ok"]


def test_sigkill_at_random_points_loses_nothing_and_resume_measures_what_is_missing(tmp_path):
    planned = {t.id for t in suite.plan(suite.MODELS, [])}
    rng = random.Random(20261127)
    out, folder, kills, runs, resumed_mid_run = tmp_path / "out", None, 0, 0, 0
    while kills < KILLS:
        before = set(ok_ids(folder)) if folder else set()
        p = start(["--resume", str(folder)] if folder else ["--out", str(out)])
        head = ""
        if rng.random() < 0.2:  # now and then, kill it while it starts (before or during its first writes)
            time.sleep(rng.uniform(0.0, 0.5))
        else:  # mostly while it measures: after a random number of its tasks were stored, then a moment more
            # (counted in stored tasks, not in seconds: a loaded machine only makes each task slower)
            stored, wanted = 0, None
            for line in p.stdout:
                head += line
                if wanted is None and (m := re.search(r"(\d+) to go", line)):
                    wanted = rng.randint(0, max(0, int(m.group(1)) - 2))
                elif wanted is not None and line.startswith("["):
                    stored += 1
                if wanted is not None and stored >= wanted:
                    break
            time.sleep(rng.uniform(0.0, 0.03))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        text = head + p.communicate()[0]
        runs += 1
        if folder is None:
            found = store.runs_under(out)
            folder = found[0] if found else None
            if folder is None:
                continue  # killed before its first record: nothing to resume
        ids = ok_ids(folder)
        assert len(ids) == len(set(ids)), "a task was measured twice"
        assert before <= set(ids), "a complete record was lost"
        m = re.search(r"(\d+) tasks, (\d+) already measured, (\d+) to go", text)
        if m and before:  # it got as far as planning: it planned exactly what was missing
            resumed_mid_run += 1
            assert int(m.group(2)) == len(before) and int(m.group(3)) == len(planned) - len(before)
        if set(ids) == planned:
            folder = None  # that run is complete: the next kills hit a new one
            out = tmp_path / f"out{runs}"
    # The last run, resumed without interruption, measures what is missing and nothing else.
    if folder is not None:
        before = set(ok_ids(folder))
        p = start(["--resume", str(folder)])
        text = p.communicate(timeout=120)[0]
        assert p.returncode == 0, text
        m = re.search(r"(\d+) tasks, (\d+) already measured, (\d+) to go", text)
        assert int(m.group(3)) == len(planned) - len(before)
        ids = ok_ids(folder)
        assert sorted(ids) == sorted(planned)
        assert (folder / "REPORT.md").exists()
    assert kills == KILLS
    assert resumed_mid_run >= KILLS // 2  # most kills fell in the middle of a run with records before them
