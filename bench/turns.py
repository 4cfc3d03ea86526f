"""Processes that share one card take turns on it: one at a time uses the GPU, and they hand the card on between
rounds of trials (clear_native.measure's ``between_rounds``), so that each reads the card in the state the others
read it in (Note [Repeats side by side], bench/reproducibility.py).

The turn is a file in a folder the members share: it names the member whose turn it is (absent: member 0's).
A member waits until the file names it, hands on by naming the next member still there, and leaves by marking
itself done. The executor that starts the members sets the folder up for those it starts (``begin``: the others,
measured before or never to come, marked done, so that nobody waits for them) and writes each one's process id
there (``register``), so a member whose process died (killed, out of memory) is passed over and never holds
the card.
Real time, not the virtual clock: the members are processes, each with a clock of its own.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def begin(folder: Path, members: int, present) -> None:
    """The turns in ``folder`` set up afresh for the members ``present`` (their indices, of ``members``): what an
    earlier invocation left there removed, every other member marked done, the card the first present one's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for m in set(range(members)) - set(present):
        (folder / f"done.{m}").touch()
    _write(folder / "turn", str(min(present)))


def register(folder: Path, me: int, pid: int) -> None:
    """Member ``me`` of the turns in ``folder`` runs as process ``pid`` (written by the executor that starts it,
    before it may take a turn)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / f"pid.{me}", str(pid))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # each writer its own
    tmp.write_text(text)
    tmp.replace(path)  # a reader sees the old text or the new, never a part


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: there
        return True
    return True


class Turns:
    """Member ``me`` (0 .. members - 1) of the processes taking turns on one card through ``folder``."""

    def __init__(self, folder, me: int, members: int, poll_s: float = 0.002):
        if not 0 <= me < members:
            raise ValueError(f"turns: member {me} of {members}: need 0 <= me < members")
        self.folder, self.me, self.members, self.poll_s = Path(folder), me, members, poll_s
        self.taken = 0        # turns this member took
        self.waited_s = 0.0   # time it waited for them
        self.handed_on = 0   # times it handed the card to another member

    def _holder(self) -> int:
        try:
            return int((self.folder / "turn").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def gone(self, member: int) -> bool:
        """The member has left, or its process died (a member not registered yet is still to come)."""
        if (self.folder / f"done.{member}").exists():
            return True
        try:
            pid = int((self.folder / f"pid.{member}").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return member != self.me and not _alive(pid)

    def _next_after(self, member: int) -> int:
        """The first member after ``member`` in the ring that is still there (this one where every other has
        gone)."""
        return next((m for k in range(1, self.members + 1) if not self.gone(m := (member + k) % self.members)),
                    self.me)

    def wait(self) -> None:
        """Until it is this member's turn: the turn file names it, or every member after the holder up to this one
        has gone (the holder too)."""
        t0 = time.monotonic()
        while (holder := self._holder()) != self.me:
            if self.gone(holder) and self._next_after(holder) == self.me:  # passed over: this one takes it
                _write(self.folder / "turn", str(self.me))
                continue
            time.sleep(self.poll_s)
        self.waited_s += time.monotonic() - t0
        self.taken += 1

    def hand_on(self) -> None:
        """The card to the next member still there, then wait for this one's turn again (at once where it is
        alone)."""
        nxt = self._next_after(self.me)
        if nxt == self.me:
            return
        self.handed_on += 1
        _write(self.folder / "turn", str(nxt))
        self.wait()

    def leave(self) -> None:
        """This member is done: marked so, and the card handed on where it held it."""
        (self.folder / f"done.{self.me}").touch()
        if self._holder() == self.me:
            nxt = self._next_after(self.me)
            if nxt != self.me:
                _write(self.folder / "turn", str(nxt))

    def summary(self) -> dict:
        """What a record keeps of this member's turns."""
        return {"member": self.me, "members": self.members, "turns": self.taken, "handed_on": self.handed_on,
                "waited_s": round(self.waited_s, 3)}


__all__ = ["Turns", "begin", "register"]
