"""How much of the code only the full profile takes did the rehearsal execute?

    python .ci/full_only.py COVDIR [--min-lines N]

COVDIR holds the coverage data files that `.ci/notebooks.sh` wrote, one per chapter and profile
(`.coverage.smoke.NN_name`, `.coverage.full.NN_name`). A line of `dlbook` is *full-only* when the
full-profile rehearsal of some chapter executed it and no chapter's smoke run did: that is what a
rehearsal adds over the smoke runs, and what would go untested if it skipped the full branches.
Printed: per chapter, the full-only lines its rehearsal executed; per module, the full-only lines
executed out of the lines no smoke run reaches. Exit 1 if a chapter rehearsed adds fewer than
`--min-lines` full-only lines (default 1): its rehearsal did not take the full path.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from coverage import Coverage, CoverageData


def lines(path: Path) -> dict[str, set[int]]:
    data = CoverageData(basename=str(path))
    data.read()
    return {f: set(data.lines(f) or ()) for f in data.measured_files()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("covdir", type=Path)
    ap.add_argument("--min-lines", type=int, default=1)
    a = ap.parse_args(argv)
    runs = {"smoke": {}, "full": {}}
    for f in sorted(a.covdir.glob(".coverage.*.*")):
        _, profile, chapter = f.name.split(".", 2)
        if profile in runs:
            runs[profile][chapter] = lines(f)
    if not runs["full"]:
        print(f"full_only: no rehearsal data (.coverage.full.*) in {a.covdir}")
        return 1
    smoke = defaultdict(set)
    for per_file in runs["smoke"].values():
        for f, ls in per_file.items():
            smoke[f] |= ls
    full = defaultdict(set)
    print("full-only lines of dlbook (executed by the rehearsal, by no smoke run), per chapter:")
    bad = []
    for chapter, per_file in sorted(runs["full"].items()):
        own = sum(len(ls - smoke[f]) for f, ls in per_file.items())
        for f, ls in per_file.items():
            full[f] |= ls
        print(f"  {chapter:36s} {own:5d}")
        if own < a.min_lines:
            bad.append(chapter)
    # statements per module, to say what share of the lines no smoke run reaches were rehearsed
    cov = Coverage(data_file=None)
    print("\nper module: full-only lines executed / statements no smoke run executes")
    tot_new = tot_unreached = 0
    root = Path(__file__).resolve().parent.parent
    for f in sorted(set(full) | set(smoke)):
        try:
            _, statements, _, _, _ = cov.analysis2(f)
        except Exception:  # a file that is gone or not Python
            continue
        unreached = set(statements) - smoke[f]
        new = full[f] - smoke[f]
        tot_new += len(new)
        tot_unreached += len(unreached)
        if unreached:
            name = Path(f).resolve().relative_to(root) if Path(f).resolve().is_relative_to(root) else f
            print(f"  {str(name):36s} {len(new):5d} / {len(unreached):5d}")
    share = tot_new / tot_unreached if tot_unreached else 1.0
    print(f"  {'total':36s} {tot_new:5d} / {tot_unreached:5d}  ({share:.0%} of the lines smoke never "
          f"reaches were executed by a rehearsal)")
    if bad:
        print(f"full_only: the rehearsal of {', '.join(bad)} executed fewer than {a.min_lines} full-only "
              "line(s): it did not take the full profile's code paths")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
