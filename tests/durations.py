"""Read a JUnit file written by `make test` and print the suite's time: the wall clock of
the run, the summed test time, and the slowest tests (docs/testing.md keeps the table).

    python tests/durations.py .cache/test-reports/junit.xml [--top 20] [--timeline DIR]

With --timeline, also each worker's busy and idle time from the timeline-<worker>.tsv files
that tests/conftest.py writes (start, end, test id per line), and how long the last worker
ran alone at the end: where two workers leave the machine's cores unused.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET


def read(path: str) -> tuple[float, list[tuple[float, str, str]]]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    wall = sum(float(s.get("time", 0)) for s in suites)
    cases = []
    for case in root.iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None \
            else "skipped" if case.find("skipped") is not None else "passed"
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        cases.append((float(case.get("time", 0)), name, outcome))
    return wall, sorted(cases, reverse=True)


def timeline(folder: str) -> list[str]:
    from pathlib import Path

    spans = {}
    for f in sorted(Path(folder).glob("timeline-*.tsv")):
        rows = [line.split("\t") for line in f.read_text().splitlines() if line]
        spans[f.stem.split("-", 1)[1]] = [(float(r[0]), float(r[1]), r[2],
                                           float(r[3]) if len(r) > 3 else 0.0) for r in rows]
    if not spans:
        return []
    start = min(s[0][0] for s in spans.values())
    end = max(s[-1][1] for s in spans.values())
    out = [f"timeline over {(end - start) / 60:.1f} min from the first test's start:"]
    for w, s in spans.items():
        busy = sum(r[1] - r[0] for r in s)
        out.append(f"  {w}: {len(s)} tests, busy {busy / 60:.1f} min, idle between tests "
                   f"{(s[-1][1] - s[0][0] - busy) / 60:.1f} min, done at "
                   f"{(s[-1][1] - start) / 60:.1f} min (last: {s[-1][2]})")
    ends = sorted(s[-1][1] for s in spans.values())
    if len(ends) > 1:
        alone = (ends[-1] - ends[-2]) / 60
        out.append(f"  the last worker ran alone for the final {alone:.1f} min")
    rows = sorted((r for s in spans.values() for r in s), key=lambda r: -r[3])
    total = sum(r[3] for r in rows)
    if total:
        out.append(f"CPU of the tests and the processes they reaped: {total / 60:.1f} min; "
                   "the most:")
        out += [f"  {r[3]:7.1f} s  {r[2]}" for r in rows[:15]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("junit")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--timeline", help="folder of timeline-<worker>.tsv files")
    a = ap.parse_args()
    wall, cases = read(a.junit)
    total = sum(t for t, _, _ in cases)
    counts = {k: sum(1 for c in cases if c[2] == k) for k in ("passed", "failed", "skipped")}
    print(f"pytest wall clock {wall / 60:.1f} min; tests' own time {total / 60:.1f} min over "
          f"{len(cases)} items ({counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped)")
    print(f"slowest {a.top} (seconds, set-up of session stores included where a test "
          "waited for one):")
    for t, name, outcome in cases[:a.top]:
        print(f"  {t:7.1f}  {name}" + ("" if outcome == "passed" else f"  [{outcome}]"))
    for line in timeline(a.timeline) if a.timeline else []:
        print(line)


if __name__ == "__main__":
    main()
