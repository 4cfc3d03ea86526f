"""Where a study's records live, and the only code that reads or writes them.

A run is a folder, one per card and start time: ``<out>/<card>/<YYYY-MM-DD_HHMMSS>/``
holding measurements.jsonl (one record per task, appended as it completes),
reference.jsonl, superseded.jsonl (records --redo replaced), profile.json (the
sensor profile of its start), REPORT.md and the figures. A new run never writes
into another's folder; ``--resume RUN`` continues the run it names.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from clear_native import records

MEASUREMENTS = "measurements.jsonl"
REFERENCE = "reference.jsonl"
SUPERSEDED = "superseded.jsonl"   # records --redo replaced, kept
PROFILE = "profile.json"           # the sensor profile of a one-card run (before profiles.json)
PROFILES = "profiles.json"         # each card's sensor profile, by UUID
CARDS = "cards.jsonl"              # each card's reference workloads, at the run's start and end


def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': the folder of a card's runs."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def fmt_s(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def new_run(out: Path, card: str, now: _dt.datetime | None = None) -> Path:
    """A fresh run folder under ``out/card/``, named for the time it starts (UTC), with its (empty) records file:
    a run stopped before its first measurement (a time limit, Ctrl-C) is a run that --resume continues."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    base = Path(out) / card_slug(card) / now.strftime("%Y-%m-%d_%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    (folder / MEASUREMENTS).touch()
    return folder


def is_run(folder: Path) -> bool:
    return any((Path(folder) / n).exists() for n in (MEASUREMENTS, PROFILE, PROFILES, CARDS))


def runs_under(out: Path) -> list:
    """The run folders under ``out`` (any depth up to card/run), newest first."""
    found = [p.parent for p in Path(out).glob(f"*/*/{MEASUREMENTS}")] + \
            [p.parent for p in Path(out).glob(f"*/{MEASUREMENTS}")]
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


def load(folder: Path, name: str = MEASUREMENTS) -> list:
    return records.load(Path(folder) / name)


def append(folder: Path, record: dict, name: str = MEASUREMENTS) -> None:
    records.append(Path(folder) / name, record)


def load_profiles(folder: Path) -> dict:
    """Each card's sensor profile (UUID -> profile dict) measured for this run so far."""
    p, old = Path(folder) / PROFILES, Path(folder) / PROFILE
    if p.exists():
        return json.loads(p.read_text())
    if old.exists():  # one card's, from a run made before profiles.json: its identity is "<uuid>-driver-<v>"
        prof = json.loads(old.read_text())
        return {prof["identity"].split("-driver-")[0]: prof}
    return {}


def save_profiles(folder: Path, profiles: dict) -> None:
    write_atomic(Path(folder) / PROFILES, json.dumps(profiles, indent=1) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Writes a whole file or nothing: an interruption leaves the old one (or none), never half."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def record_l2(record: dict) -> str:
    """The L2 mode a record was measured with; records from before the option replayed hot."""
    return record.get("settings", {}).get("l2", "hot")


def matching(recs: list, patterns: list) -> list:
    """The records whose task id starts with one of ``patterns``."""
    return [r for r in recs if any(r["task"]["id"].startswith(p) for p in patterns)]


def supersede(folder: Path, recs: list, patterns: list) -> list:
    """Moves the records of tasks whose id starts with one of ``patterns`` to superseded.jsonl and returns
    the records left. Nothing is deleted (the report counts them)."""
    old = matching(recs, patterns)
    for r in old:
        append(folder, r, SUPERSEDED)
    keep = [r for r in recs if r not in old]
    records.rewrite(Path(folder) / MEASUREMENTS, keep)
    return keep


def done_ids(recs: list, retry_failed: bool) -> set:
    return {r["task"]["id"] for r in recs if r.get("status") == "ok" or not retry_failed}


def versions(recs: list) -> set:
    """The (code version, protocol version) pairs that measured ``recs`` ('?' where a record predates them)."""
    return {(str(r.get("identity", {}).get("code_version", "?")), str(r.get("identity", {}).get("protocol_version", "?")))
            for r in recs if r.get("status") == "ok"}


def instances(recs: list) -> set:
    """The graph instances per part that measured ``recs``' tasks (settings["instances"]; 1 where a record predates
    them, as protocol 12 measured): a procedure setting that moves the numbers (Note [Graph instances])."""
    return {int((r.get("settings") or {}).get("instances") or 1) for r in recs
            if r.get("status") == "ok" and r.get("job") == "task"}
