"""The one clock: the host's monotonic clock, or a virtual one for tests (Note [Virtual time]).

Everything that waits or reads the time in the protocol goes through here, so
the same code runs on the real clock against a GPU and on the virtual clock
against the synthetic sensor, where a test's answer cannot depend on how busy
the machine is.

    with clock.virtual():            # a CPU test
        src = synthetic_sensor(...)  # made on the virtual clock
        ...measure(..., backend=SimulatedBackend(src))...
"""

from __future__ import annotations

import contextlib
import time

from ._native import core

VIRTUAL_START_NS = 10**15  # far from 0, as a host's monotonic clock is: nothing may assume it starts at 0


def now_ns() -> int:
    """Now, in ns, on the clock every stamp is on."""
    return core.monotonic_ns()


def now_s() -> float:
    return core.monotonic_ns() * 1e-9


def is_virtual() -> bool:
    return bool(core.on_virtual_clock())


def sleep(seconds: float) -> None:
    """Waits ``seconds``: real time passes, or the virtual clock moves (running the samplers' work)."""
    if seconds <= 0:
        return
    if core.on_virtual_clock():
        core.advance_virtual_clock(int(round(seconds * 1e9)))
    else:
        time.sleep(seconds)


@contextlib.contextmanager
def virtual(start_ns: int = VIRTUAL_START_NS):
    """Runs the block on the virtual clock (no sampler may be running on entry or exit)."""
    core.use_virtual_clock(int(start_ns))
    try:
        yield
    finally:
        core.use_real_clock()
