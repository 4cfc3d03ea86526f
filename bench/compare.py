"""Two runs' records side by side: whole models and component groups, relative differences.

Usage: python bench/compare.py A.jsonl|RUN_A B.jsonl|RUN_B [--label-a old --label-b new] [--out results --name X]

Used to check that a change of code gives the same numbers as before on one card (results/refactor_check.*),
and to see what a second run or another card gives (the spread a user should expect).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: import the package bench, not loose files beside this one
    sys.path.pop(0)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from bench import store  # noqa: E402
from clear_native import records  # noqa: E402
from clear_native.analysis import latest_ok  # noqa: E402


def _ok(path: Path) -> dict:
    path = Path(path)
    recs = records.load(path) if path.is_file() else store.load(path)
    return latest_ok(recs)["ok"]


def compare(a: dict, b: dict) -> list:
    """Rows (task, part, energy A, energy B, relative difference B/A - 1, CIs) for tasks both measured."""
    rows = []
    for tid in sorted(set(a) & set(b)):
        ra, rb = a[tid]["report"], b[tid]["report"]
        pairs = [("whole model", ra["whole"], rb["whole"])]
        gb = {g["name"]: g for g in rb["groups"]}
        pairs += [(g["name"], g, gb[g["name"]]) for g in ra["groups"] if g["name"] in gb]
        for part, x, y in pairs:
            ea, eb = x["energy_per_call_j"], y["energy_per_call_j"]
            rows.append({"task": tid, "part": part, "energy_a_j": ea, "energy_b_j": eb, "rel_diff": eb / ea - 1,
                         "ci95_rel_a": x.get("ci95_rel"), "ci95_rel_b": y.get("ci95_rel"),
                         "power_a_w": x.get("mean_power_w"), "power_b_w": y.get("mean_power_w")})
    return rows


def _card(recs: dict) -> str:
    ids = {r.get("identity", {}).get("gpu", {}).get("uuid", "?") for r in recs.values()}
    return ", ".join(sorted(ids))


def markdown(rows: list, label_a: str, label_b: str, cards: tuple) -> str:
    diffs = [abs(r["rel_diff"]) for r in rows]
    lines = [f"# {label_a} vs {label_b}", "", f"Cards: {label_a} {cards[0]}; {label_b} {cards[1]}.",
             f"{len(rows)} parts of {len({r['task'] for r in rows})} tasks; |difference| median "
             f"{statistics.median(diffs) * 100:.2f} %, max {max(diffs) * 100:.2f} %." if rows else "No common task.", "",
             f"| task | part | {label_a} mJ | {label_b} mJ | difference | {label_a} W | {label_b} W |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pa, pb = r["power_a_w"], r["power_b_w"]
        lines.append(f"| {r['task']} | {r['part']} | {r['energy_a_j'] * 1e3:.4g} | {r['energy_b_j'] * 1e3:.4g} | "
                     f"{r['rel_diff'] * 100:+.2f} % | {pa:.0f} | {pb:.0f} |" if pa and pb else
                     f"| {r['task']} | {r['part']} | {r['energy_a_j'] * 1e3:.4g} | {r['energy_b_j'] * 1e3:.4g} | "
                     f"{r['rel_diff'] * 100:+.2f} % | | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--out", help="write <out>/<name>.json and .md")
    ap.add_argument("--name", default="compare")
    args = ap.parse_args(argv)
    a, b = _ok(Path(args.a)), _ok(Path(args.b))
    if not a or not b:
        print(f"bench/compare.py: no successful records in {args.a if not a else args.b}", file=sys.stderr)
        return 2
    rows = compare(a, b)
    md = markdown(rows, args.label_a, args.label_b, (_card(a), _card(b)))
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.name}.json").write_text(json.dumps({"a": args.label_a, "b": args.label_b, "cards":
                                                           [_card(a), _card(b)], "rows": rows}, indent=1) + "\n")
        (out / f"{args.name}.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
