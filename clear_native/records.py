"""Records that survive a crash: one JSON object per line, appended and forced to disk.

Note [Torn records]: a process killed while it writes (SIGKILL, power loss)
can leave half a line at the end of the file. Appending after it would glue
the next record to that half, and both would be unreadable. So before each
append the file's end is checked: a last line without its newline is moved,
as it is, to ``<file>.torn`` (never deleted: it may be worth reading by hand)
and the file is cut back to its last complete line. Readers skip a last line
that does not parse and say so.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

TORN_SUFFIX = ".torn"


class TornRecordWarning(UserWarning):
    """A records file held a line that did not parse; it was skipped (and kept aside on the next append)."""


def _cut_torn_tail(path: Path) -> int:
    """Moves an unterminated last line to ``<path>.torn`` and truncates it away; returns its length in bytes.
    A last line that parses and lacks only its newline gets it."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Read back to the last newline (records are small: a few MB at most).
        step, pos, tail = 1 << 16, size, b""
        while pos > 0:
            pos = max(0, pos - step)
            f.seek(pos)
            chunk = f.read(size - pos)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                pos, tail = pos + cut + 1, chunk[cut + 1:]
                break
            tail = chunk
        try:  # every byte of the record but its newline made it: complete it
            json.loads(tail)
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return 0
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        with open(str(path) + TORN_SUFFIX, "ab") as torn:
            torn.write(tail + b"\n")
            torn.flush()
            os.fsync(torn.fileno())
        f.truncate(pos)
        f.flush()
        os.fsync(f.fileno())
        return len(tail)


def append(path, record: dict) -> None:
    """Appends one record as a line and forces it to disk: an interruption loses nothing already written.
    A torn last line left by an earlier crash is kept aside first (Note [Torn records])."""
    path = Path(path)
    if path.exists():
        _cut_torn_tail(path)
    line = (json.dumps(record, default=float) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path) -> list:
    """The records of a file (none if it does not exist). Lines that do not parse are skipped with a
    TornRecordWarning: at the end, a record an interruption cut short; elsewhere, damage."""
    path = Path(path)
    if not path.exists():
        return []
    out, bad = [], []
    for i, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad.append(i)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} line(s) that do not parse (line {', '.join(map(str, bad[:5]))}): "
                      "a record cut short by an interruption; the next append keeps it aside in "
                      f"{path.name}{TORN_SUFFIX}", TornRecordWarning, stacklevel=2)
    return out


def rewrite(path, records: list) -> None:
    """Replaces the file's records atomically (write aside, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("".join(json.dumps(r, default=float) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
