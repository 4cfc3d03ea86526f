"""Processes that take turns on one card (bench/turns.py): one at a time, in strict alternation, and a member whose
process died never holds the card. Real processes and real time: the members are processes, as on a GPU host;
the assertions hold however slowly the machine runs them."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bench.turns import Turns, begin, register

ROOT = Path(__file__).resolve().parents[1]

# A member: its turns, each logged as it starts and ends (an O_APPEND write from each process), handing on after each.
MEMBER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from bench.turns import Turns
    folder, me, rounds, log = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    t = Turns(folder, me, 2)
    t.wait()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for k in range(rounds):
        os.write(fd, f"{me} start {k}\\n".encode())
        time.sleep(0.01)  # the card in use: a turn long enough that an overlap would show
        os.write(fd, f"{me} end {k}\\n".encode())
        if k < rounds - 1:
            t.hand_on()
    t.leave()
    print(t.summary())
""")


def test_two_processes_take_strict_turns_and_never_overlap(tmp_path):
    log, folder = tmp_path / "log.txt", tmp_path / "turns"
    begin(folder, 2, [0, 1])
    procs = []
    for me, rounds in ((1, 4), (0, 6)):  # member 1 starts first, and runs fewer rounds
        procs.append(subprocess.Popen([sys.executable, "-c", MEMBER, str(ROOT), str(folder), str(me), str(rounds),
                                       str(log)], stdout=subprocess.PIPE, text=True))
        register(folder, me, procs[-1].pid)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lines = [line.split() for line in log.read_text().splitlines()]
    # Never two at once: every start is followed by the same member's end.
    assert all(a[0] == b[0] and a[1:] == ["start", a[2]] and b[1:] == ["end", a[2]]
               for a, b in zip(lines[::2], lines[1::2])), lines
    members = [a[0] for a in lines[::2]]
    # Member 0 first (the card starts as its), then strictly alternating while both are there, then 0 alone.
    assert members == ["0", "1"] * 4 + ["0", "0"], members
    assert "'turns': 4, 'handed_on': 3" in outs[0]  # member 1: four turns, handed on after all but its last


def test_a_member_whose_process_died_is_passed_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    register(tmp_path, 0, dead.pid)  # member 0 holds the card (no turn file yet) but its process is gone
    t = Turns(tmp_path, 1, 2)
    done = threading.Event()
    threading.Thread(target=lambda: (t.wait(), done.set()), daemon=True).start()
    assert done.wait(30), "member 1 still waits for a member whose process died"
    assert (tmp_path / "turn").read_text() == "1"
    t.hand_on()  # nobody left to hand on to: it keeps the card at once
    assert (t.summary()["turns"], t.summary()["handed_on"]) == (1, 0)


def test_a_member_not_started_yet_is_waited_for_and_one_that_left_is_not(tmp_path):
    register(tmp_path, 1, os.getpid())
    t = Turns(tmp_path, 1, 2)
    (tmp_path / "turn").write_text("1")
    back = threading.Event()
    threading.Thread(target=lambda: (t.hand_on(), back.set()), daemon=True).start()
    time.sleep(0.3)
    # Member 0 was never registered (its process not started yet): the card is its, and member 1 waits.
    assert not back.is_set() and (tmp_path / "turn").read_text() == "0"
    Turns(tmp_path, 0, 2).leave()  # member 0 leaves before it ever started: done, the card it was named for goes on
    assert back.wait(30), "member 1 still waits for a member that left"
    assert t.summary()["handed_on"] == 1 and t.summary()["turns"] == 1


def test_a_member_outside_the_ring_is_refused(tmp_path):
    with pytest.raises(ValueError, match="need 0 <= me < members"):
        Turns(tmp_path, 2, 2)


def test_a_member_measured_before_or_never_coming_is_not_waited_for(tmp_path):
    # A resumed run starts member 1 alone (member 0 measured by an earlier invocation, in a folder that may hold
    # that invocation's files or none): nobody waits for member 0.
    (tmp_path / "turn").write_text("0")
    (tmp_path / "pid.0").write_text(str(os.getpid()))  # stale: a live process, but not this run's member
    (tmp_path / "done.1").touch()
    begin(tmp_path, 2, [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.0", "turn"]
    t = Turns(tmp_path, 1, 2)
    register(tmp_path, 1, os.getpid())
    done = threading.Event()
    threading.Thread(target=lambda: (t.wait(), t.hand_on(), done.set()), daemon=True).start()
    assert done.wait(30), "member 1 waits for a member that is not there"
    assert (t.summary()["turns"], t.summary()["handed_on"]) == (1, 0)
