"""The card's launch-latency state during a measurement (Note [Launch-latency state], clear_native/backend.py):
read it, keep every kept trial in one state, and say so in the reports.

Note [One state per run]: on H200s the same graph of short kernels runs in one of two states ~15-20 % apart,
and a card can switch while a process measures (three of four fresh processes read 1.14-1.18 µs per tiny
graph kernel before GPT-2's trials and 0.96-1.01 µs after them). Trials taken across a switch mix the two: a
light part's number then belongs to neither state. So measure() reads the state before the trials, after each
round of them and after them. Where it moved by more than STATE_MOVED from the state the kept trials began in,
every capture's trials start again (once per run, MAX_STATE_RESTARTS), in the new state; the plan's
adaptations (windows, settle times) stay. A second move is not chased: the report says the state moved. Every
reading is kept with the run (MeasureRun.launch_state: latency_s, t_s from the run's start, restart: True on
the reading that started the trials again), so a reader knows which state a number was taken in. On four H200s
(results/reproducibility/2026-11-27_180053) 6 of 8 GPT-2 decode processes switched from 1.22 to 1.04 µs 7-22 s
in and started their trials again in the fast state; one stayed slow throughout (its step 802.6 µs vs 690).
"""

from __future__ import annotations

import math
from pathlib import Path

STATE_MOVED = 0.05  # the probe reads within 0.01 µs (1 %) for 45 s in one state; the two states are ~15-20 % apart
MAX_STATE_RESTARTS = 1


def host_cpu() -> dict:
    """The host CPU this process last ran on and its clock (MHz; 0 where the machine does not tell), or {} off
    Linux: kept with every reading, as the host is the next guess for what sets the state (bench/launch_state.py)."""
    try:
        cpu = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return {}
    try:
        mhz = int(Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read_text()) / 1000
    except (OSError, ValueError):
        mhz = 0.0
    return {"cpu": cpu, "cpu_mhz": mhz}


def read(backend, say) -> dict | None:
    """The card's launch-latency state now, where the backend can tell; a probe that fails costs nothing (NaN)."""
    probe = getattr(backend, "launch_state", None)
    if probe is None:
        return None
    try:
        state = dict(probe())
    except Exception as exc:  # noqa: BLE001 - a diagnostic: it never costs the measurement
        say(f"launch latency not read: {type(exc).__name__}: {exc}")
        return {"latency_s": math.nan, "error": f"{type(exc).__name__}: {exc}"}
    say(f"launch latency {state['latency_s'] * 1e6:.3f} µs per graph kernel")
    return state


def reset(backend, say, captures=()) -> None:
    """Returns the card to the fast launch-latency state where the backend can (Note [Launch-latency state],
    backend.py); a reset that fails costs nothing but a line: the probe after it tells the state."""
    fn = getattr(backend, "reset_launch_state", None)
    if fn is None:
        return
    try:
        fn(list(captures))
    except Exception as exc:  # noqa: BLE001 - as read(): never costs the measurement
        say(f"launch state not reset: {type(exc).__name__}: {exc}")


def kept_latency_s(states: list) -> float:
    """The state the kept trials ran in: the mean probe reading from the one they began at to the last (readings
    come after each round, so a state that moved under the trials counts by the rounds it lasted); NaN if none."""
    xs = [s.get("latency_s", math.nan) for s in states[kept_from(states):]] if states else []
    xs = [x for x in xs if x > 0]
    return sum(xs) / len(xs) if xs else math.nan


def at_latency(energy_j: float, time_s: float, kernels: float, latency_s: float, ref_latency_s: float,
               awake_w: float) -> tuple:
    """(J, s) per call of a reading taken from launch latency ``latency_s`` to ``ref_latency_s``: each of its
    ``kernels`` graph kernels shorter by their difference, that time at awake-idle power, as the slow state adds it
    (Note [Launch-latency state]: BERT-base's parts moved by their kernel count times the probe's change). NaN
    where the count or a latency is unknown."""
    dt = kernels * (latency_s - ref_latency_s)
    return energy_j - awake_w * dt, time_s - dt


def moved(a: dict, b: dict) -> float:
    """Relative change of the latency from reading ``a`` to ``b`` (NaN where either was not read)."""
    x, y = a.get("latency_s", math.nan), b.get("latency_s", math.nan)
    return y / x - 1 if x > 0 and y > 0 else math.nan


def kept_from(states: list) -> int:
    """Index of the reading the kept trials began at: the last that started them again, else the first."""
    return max((i for i, s in enumerate(states) if s.get("restart")), default=0)


def start_again_if_moved(states: list, trials: list, budget_s: float, restarts: int) -> bool:
    """After a round (``states[-1]`` just read): where the state moved more than STATE_MOVED from the one the kept
    trials began in, every capture's trials start again, and the reading is marked. Not more than
    MAX_STATE_RESTARTS times, and only where the budget left could measure them again (a restart must not leave
    the run with nothing): True where they did."""
    start, now = states[kept_from(states)], states[-1]
    time_for_it = budget_s - now["t_s"] > now["t_s"] - start["t_s"]
    if restarts >= MAX_STATE_RESTARTS or not time_for_it or not abs(moved(start, now)) > STATE_MOVED:
        return False
    now["restart"] = True
    for t in trials:
        t.start_again(f"the launch-latency state moved ({moved(start, now):+.0%})")
    return True


def launch_state_line(states: list) -> list:
    """A report's lines on the state: the trials started again after it moved, and/or a warning that it moved
    under the kept trials (first kept reading vs the last); nothing where it held."""
    if len(states) < 2:
        return []
    out = []
    start = kept_from(states)
    if start:
        a, b = states[start - 1], states[start]
        out.append(f"the card's launch-latency state moved ({a['latency_s'] * 1e6:.3f} -> {b['latency_s'] * 1e6:.3f} "
                   f"µs per tiny graph kernel) {b.get('t_s', math.nan):.0f} s into the run: every capture's trials "
                   "started again in the new state (Note [One state per run])")
    m = moved(states[start], states[-1])
    if abs(m) > STATE_MOVED:
        out.append(f"the card's launch-latency state moved during the trials: {states[start]['latency_s'] * 1e6:.3f} "
                   f"-> {states[-1]['latency_s'] * 1e6:.3f} µs per tiny graph kernel ({m * 100:+.0f} %); parts of a "
                   "few µs per kernel follow it (on H200s up to ~20 % in time and ~15 % in energy): compare them "
                   "only with a run whose state matched (Note [Launch-latency state])")
    return out
