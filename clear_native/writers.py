"""One writer for every result: JSON-ready data, JSON and CSV text (written to a file when one is named),
markdown tables."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict


def coverage_pc(x: float) -> str:
    """A coverage in %, or 'not computed' (NaN: the whole model ran as a Python loop)."""
    return "not computed" if x != x else f"{x * 100:.1f} %"


def plain(obj) -> dict:
    """A dataclass as JSON-ready data (tuples become lists; NaN stays NaN)."""
    return json.loads(json.dumps(asdict(obj), default=float))


def write_text(path, text: str) -> str:
    """Writes ``text`` to ``path`` when one is given; returns it."""
    if path is not None:
        with open(path, "w", newline="") as f:
            f.write(text)
    return text


def json_text(obj, path=None) -> str:
    """``obj`` as indented JSON, also written to ``path`` when one is given."""
    text = json.dumps(plain(obj), indent=1)
    write_text(path, text + "\n")
    return text


def csv_text(rows: list, fieldnames, path=None) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(fieldnames))
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def markdown_table(header, rows) -> list:
    """Lines of a markdown table."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in r) + " |" for r in rows]
