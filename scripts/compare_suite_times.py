#!/usr/bin/env python3
"""How a change moved the test suite's time: two pytest JUnit reports, before and after.

    make test PYTEST_ARGS="--junitxml=/tmp/before.xml"     # in a clean clone of the old commit
    make test PYTEST_ARGS="--junitxml=/tmp/after.xml"      # in a clean clone of the new one
    .venv/bin/python scripts/compare_suite_times.py /tmp/before.xml /tmp/after.xml \\
        --count-new test_tud_equals_trackeval test_this_run_holds_its_domain

Prints both totals, the time of the tests present in both reports (by node id) before and
after, plus the new tests named with --count-new (the tests the change itself added; other
new tests belong to other work), and the files whose common tests moved most. Times are
pytest's per-test totals (setup + call + teardown).
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET


def test_times(path: str) -> dict[str, float]:
    """{'module::test[params]': seconds} from a JUnit XML report."""
    return {f"{case.get('classname')}::{case.get('name')}": float(case.get("time", 0.0))
            for case in ET.parse(path).getroot().iter("testcase")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--count-new", nargs="*", default=[],
                        help="names of test functions the change added (parameters ignored)")
    parser.add_argument("--files", type=int, default=8, help="files to list each way")
    args = parser.parse_args()
    before, after = test_times(args.before), test_times(args.after)
    common = before.keys() & after.keys()
    added = [key for key in after.keys() - before.keys()
             if key.split("::")[1].split("[")[0] in set(args.count_new)]
    old_total, new_total = sum(before.values()), sum(after.values())
    comparable = sum(after[k] for k in common) + sum(after[k] for k in added)
    print(f"before: {len(before)} tests, {old_total:.1f} s; after: {len(after)} tests, "
          f"{new_total:.1f} s")
    print(f"tests in both: {len(common)}, {sum(before[k] for k in common):.1f} s -> "
          f"{sum(after[k] for k in common):.1f} s; named new tests: {len(added)}, "
          f"{sum(after[k] for k in added):.1f} s")
    print(f"the change's suite (the old tests as they are now + the named new ones): "
          f"{old_total:.1f} s -> {comparable:.1f} s ({comparable / old_total:.3f}x)")
    by_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for key in common:
        module = key.split("::")[0]
        by_file[module][0] += before[key]
        by_file[module][1] += after[key]
    moved = sorted(by_file.items(), key=lambda item: item[1][1] - item[1][0])
    for module, (old, new) in moved[: args.files] + moved[-args.files:][::-1]:
        print(f"  {module:48s} {old:7.1f} s -> {new:7.1f} s ({new - old:+.1f})")


if __name__ == "__main__":
    main()
