"""Read a JUnit file written by `make test` and print the suite's time: the wall clock of
the run, the summed test time, and the slowest tests (docs/testing.md keeps the table).

    python tests/durations.py .cache/test-reports/junit.xml [--top 20]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("junit")
    ap.add_argument("--top", type=int, default=20)
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


if __name__ == "__main__":
    main()
